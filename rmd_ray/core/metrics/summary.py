"""Every evaluation number of a set of predictions at once (what training, ``rmd-ray evaluate`` and the
report tabulate)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from rmd_ray.core.metrics.calibration import calibration_error_from_confidence
from rmd_ray.core.metrics.checks import SingleClassWarning, check_logits, check_metric_labels
from rmd_ray.core.metrics.detection import detection
from rmd_ray.core.metrics.scoring_rules import entropy, log_softmax, softmax_rows, top_label
from rmd_ray.core.metrics.selective import aurc

# ---------------------------------------------------------------------------------------------
# everything at once
# ---------------------------------------------------------------------------------------------


#: per-row columns of :func:`row_summaries`: all that every metric here needs, K-independent
SUMMARY_COLUMNS = ("confidence", "prediction", "correct", "nll", "brier", "entropy", "max_logit")


def row_summaries(logits: Any, labels: Any) -> dict[str, np.ndarray]:
    """Reduce each prediction to what the metrics need: a handful of numbers instead of K logits.

    Parameters
    ----------
    logits : array-like of shape (N, K)
    labels : array-like of shape (N,), integer

    Returns
    -------
    dict of ndarray, shape (N,) each
        ``confidence`` (max softmax probability), ``prediction`` (argmax, int64), ``correct`` (bool),
        ``nll`` (``-log p_y`` from log-softmax), ``brier`` (``sum_k (p_k - [k == y])^2``), ``entropy``
        (nats), ``max_logit``; float64. :func:`metrics_from_summaries` of the rows of any number of
        batches equals :func:`evaluate_predictions` of their logits stacked, so predictions can be
        evaluated part by part (ImageNet's 50,000 x 1,000 logits never need to be in memory at once).
    """
    z = check_logits(logits, "logits")
    y = check_metric_labels(labels, z.shape[0], z.shape[1])
    p = softmax_rows(z)
    rows = np.arange(z.shape[0])
    conf, correct = top_label(p, y)
    sq = np.sum(p * p, axis=1) - 2.0 * p[rows, y] + 1.0  # sum_k (p_k - [k == y])^2 without a one-hot matrix
    return {
        "confidence": conf, "prediction": p.argmax(axis=1).astype(np.int64), "correct": correct,
        "nll": -log_softmax(z)[rows, y], "brier": sq, "entropy": entropy(p), "max_logit": z.max(axis=1),
    }


def metrics_from_summaries(summaries: dict[str, Any]) -> dict[str, float]:
    """:func:`evaluate_predictions`'s numbers from the rows of :func:`row_summaries` (any batching).

    Raises
    ------
    ValueError
        A column of :data:`SUMMARY_COLUMNS` is missing, columns differ in length, or there are no rows.
    """
    missing = [c for c in SUMMARY_COLUMNS if c not in summaries]
    if missing:
        raise ValueError(f"summaries lack column(s) {missing}; compute them with row_summaries")
    cols = {c: np.asarray(summaries[c]) for c in SUMMARY_COLUMNS}
    n = cols["confidence"].shape[0]
    if n == 0 or any(v.shape != (n,) for v in cols.values()):
        raise ValueError(f"summaries must be 1-D columns of one length >= 1, got {[v.shape for v in cols.values()]}")
    conf = cols["confidence"].astype(np.float64)
    correct = cols["correct"].astype(bool)
    out: dict[str, float] = {
        "n_samples": int(n),
        "acc": float(correct.mean()),
        "ece_mass": calibration_error_from_confidence(conf, correct, n_bins=15, binning="mass"),
        "ece_width": calibration_error_from_confidence(conf, correct, n_bins=15, binning="width"),
        "mce": calibration_error_from_confidence(conf, correct, n_bins=15, binning="width", norm="max"),
        "nll": float(np.mean(cols["nll"])),
        "brier": float(np.mean(cols["brier"])),
        "aurc": aurc(conf, correct),
    }
    n_ok = int(correct.sum())
    if n_ok in (0, n):
        warnings.warn(
            f"all {n} predictions are {'correct' if n_ok else 'wrong'}; "
            "misclassification-detection metrics are undefined and left out",
            SingleClassWarning,
            stacklevel=3,
        )
        return out
    for name, score in (("msp", conf), ("entropy", -cols["entropy"])):
        for key, value in detection(score, correct).items():
            out[f"{name}_{key}"] = value
    return out


def evaluate_predictions(logits: Any, labels: Any) -> dict[str, float]:
    """All the evaluation numbers for a set of predictions, as a flat dict of floats.

    Parameters
    ----------
    logits : array-like of shape (N, K)
        Raw model outputs (softmax is applied here).
    labels : array-like of shape (N,), integer

    Returns
    -------
    dict
        ``n_samples``; ``acc``; ``ece_mass`` and ``ece_width`` (L1, 15 bins each, always both);
        ``mce`` (15 equal-width bins); ``nll`` (from log-softmax, so no clipping is needed); ``brier``;
        ``aurc`` (MSP as confidence); and for ``s`` in (msp, entropy): ``{s}_fpr_at_95_tpr``,
        ``{s}_auroc``, ``{s}_aupr``, ``{s}_aupr_error`` (:func:`misclassification_detection`).
        All fractions, not percentages. Computed as :func:`metrics_from_summaries` of
        :func:`row_summaries`, the path that streams.

    Warns
    -----
    SingleClassWarning
        When every prediction is correct (or every one wrong): the misclassification-detection keys
        are left out instead of being NaN.
    """
    return metrics_from_summaries(row_summaries(logits, labels))

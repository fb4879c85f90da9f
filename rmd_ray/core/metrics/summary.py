"""Every evaluation number of a set of predictions at once (what training, ``rmd-ray evaluate`` and the
report tabulate)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from rmd_ray.core.metrics.calibration import expected_calibration_error, maximum_calibration_error
from rmd_ray.core.metrics.checks import SingleClassWarning, check_logits, check_metric_labels
from rmd_ray.core.metrics.detection import PROB_SCORES, detection
from rmd_ray.core.metrics.scoring_rules import brier_score, log_softmax, softmax_rows, top_label
from rmd_ray.core.metrics.selective import aurc

# ---------------------------------------------------------------------------------------------
# everything at once
# ---------------------------------------------------------------------------------------------


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
        All fractions, not percentages.

    Warns
    -----
    SingleClassWarning
        When every prediction is correct (or every one wrong): the misclassification-detection keys
        are left out instead of being NaN.
    """
    z = check_logits(logits, "logits")
    y = check_metric_labels(labels, z.shape[0], z.shape[1])
    p = softmax_rows(z)
    conf, correct = top_label(p, y)
    log_p = log_softmax(z)
    out: dict[str, float] = {
        "n_samples": int(z.shape[0]),
        "acc": float(correct.mean()),
        "ece_mass": expected_calibration_error(p, y, n_bins=15, binning="mass"),
        "ece_width": expected_calibration_error(p, y, n_bins=15, binning="width"),
        "mce": maximum_calibration_error(p, y, n_bins=15, binning="width"),
        "nll": float(-np.mean(log_p[np.arange(z.shape[0]), y])),
        "brier": brier_score(p, y),
        "aurc": aurc(conf, correct),
    }
    n_ok = int(correct.sum())
    if n_ok in (0, correct.shape[0]):
        warnings.warn(
            f"all {correct.shape[0]} predictions are {'correct' if n_ok else 'wrong'}; "
            "misclassification-detection metrics are undefined and left out",
            SingleClassWarning,
            stacklevel=2,
        )
        return out
    for name in ("msp", "entropy"):
        for key, value in detection(PROB_SCORES.get(name)(p), correct).items():
            out[f"{name}_{key}"] = value
    return out

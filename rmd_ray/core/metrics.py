"""Evaluation metrics: accuracy, calibration (ECE / MCE / reliability diagrams), NLL, Brier score,
selective classification (risk-coverage, AURC, accuracy-rejection), misclassification detection and
out-of-distribution detection.

Every public function takes arrays positionally and options keyword-only, validates its inputs once
(``ValueError`` / ``TypeError`` whose message says what to change) and returns plain Python floats,
NumPy arrays or dicts of floats. Lists are accepted wherever an array is. Everything is computed in
float64. Ranking metrics use scikit-learn (``roc_auc_score``, ``average_precision_score``,
``roc_curve``); binning is done here because no well-kept library pins the edge rules we need
(see :func:`expected_calibration_error`).

Conventions used throughout
---------------------------
- ``probs``: (N, K) rows on the probability simplex (each row sums to 1 within 1e-4).
- Top-label confidence ``conf_i = max_k probs[i, k]``; prediction ``argmax_k probs[i, k]`` (ties go to
  the first index, NumPy's rule); ``correct_i = (prediction_i == labels_i)``.
- Values are fractions in [0, 1] (not percentages).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from rmd_ray.core.registry import Registry
from rmd_ray.core.validation import check_labels

__all__ = [
    "ReliabilityDiagram",
    "SingleClassWarning",
    "accuracy",
    "accuracy_rejection_curve",
    "aurc",
    "brier_score",
    "check_probabilities",
    "evaluate_predictions",
    "expected_calibration_error",
    "fpr_at_tpr",
    "maximum_calibration_error",
    "misclassification_detection",
    "negative_log_likelihood",
    "OOD_SCORES",
    "ood_detection",
    "ood_report",
    "predictive_entropy",
    "reliability_diagram_data",
    "risk_coverage_curve",
    "softmax",
]

#: Rows of ``probs`` must sum to 1 within this absolute tolerance (float32 softmax outputs pass).
ROW_SUM_TOL = 1e-4
#: Probabilities are clipped to this before ``log`` in :func:`negative_log_likelihood`, so one
#: sample contributes at most ``-log(tiny) ~= 708.4`` nats.
_TINY = float(np.finfo(np.float64).tiny)
_LOGITS_HINT = "looks like logits: apply softmax (rmd_ray.core.metrics.softmax) first"


class SingleClassWarning(UserWarning):
    """Every prediction is correct (or every one wrong), so a detection metric is undefined."""


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------


def _as_real_array(x: Any, name: str, *, allow_int: bool) -> np.ndarray:
    arr = np.asarray(x)
    kinds = "fiu" if allow_int else "f"
    if arr.dtype.kind not in kinds:
        want = "a real-valued (int or float)" if allow_int else "a floating-point"
        raise TypeError(
            f"{name} must be {want} array, got dtype {arr.dtype}; cast it (e.g. {name}.astype(float))"
        )
    return arr.astype(np.float64, copy=False)


def _first_bad_row(mask_ok_rows: np.ndarray) -> int:
    return int(np.flatnonzero(~mask_ok_rows)[0])


def _check_finite_2d(arr: np.ndarray, name: str) -> None:
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (N, K), got shape {arr.shape}; reshape to (n_samples, n_classes)"
        )
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); pass at least one sample")
    if arr.shape[1] < 2:
        raise ValueError(f"{name} has {arr.shape[1]} column(s); pass one column per class (at least 2)")
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        raise ValueError(
            f"{name} row {_first_bad_row(finite)} holds NaN or inf ({int((~finite).sum())} bad rows in all); "
            "drop or repair those samples"
        )


def _check_labels(labels: Any, n_samples: int, n_classes: int) -> np.ndarray:
    lab = np.asarray(labels)
    check_labels(lab, n_samples=n_samples, n_classes=n_classes, rows_of="probs/logits")
    return lab.astype(np.int64, copy=False)


def check_probabilities(probs: Any, labels: Any = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate class probabilities (and optionally labels); return them as float64 / int64 arrays.

    Parameters
    ----------
    probs : array-like of shape (N, K), floating
        Each row a probability vector: finite, entries in [0, 1], summing to 1 within ``ROW_SUM_TOL``.
    labels : array-like of shape (N,), integer, optional
        Class indices in ``0..K-1``.

    Returns
    -------
    probs : ndarray of shape (N, K), float64
    labels : ndarray of shape (N,), int64, or None when not given

    Raises
    ------
    TypeError
        ``probs`` not floating, or ``labels`` not integer.
    ValueError
        Wrong shape, empty, fewer than 2 classes, NaN/inf (the message names the first bad row),
        entries outside [0, 1] or rows not summing to 1 (the message says it "looks like logits:
        apply softmax"), labels out of range or of the wrong length.
    """
    p = _as_real_array(probs, "probs", allow_int=False)
    _check_finite_2d(p, "probs")
    in_range = ((p >= 0.0) & (p <= 1.0)).all(axis=1)
    if not in_range.all():
        row = _first_bad_row(in_range)
        raise ValueError(f"probs row {row} has entries outside [0, 1] (min {p[row].min():.4g}, max "
                         f"{p[row].max():.4g}); it {_LOGITS_HINT}")
    sums = p.sum(axis=1)
    sums_ok = np.abs(sums - 1.0) <= ROW_SUM_TOL
    if not sums_ok.all():
        row = _first_bad_row(sums_ok)
        raise ValueError(f"probs row {row} sums to {sums[row]:.6g}, not 1 (tolerance {ROW_SUM_TOL}); "
                         f"it {_LOGITS_HINT}")
    lab = None if labels is None else _check_labels(labels, p.shape[0], p.shape[1])
    return p, lab


def _check_logits(logits: Any, name: str) -> np.ndarray:
    z = _as_real_array(logits, name, allow_int=True)
    _check_finite_2d(z, name)
    return z


def _check_n_bins(n_bins: Any) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    return int(n_bins)


def _check_selective(confidence: Any, correct: Any) -> tuple[np.ndarray, np.ndarray]:
    conf = _as_real_array(confidence, "confidence", allow_int=True)
    if conf.ndim != 1:
        raise ValueError(f"confidence must be 1-D (N,), got shape {conf.shape}")
    if conf.size == 0:
        raise ValueError("confidence is empty; pass at least one sample")
    if not np.isfinite(conf).all():
        bad = int(np.flatnonzero(~np.isfinite(conf))[0])
        raise ValueError(f"confidence[{bad}] is NaN or inf; drop or repair that sample")
    return conf, _check_binary(correct, "correct", conf.shape[0], "confidence")


def _check_binary(values: Any, name: str, n: int, other: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind not in "biu":
        raise TypeError(f"{name} must be a boolean (or 0/1 integer) array, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"{other} has {n} entries but {name} has {arr.shape[0]}; pass one per sample")
    if arr.dtype.kind != "b" and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0/1 (or True/False)")
    return arr.astype(bool)


# ---------------------------------------------------------------------------------------------
# elementary quantities
# ---------------------------------------------------------------------------------------------


def softmax(logits: Any, *, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax, ``exp(z - max z) / sum exp(z - max z)`` along ``axis``.

    Parameters
    ----------
    logits : array-like of real numbers, any shape with at least one dimension
    axis : int
        The class axis (default last).

    Returns
    -------
    ndarray of float64, same shape, rows summing to 1.

    Raises
    ------
    TypeError
        Non-real dtype.
    ValueError
        Zero-dimensional, empty along ``axis``, or NaN / inf present.
    """
    z = _as_real_array(logits, "logits", allow_int=True)
    if z.ndim == 0 or z.shape[axis] == 0:
        raise ValueError(f"logits must have a non-empty class axis, got shape {z.shape}")
    if not np.isfinite(z).all():
        raise ValueError("logits hold NaN or inf; drop or repair those samples")
    return _softmax(z, axis)


def _softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    # Subtracting the row max keeps exp() in (0, 1]: no overflow for any finite logit.
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _entropy(p: np.ndarray) -> np.ndarray:
    # 0 log 0 = 0 (the limit); np.where alone would still evaluate log(0) and warn.
    plogp = np.zeros_like(p)
    pos = p > 0
    plogp[pos] = p[pos] * np.log(p[pos])
    return -plogp.sum(axis=1)


def _top_label(p: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return p.max(axis=1), p.argmax(axis=1) == labels


def predictive_entropy(probs: Any) -> np.ndarray:
    """Shannon entropy of each row in nats, ``H_i = -sum_k p_ik log p_ik`` with ``0 log 0 = 0``.

    Parameters
    ----------
    probs : array-like of shape (N, K)

    Returns
    -------
    ndarray of shape (N,), values in [0, log K].
    """
    p, _ = check_probabilities(probs)
    return _entropy(p)


def accuracy(probs: Any, labels: Any) -> float:
    """Top-1 accuracy, ``mean_i [argmax_k p_ik == y_i]`` (argmax ties: first index)."""
    p, y = check_probabilities(probs, labels)
    return float(np.mean(p.argmax(axis=1) == y))


def negative_log_likelihood(probs: Any, labels: Any) -> float:
    """Mean negative log-likelihood of the true class, ``-mean_i log max(p_{i, y_i}, tiny)``.

    ``tiny = np.finfo(float64).tiny`` (~2.2e-308), so one sample contributes at most ~708.4 nats
    instead of ``inf`` when its true-class probability underflowed to 0. From logits,
    :func:`evaluate_predictions` uses log-softmax instead and needs no clipping.
    """
    p, y = check_probabilities(probs, labels)
    p_true = p[np.arange(p.shape[0]), y]
    return float(-np.mean(np.log(np.clip(p_true, _TINY, 1.0))))


def brier_score(probs: Any, labels: Any) -> float:
    """Multi-class Brier score, ``mean_i sum_k (p_ik - [k == y_i])^2``, in [0, 2] (0 is perfect)."""
    p, y = check_probabilities(probs, labels)
    onehot = np.zeros_like(p)
    onehot[np.arange(p.shape[0]), y] = 1.0
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


# ---------------------------------------------------------------------------------------------
# calibration
# ---------------------------------------------------------------------------------------------

_BINNINGS: Registry[Callable[[np.ndarray, int], np.ndarray]] = Registry("binning")
_NORMS: Registry[Callable[[np.ndarray, np.ndarray], float]] = Registry("calibration norm")


@_BINNINGS.register("width")
def _width_bin_ids(conf: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin b is ``(b/n, (b+1)/n]``; confidence 0 goes to bin 0 and 1 to bin n-1."""
    # Edges as b / n (one correctly rounded division each) rather than linspace's b * (1/n): a
    # decimal confidence such as 0.6 then equals the edge 3/5 exactly and lands in the lower bin,
    # as a hand computation would put it.
    edges = np.arange(n_bins + 1) / n_bins
    ids = np.searchsorted(edges, conf, side="left") - 1  # edges[i-1] < conf <= edges[i] -> bin i-1
    return np.clip(ids, 0, n_bins - 1)


@_BINNINGS.register("mass")
def _mass_bin_ids(conf: np.ndarray, n_bins: int) -> np.ndarray:
    """``np.array_split`` of the ascending order into n groups; a run of equal values is never split."""
    n = conf.shape[0]
    order = np.argsort(conf, kind="stable")
    sorted_conf = conf[order]
    sizes = [part.shape[0] for part in np.array_split(np.arange(n), n_bins)]
    bin_of_rank = np.repeat(np.arange(n_bins), sizes)
    # Each sample takes the bin of the first (lowest-rank) member of its run of equal confidences.
    # Without this, tied samples would be split by input order, so ECE would change when samples are
    # permuted and identical confidences would not form one bin.
    first_rank = np.searchsorted(sorted_conf, sorted_conf, side="left")
    ids = np.empty(n, dtype=np.int64)
    ids[order] = bin_of_rank[first_rank]
    return ids


@_NORMS.register("l1")
def _norm_l1(gaps: np.ndarray, weights: np.ndarray) -> float:
    return float(np.sum(weights * gaps))


@_NORMS.register("l2")
def _norm_l2(gaps: np.ndarray, weights: np.ndarray) -> float:
    return float(np.sqrt(np.sum(weights * gaps**2)))


@_NORMS.register("max")
def _norm_max(gaps: np.ndarray, weights: np.ndarray) -> float:
    return float(np.max(gaps))


def _bin_stats(conf: np.ndarray, correct: np.ndarray, n_bins: int, binning: str):
    ids = _BINNINGS.get(binning)(conf, n_bins)
    count = np.bincount(ids, minlength=n_bins)
    sum_conf = np.bincount(ids, weights=conf, minlength=n_bins)
    sum_acc = np.bincount(ids, weights=correct.astype(np.float64), minlength=n_bins)
    keep = count > 0  # empty bins are skipped: they contribute nothing
    bins = np.flatnonzero(keep)
    cnt = count[keep]
    return bins, ids, cnt, sum_conf[keep] / cnt, sum_acc[keep] / cnt


def expected_calibration_error(
    probs: Any, labels: Any, *, n_bins: int = 15, binning: str = "width", norm: str = "l1"
) -> float:
    r"""Binned top-label calibration error (ECE, RMS-CE or MCE).

    With bins :math:`B_b`, :math:`a_b` the fraction of correct predictions and :math:`c_b` the mean
    top-label confidence in bin b, over the non-empty bins:

    - ``norm="l1"`` (ECE, Guo et al. 2017): :math:`\sum_b \frac{|B_b|}{N} |a_b - c_b|`
    - ``norm="l2"`` (RMS calibration error): :math:`\sqrt{\sum_b \frac{|B_b|}{N} (a_b - c_b)^2}`
    - ``norm="max"`` (MCE): :math:`\max_b |a_b - c_b|`

    Parameters
    ----------
    probs : array-like of shape (N, K)
        Class probabilities (rows on the simplex; see :func:`check_probabilities`).
    labels : array-like of shape (N,), integer
    n_bins : int, default 15
    binning : {"width", "mass"}, default "width"
        ``"width"``: equal-width bins over [0, 1], the common ECE. ``"mass"``: equal-mass (adaptive)
        bins, the variant the RMD paper (Cui et al. 2023) reports; report both.
    norm : {"l1", "l2", "max"}, default "l1"

    Returns
    -------
    float in [0, 1]

    Notes
    -----
    Edge rules (pinned, each one tested):

    - Top-label confidence is ``max_k p_ik`` and the prediction ``argmax_k p_ik``; argmax ties go to
      the first index (NumPy's rule).
    - Equal-width bins are ``(b/n, (b+1)/n]`` intervals: a confidence exactly on an edge goes to the
      lower bin, a confidence of 0 falls in the first bin and 1 in the last. Edges are computed as
      ``b / n`` so decimal confidences on an edge (0.6 with 5 bins) behave as by hand.
    - Equal-mass bins: sort the confidences ascending (stable sort) and cut the sorted order into
      ``n_bins`` contiguous groups of nearly equal size, exactly as ``np.array_split`` does (the first
      ``N % n_bins`` groups get one extra sample). A run of equal confidences is never split: all its
      samples go to the group of the run's first (lowest) position. So ties across a group boundary
      join the lower group, the result does not depend on sample order, and all-identical confidences
      form one effective bin (true for both binnings).
    - Empty bins are skipped (contribute 0, and are ignored by ``max``); with ``n_bins > N`` equal-mass
      binning has empty groups and so at most N effective bins.
    """
    p, y = check_probabilities(probs, labels)
    n_bins = _check_n_bins(n_bins)
    _BINNINGS.get(binning)
    norm_fn = _NORMS.get(norm)
    conf, correct = _top_label(p, y)
    _, _, cnt, mean_conf, mean_acc = _bin_stats(conf, correct, n_bins, binning)
    return norm_fn(np.abs(mean_acc - mean_conf), cnt / conf.shape[0])


def maximum_calibration_error(probs: Any, labels: Any, *, n_bins: int = 15, binning: str = "width") -> float:
    """Maximum calibration error: :func:`expected_calibration_error` with ``norm="max"``."""
    return expected_calibration_error(probs, labels, n_bins=n_bins, binning=binning, norm="max")


@dataclass(frozen=True, eq=False)
class ReliabilityDiagram:
    """Per-bin statistics for a reliability diagram; only non-empty bins are listed.

    Attributes
    ----------
    bin_index : ndarray of int, shape (B,)
        Index of each listed bin among the ``n_bins`` requested.
    lower, upper : ndarray of float, shape (B,)
        Bin extent. Equal-width: the interval ``(lower, upper]`` of the bin. Equal-mass: the smallest
        and largest confidence in the bin (closed interval), since the bins are data-defined.
    confidence : ndarray of float, shape (B,)
        Mean top-label confidence in the bin.
    accuracy : ndarray of float, shape (B,)
        Fraction of correct predictions in the bin.
    count : ndarray of int, shape (B,)
        Samples in the bin (all > 0).
    n_samples : int
        N; ``ECE = sum(count / n_samples * |accuracy - confidence|)``.
    """

    bin_index: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray
    n_samples: int


def reliability_diagram_data(
    probs: Any, labels: Any, *, n_bins: int = 15, binning: str = "width"
) -> ReliabilityDiagram:
    """Per-bin mean confidence, accuracy, count and extent, with the binning rules of
    :func:`expected_calibration_error` (so its ECE can be recomputed from the result).

    Empty bins are left out rather than filled with NaN; plot ``accuracy`` against ``confidence``
    (or bars over ``[lower, upper]``).
    """
    p, y = check_probabilities(probs, labels)
    n_bins = _check_n_bins(n_bins)
    _BINNINGS.get(binning)
    conf, correct = _top_label(p, y)
    bins, ids, cnt, mean_conf, mean_acc = _bin_stats(conf, correct, n_bins, binning)
    if binning == "width":
        lower, upper = bins / n_bins, (bins + 1) / n_bins
    else:
        lower = np.array([conf[ids == b].min() for b in bins])
        upper = np.array([conf[ids == b].max() for b in bins])
    return ReliabilityDiagram(bins, lower, upper, mean_conf, mean_acc, cnt, int(conf.shape[0]))


# ---------------------------------------------------------------------------------------------
# selective classification
# ---------------------------------------------------------------------------------------------


def risk_coverage_curve(confidence: Any, correct: Any) -> tuple[np.ndarray, np.ndarray]:
    """Selective risk against coverage when keeping the samples with confidence >= a threshold.

    One point per distinct confidence value ``t`` (from high to low): coverage = fraction of samples
    with ``confidence >= t``, risk = error rate among them. Tied samples are kept or rejected
    together, so the curve does not depend on sample order.

    Parameters
    ----------
    confidence : array-like of shape (N,)
        Higher = more likely correct (e.g. max softmax probability).
    correct : array-like of shape (N,), bool or 0/1

    Returns
    -------
    coverage : ndarray, increasing, last entry 1
    risk : ndarray, same length; ``risk[-1]`` is the overall error rate
    """
    conf, ok = _check_selective(confidence, correct)
    return _risk_coverage(conf, ok)


def _risk_coverage(conf: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-conf, kind="stable")
    c_sorted = conf[order]
    cum_err = np.cumsum(~ok[order])
    kept = np.arange(1, conf.shape[0] + 1)
    run_end = np.r_[c_sorted[1:] != c_sorted[:-1], True]
    return kept[run_end] / conf.shape[0], cum_err[run_end] / kept[run_end]


def aurc(confidence: Any, correct: Any) -> float:
    r"""Area under the risk-coverage curve (Geifman et al., ICLR 2019); lower is better.

    The area under the step function of :func:`risk_coverage_curve`:
    :math:`\mathrm{AURC} = \sum_j (c_j - c_{j-1})\, r_j` with :math:`c_0 = 0`. Without ties this is
    :math:`\frac{1}{N}\sum_{k=1}^{N} \mathrm{risk@}k`, the risk of the k most confident samples
    averaged over k; with ties, a tied group shares the risk at its common threshold.
    """
    conf, ok = _check_selective(confidence, correct)
    coverage, risk = _risk_coverage(conf, ok)
    return float(np.sum(np.diff(coverage, prepend=0.0) * risk))


def accuracy_rejection_curve(
    confidence: Any, correct: Any, *, rejection_rates: Sequence[float]
) -> np.ndarray:
    """Accuracy on the samples kept after rejecting the least confident fraction.

    For rate ``r`` the ``round(r * N)`` least confident samples are rejected (``np.rint``: halves to
    even) and the accuracy of the other ``k`` is returned. When the cut falls inside a run of equal
    confidences, the run contributes its mean accuracy for the places it fills, i.e. the expected
    accuracy under random tie-breaking, so the result does not depend on sample order.

    Parameters
    ----------
    confidence : array-like of shape (N,)
    correct : array-like of shape (N,), bool or 0/1
    rejection_rates : sequence of float in [0, 1)
        Rates must leave at least one sample (``round(r * N) < N``).

    Returns
    -------
    ndarray of shape (len(rejection_rates),)
    """
    conf, ok = _check_selective(confidence, correct)
    rates = _as_real_array(rejection_rates, "rejection_rates", allow_int=True)
    if rates.ndim != 1 or rates.size == 0:
        raise ValueError(f"rejection_rates must be a non-empty 1-D sequence, got shape {rates.shape}")
    if not (np.isfinite(rates).all() and (rates >= 0).all() and (rates < 1).all()):
        raise ValueError(f"rejection_rates must lie in [0, 1), got {rates.tolist()}")
    n = conf.shape[0]
    n_keep = n - np.rint(rates * n).astype(np.int64)
    if (n_keep < 1).any():
        bad = float(rates[np.argmin(n_keep)])
        raise ValueError(f"rejection rate {bad} rejects all {n} samples; use a smaller rate or more samples")
    order = np.argsort(-conf, kind="stable")
    c_sorted, ok_sorted = conf[order], ok[order].astype(np.float64)
    cum_ok = np.concatenate([[0.0], np.cumsum(ok_sorted)])
    out = np.empty(rates.shape[0])
    for i, k in enumerate(n_keep):
        t = c_sorted[k - 1]
        # c_sorted is descending: run of value t spans ranks [start, stop)
        start = int(np.searchsorted(-c_sorted, -t, side="left"))
        stop = int(np.searchsorted(-c_sorted, -t, side="right"))
        run_acc = (cum_ok[stop] - cum_ok[start]) / (stop - start)
        out[i] = (cum_ok[start] + (k - start) * run_acc) / k
    return out


# ---------------------------------------------------------------------------------------------
# detection: misclassification and OOD
# ---------------------------------------------------------------------------------------------

_PROB_SCORES: Registry[Callable[[np.ndarray], np.ndarray]] = Registry("confidence score")
_PROB_SCORES.add("msp", lambda p: p.max(axis=1))
_PROB_SCORES.add("entropy", lambda p: -_entropy(p))

_LOGIT_SCORES: Registry[Callable[[np.ndarray], np.ndarray]] = Registry("OOD score")
_LOGIT_SCORES.add("maxlogit", lambda z: z.max(axis=1))
_LOGIT_SCORES.add("msp", lambda z: _softmax(z).max(axis=1))
_LOGIT_SCORES.add("entropy", lambda z: -_entropy(_softmax(z)))


def _check_scores(scores: Any, positives: Any) -> tuple[np.ndarray, np.ndarray]:
    s = _as_real_array(scores, "scores", allow_int=True)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"scores must be a non-empty 1-D array, got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError(f"scores[{int(np.flatnonzero(~np.isfinite(s))[0])}] is NaN or inf")
    pos = _check_binary(positives, "positives", s.shape[0], "scores")
    n_pos = int(pos.sum())
    if n_pos == 0 or n_pos == pos.shape[0]:
        which = "positive" if n_pos == 0 else "negative"
        raise ValueError(
            f"positives holds no {which} sample, so FPR/TPR/AUROC are undefined; "
            "pass both positive and negative samples"
        )
    return s, pos


def _fpr_at_tpr(s: np.ndarray, pos: np.ndarray, tpr: float) -> float:
    # drop_intermediate=False keeps every threshold, so no point with TPR >= tpr is skipped.
    fpr, tprs, _ = roc_curve(pos, s, drop_intermediate=False)
    return float(fpr[tprs >= tpr].min())


def fpr_at_tpr(scores: Any, positives: Any, *, tpr: float = 0.95) -> float:
    """False-positive rate at the loosest threshold that reaches the target true-positive rate.

    A sample is declared positive when ``score >= threshold``. Over all thresholds (each distinct
    score, via ``sklearn.metrics.roc_curve``) this returns the smallest FPR among those with
    ``TPR >= tpr``. Example: scores ``[.9, .8, .7, .6, .4, .2, .1]`` with positives
    ``[1, 0, 1, 0, 0, 1, 0]``: TPR reaches 1 >= 0.95 only at threshold 0.2, where 3 of the 4
    negatives score higher, so FPR@95%TPR = 0.75.

    Raises
    ------
    ValueError
        If ``positives`` lacks either class (TPR or FPR undefined), or ``tpr`` is not in (0, 1].
    """
    s, pos = _check_scores(scores, positives)
    is_number = isinstance(tpr, (int, float, np.floating, np.integer)) and not isinstance(tpr, bool)
    if not is_number or not 0 < tpr <= 1:
        raise ValueError(f"tpr must be a number in (0, 1], got {tpr!r}")
    return _fpr_at_tpr(s, pos, float(tpr))


def _detection(s: np.ndarray, pos: np.ndarray) -> dict[str, float]:
    return {
        "fpr_at_95_tpr": _fpr_at_tpr(s, pos, 0.95),
        "auroc": float(roc_auc_score(pos, s)),
        "aupr": float(average_precision_score(pos, s)),
        # The same with the negatives as the class of interest (AUPR-Error / AUPR-Out).
        "aupr_error": float(average_precision_score(~pos, -s)),
    }


def misclassification_detection(probs: Any, labels: Any, *, score: str = "msp") -> dict[str, float]:
    """How well a confidence score separates correct from wrong predictions.

    Positives are the correctly classified samples; a higher score means "more likely correct":
    ``"msp"`` = max softmax probability, ``"entropy"`` = minus the predictive entropy.

    Returns
    -------
    dict with
        ``fpr_at_95_tpr`` (lower is better, see :func:`fpr_at_tpr`), ``auroc``
        (``sklearn.metrics.roc_auc_score``), ``aupr`` (``average_precision_score`` with the correct
        samples as positives, "AUPR-Success"), ``aupr_error`` (misclassified samples as positives,
        score negated).

    Raises
    ------
    ValueError
        If every prediction is correct, or every one wrong: the metrics are undefined and NaN is never
        returned. (:func:`evaluate_predictions` then warns and leaves these keys out.)
    """
    p, y = check_probabilities(probs, labels)
    score_fn = _PROB_SCORES.get(score)
    correct = p.argmax(axis=1) == y
    n_ok = int(correct.sum())
    if n_ok in (0, correct.shape[0]):
        state = "correct" if n_ok else "wrong"
        raise ValueError(
            f"every prediction is {state}, so misclassification detection is undefined; "
            "evaluate on a set with both correct and wrong predictions"
        )
    return _detection(score_fn(p), correct)


def ood_detection(in_logits: Any, out_logits: Any, *, score: str = "maxlogit") -> dict[str, float]:
    """Separate in-distribution (positive) from out-of-distribution samples by a score on the logits.

    Scores (higher = more in-distribution): ``"maxlogit"`` = max logit (Hendrycks et al. 2022),
    ``"msp"`` = max softmax probability, ``"entropy"`` = minus the predictive entropy.

    Parameters
    ----------
    in_logits : array-like of shape (N_in, K)
    out_logits : array-like of shape (N_out, K)

    Returns
    -------
    dict with ``fpr_at_95_tpr`` (FPR on OOD at 95% TPR on in-distribution), ``auroc``, ``aupr``
    (in-distribution as positives, "AUPR-In") and ``aupr_error`` (OOD as positives, "AUPR-Out").
    """
    z_in = _check_logits(in_logits, "in_logits")
    z_out = _check_logits(out_logits, "out_logits")
    if z_in.shape[1] != z_out.shape[1]:
        raise ValueError(
            f"in_logits have {z_in.shape[1]} classes but out_logits {z_out.shape[1]}; use one model"
        )
    score_fn = _LOGIT_SCORES.get(score)
    s = np.concatenate([score_fn(z_in), score_fn(z_out)])
    pos = np.r_[np.ones(z_in.shape[0], bool), np.zeros(z_out.shape[0], bool)]
    return _detection(s, pos)


#: The OOD scores reported by :func:`ood_report`, in its order (docs/design.md 1.9).
OOD_SCORES = ("maxlogit", "entropy", "msp")


def ood_report(in_logits: Any, out_logits: Any) -> dict[str, dict[str, float]]:
    """The near-OOD report: AUROC, AUPR and FPR@95%TPR for each of MaxLogit, entropy and MSP.

    In-distribution samples are the positives throughout (:func:`ood_detection`, called once per
    score; the inputs are validated there, so a bad array fails with its message).

    Parameters
    ----------
    in_logits : array-like of shape (N_in, K)
    out_logits : array-like of shape (N_out, K)

    Returns
    -------
    dict
        ``{score: {"auroc", "aupr", "aupr_error", "fpr_at_95_tpr"}}`` for score in :data:`OOD_SCORES`.
    """
    return {score: ood_detection(in_logits, out_logits, score=score) for score in OOD_SCORES}


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
    z = _check_logits(logits, "logits")
    y = _check_labels(labels, z.shape[0], z.shape[1])
    p = _softmax(z)
    conf, correct = _top_label(p, y)
    log_p = _log_softmax(z)
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
        for key, value in _detection(_PROB_SCORES.get(name)(p), correct).items():
            out[f"{name}_{key}"] = value
    return out

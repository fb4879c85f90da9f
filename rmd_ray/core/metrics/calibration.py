"""Calibration: expected / maximum calibration error and reliability diagrams, with pinned binning
edge rules (docs/design.md section 5)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from rmd_ray.core.metrics.checks import check_n_bins, check_probabilities
from rmd_ray.core.metrics.scoring_rules import top_label
from rmd_ray.core.registry import Registry

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
    n_bins = check_n_bins(n_bins)
    _BINNINGS.get(binning)
    norm_fn = _NORMS.get(norm)
    conf, correct = top_label(p, y)
    _, _, cnt, mean_conf, mean_acc = _bin_stats(conf, correct, n_bins, binning)
    return norm_fn(np.abs(mean_acc - mean_conf), cnt / conf.shape[0])


def calibration_error_from_confidence(
    confidence: Any, correct: Any, *, n_bins: int = 15, binning: str = "width", norm: str = "l1"
) -> float:
    """:func:`expected_calibration_error` from top-label confidences and correctness alone.

    For pipelines that reduce each prediction to ``(max_k p_k, argmax_k p_k == y)`` where the model
    runs (distributed corruption shift), so that K-wide probability rows never travel. Same bins,
    edge rules and result as :func:`expected_calibration_error` on the rows they came from.

    Parameters
    ----------
    confidence : array-like of shape (N,), in [0, 1]
    correct : array-like of shape (N,), bool
    """
    conf = np.asarray(confidence, dtype=np.float64)
    hit = np.asarray(correct)
    if conf.ndim != 1 or conf.shape != hit.shape or conf.size == 0:
        raise ValueError(f"confidence and correct must be 1-D of the same length >= 1, got {conf.shape} / {hit.shape}")
    if not np.all(np.isfinite(conf)) or conf.min() < 0 or conf.max() > 1:
        raise ValueError("confidence must be finite and in [0, 1]")
    if hit.dtype != bool:
        raise ValueError(f"correct must be a bool array, got dtype {hit.dtype}")
    n_bins = check_n_bins(n_bins)
    _BINNINGS.get(binning)
    norm_fn = _NORMS.get(norm)
    _, _, cnt, mean_conf, mean_acc = _bin_stats(conf, hit, n_bins, binning)
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
    conf, correct = top_label(p, y)
    return reliability_from_confidence(conf, correct, n_bins=n_bins, binning=binning)


def reliability_from_confidence(
    confidence: Any, correct: Any, *, n_bins: int = 15, binning: str = "width"
) -> ReliabilityDiagram:
    """:func:`reliability_diagram_data` from top-label confidences and correctness alone (per-row
    summaries of a streamed evaluation); the same bins and result."""
    conf = np.asarray(confidence, dtype=np.float64)
    hit = np.asarray(correct, dtype=bool)
    if conf.ndim != 1 or conf.shape != hit.shape or conf.size == 0:
        raise ValueError(f"confidence and correct must be 1-D of the same length >= 1, got {conf.shape} / {hit.shape}")
    n_bins = check_n_bins(n_bins)
    _BINNINGS.get(binning)
    bins, ids, cnt, mean_conf, mean_acc = _bin_stats(conf, hit, n_bins, binning)
    if binning == "width":
        lower, upper = bins / n_bins, (bins + 1) / n_bins
    else:  # per-bin extremes in one pass (sorted by bin), not one scan of N per bin
        order = np.lexsort((conf, ids))
        starts = np.searchsorted(ids[order], bins, side="left")
        ends = np.searchsorted(ids[order], bins, side="right") - 1
        lower, upper = conf[order][starts], conf[order][ends]
    return ReliabilityDiagram(bins, lower, upper, mean_conf, mean_acc, cnt, int(conf.shape[0]))

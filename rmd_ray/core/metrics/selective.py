"""Selective classification: risk-coverage curve, AURC and the accuracy-rejection curve."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rmd_ray.core.metrics.checks import as_real_array, check_selective

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
    conf, ok = check_selective(confidence, correct)
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
    conf, ok = check_selective(confidence, correct)
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
    conf, ok = check_selective(confidence, correct)
    rates = as_real_array(rejection_rates, "rejection_rates", allow_int=True)
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



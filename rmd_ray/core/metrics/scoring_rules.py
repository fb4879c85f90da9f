"""Elementary quantities and proper scoring rules: softmax, predictive entropy, accuracy, NLL, Brier score."""

from __future__ import annotations

from typing import Any

import numpy as np

from rmd_ray.core.metrics.checks import TINY, as_real_array, check_probabilities

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
    z = as_real_array(logits, "logits", allow_int=True)
    if z.ndim == 0 or z.shape[axis] == 0:
        raise ValueError(f"logits must have a non-empty class axis, got shape {z.shape}")
    if not np.isfinite(z).all():
        raise ValueError("logits hold NaN or inf; drop or repair those samples")
    return softmax_rows(z, axis)


def softmax_rows(z: np.ndarray, axis: int = -1) -> np.ndarray:
    # Subtracting the row max keeps exp() in (0, 1]: no overflow for any finite logit.
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(z: np.ndarray) -> np.ndarray:
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def entropy(p: np.ndarray) -> np.ndarray:
    # 0 log 0 = 0 (the limit); np.where alone would still evaluate log(0) and warn.
    plogp = np.zeros_like(p)
    pos = p > 0
    plogp[pos] = p[pos] * np.log(p[pos])
    return -plogp.sum(axis=1)


def top_label(p: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
    return entropy(p)


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
    return float(-np.mean(np.log(np.clip(p_true, TINY, 1.0))))


def brier_score(probs: Any, labels: Any) -> float:
    """Multi-class Brier score, ``mean_i sum_k (p_ik - [k == y_i])^2``, in [0, 2] (0 is perfect)."""
    p, y = check_probabilities(probs, labels)
    onehot = np.zeros_like(p)
    onehot[np.arange(p.shape[0]), y] = 1.0
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))



r"""Mergeable sufficient statistics for class-conditional Gaussians with one shared covariance.

Per shard we keep, in float64,

- ``counts``  (K,)   n_k, samples per class,
- ``means``   (K, d) m_k, per-class means (zero rows for empty classes),
- ``scatter`` (d, d) W = \sum_k \sum_{i \in k} (f_i - m_k)(f_i - m_k)^T, ONE pooled within-class scatter
  (K separate scatters would be 2 GB at K = 1000, d = 512).

Two shards a, b merge exactly by Chan et al.'s rule, per class
n_k = n_ak + n_bk, delta_k = m_bk - m_ak, m_k = m_ak + delta_k n_bk / n_k and
W = W_a + W_b + \sum_k (n_ak n_bk / n_k) delta_k delta_k^T (one weighted GEMM).

Everything the method needs follows from these alone (DESIGN.md section 2):
Sigma = W / N, mu_0 = \sum_k n_k m_k / N and Sigma_0 = (W + \sum_k n_k (m_k - mu_0)(m_k - mu_0)^T) / N.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from rmd_ray.core._xp import array_module, to_numpy
from rmd_ray.core.validation import check_features, check_labels, check_n_classes


@dataclass(frozen=True, eq=False)
class ClassStats:
    """Sufficient statistics of one shard (or of all data, once merged).

    Attributes
    ----------
    counts : ndarray of int64, shape (K,)
    means : ndarray of float64, shape (K, d)
    scatter : ndarray of float64, shape (d, d)
        Pooled within-class centred scatter W.
    """

    counts: Any
    means: Any
    scatter: Any

    @property
    def n_classes(self) -> int:
        return int(self.counts.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.means.shape[1])

    @property
    def n_samples(self) -> int:
        return int(self.counts.sum())

    def merge(self, other: ClassStats) -> ClassStats:
        """Exact merge with ``other`` (Chan et al.); see :func:`merge_stats`."""
        return merge_stats(self, other)

    def to_numpy(self) -> ClassStats:
        """A host (NumPy) copy, e.g. to ship CuPy statistics from a GPU actor."""
        return ClassStats(to_numpy(self.counts), to_numpy(self.means), to_numpy(self.scatter))


def empty_stats(n_classes: int, n_features: int, *, xp: Any = np) -> ClassStats:
    """Statistics of zero samples: the identity element of :func:`merge_stats`."""
    return ClassStats(
        xp.zeros(n_classes, dtype=xp.int64),
        xp.zeros((n_classes, n_features), dtype=xp.float64),
        xp.zeros((n_features, n_features), dtype=xp.float64),
    )


def batch_stats(features: Any, labels: Any, *, n_classes: int) -> ClassStats:
    r"""Sufficient statistics of one batch.

    Parameters
    ----------
    features : ndarray, shape (n, d), float32 or float64 (NumPy or CuPy)
    labels : ndarray, shape (n,), integer in 0..n_classes-1
    n_classes : int

    Returns
    -------
    ClassStats
        Counts, class means (float64) and the pooled within-class scatter (float64).

    Notes
    -----
    The batch is centred by approximate class means m~ in the input dtype, so the scatter is one
    large GEMM (SYRK) at the input precision; the offset delta = mean(f - m~) is then removed
    exactly in float64: sum (f - m)(f - m)^T = sum (f - m~)(f - m~)^T - n delta delta^T with
    m = m~ + delta. Never sum(f f^T) - n mu mu^T, which cancels catastrophically for features far
    from the origin. Per-class sums use a sparse one-hot product (SciPy, or cupyx on GPU).
    """
    n_classes = check_n_classes(n_classes)
    check_features(features)
    check_labels(labels, n_samples=features.shape[0], n_classes=n_classes)
    return _batch_stats(features, labels, n_classes)


def _one_hot(xp: Any, labels: Any, n_classes: int, dtype: Any) -> Any:
    """Sparse (K, n) class-indicator matrix: ``one_hot @ rows`` sums rows per class in O(n d)."""
    if xp is np:
        from scipy import sparse
    else:  # pragma: no cover - GPU only
        from cupyx.scipy import sparse
    n = labels.shape[0]
    return sparse.csr_matrix((xp.ones(n, dtype=dtype), (labels, xp.arange(n))), shape=(n_classes, n))


def _batch_stats(features: Any, labels: Any, n_classes: int) -> ClassStats:
    xp = array_module(features, labels)
    dtype = features.dtype
    one_hot = _one_hot(xp, labels, n_classes, dtype)
    counts = xp.bincount(labels, minlength=n_classes).astype(xp.int64)
    safe_counts = xp.maximum(counts, 1)[:, None]
    # Approximate means in the input dtype, residuals against them in one pass, then the exact offset
    # delta = mean(f - m~) from the (small) residual sums. With m = m~ + delta,
    # sum (f - m)(f - m)^T = sum r r^T - n delta delta^T exactly, r = f - m~: the scatter is one SYRK
    # at the input precision and no per-class Python loop is needed (K = 1000 stays cheap).
    approx = (one_hot @ features) / safe_counts.astype(dtype)
    approx = approx.astype(dtype, copy=False)
    residuals = features - approx[labels]
    delta = (one_hot @ residuals).astype(xp.float64) / safe_counts
    means = approx.astype(xp.float64) + delta
    # xp.dot, not the @ operator: for a transposed operand NumPy 2.4 matmul took 5-7x longer here
    scatter = xp.dot(residuals.T, residuals).astype(xp.float64)
    scatter -= (delta * counts[:, None]).T @ delta
    scatter = (scatter + scatter.T) * 0.5  # keep exact symmetry whatever the BLAS kernel filled
    means[counts == 0] = 0.0
    return ClassStats(counts, means, scatter)


def merge_stats(a: ClassStats, b: ClassStats) -> ClassStats:
    r"""Merge two shards' statistics exactly (Chan, Golub & LeVeque 1979).

    Per class: n = n_a + n_b, delta = m_b - m_a, m = m_a + delta n_b / n, and
    W = W_a + W_b + \sum_k (n_ak n_bk / n_k) delta_k delta_k^T.

    Raises
    ------
    ValueError
        If the two shards disagree on the number of classes or features.
    """
    if a.counts.shape != b.counts.shape or a.scatter.shape != b.scatter.shape:
        raise ValueError(
            f"cannot merge statistics of (K={a.n_classes}, d={a.n_features}) with (K={b.n_classes}, "
            f"d={b.n_features}); every shard must use the same n_classes and encoder"
        )
    xp = array_module(a.means, b.means)
    n_a = a.counts.astype(xp.float64)
    n_b = b.counts.astype(xp.float64)
    n = n_a + n_b
    safe_n = xp.where(n > 0, n, 1.0)
    delta = b.means - a.means
    means = a.means + delta * (n_b / safe_n)[:, None]
    weight = n_a * n_b / safe_n
    scatter = a.scatter + b.scatter + (delta * weight[:, None]).T @ delta
    return ClassStats(a.counts + b.counts, means, scatter)


def merge_all(parts: Iterable[ClassStats]) -> ClassStats:
    """Merge any number of shards; raises ValueError on an empty iterable."""
    merged = None
    for part in parts:
        merged = part if merged is None else merge_stats(merged, part)
    if merged is None:
        raise ValueError("no statistics to merge: every shard was empty")
    return merged


def stream_stats(batches: Iterable[tuple[Any, Any]], *, n_classes: int) -> ClassStats:
    """Accumulate statistics over an iterable of ``(features, labels)`` batches in one pass.

    Peak memory is that of one batch plus O(K d + d^2), independent of the number of batches.
    """
    return merge_all(batch_stats(f, y, n_classes=n_classes) for f, y in batches)


def class_agnostic_mean(stats: ClassStats) -> Any:
    """mu_0 = sum_k n_k m_k / N, shape (d,)."""
    xp = array_module(stats.means)
    return (stats.counts.astype(xp.float64) @ stats.means) / stats.n_samples


def within_class_covariance(stats: ClassStats) -> Any:
    """Shared covariance Sigma = W / N, shape (d, d) (maximum-likelihood scale, as the paper)."""
    return stats.scatter / stats.n_samples


def class_agnostic_covariance(stats: ClassStats) -> Any:
    r"""Sigma_0 = (W + \sum_k n_k (m_k - mu_0)(m_k - mu_0)^T) / N, shape (d, d)."""
    xp = array_module(stats.means)
    centred = stats.means - class_agnostic_mean(stats)
    between = (centred * stats.counts.astype(xp.float64)[:, None]).T @ centred
    return (stats.scatter + between) / stats.n_samples


def residual_fourth_moments(features: Any, labels: Any, *, means: Any, global_mean: Any) -> tuple[float, float]:
    r"""Sums of squared squared-norms of residuals, for the Ledoit-Wolf shrinkage intensity.

    Returns ``(sum_i ||f_i - mu_{y_i}||^4, sum_i ||f_i - mu_0||^4)`` in float64. Given the final means
    these sums are additive across shards (a second pass over the features), unlike the scatter they
    cannot be merged from shard-centred values.
    """
    xp = array_module(features, means)
    rows = features.astype(xp.float64)
    within = ((rows - means[labels]) ** 2).sum(axis=1)
    total = ((rows - global_mean) ** 2).sum(axis=1)
    return float((within**2).sum()), float((total**2).sum())

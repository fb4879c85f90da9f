r"""Mergeable sufficient statistics for class-conditional Gaussians with one shared covariance.

Per shard we keep, in float64,

- ``counts``  (K,)   n_k, samples per class,
- ``means``   (K, d) m_k, per-class means (zero rows for empty classes),
- ``scatter`` (d, d) W = \sum_k \sum_{i \in k} (f_i - m_k)(f_i - m_k)^T, ONE pooled within-class scatter
  (K separate scatters would be 2 GB at K = 1000, d = 512).

Two shards a, b merge exactly by Chan et al.'s rule, per class
n_k = n_ak + n_bk, delta_k = m_bk - m_ak, m_k = m_ak + delta_k n_bk / n_k and
W = W_a + W_b + \sum_k (n_ak n_bk / n_k) delta_k delta_k^T (one weighted GEMM).

The statistics do not depend on the input dtype: float32 features (what encoders emit) are cast per
block and centred, summed and multiplied in float64 (docs/design.md section 2), so they equal those of the
same values cast to float64 beforehand. The encoder dominates the pipeline's time, not this stage
(docs/benchmarks.md section 8), so exactness wins over a faster float32 path.

Everything the method needs follows from these alone (docs/design.md section 2):
Sigma = W / N, mu_0 = \sum_k n_k m_k / N and Sigma_0 = (W + \sum_k n_k (m_k - mu_0)(m_k - mu_0)^T) / N.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from rmd_ray.core.array_api import array_module, to_numpy
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
    r"""Sufficient statistics of one batch, in float64 whatever the input dtype.

    Parameters
    ----------
    features : ndarray, shape (n, d), float32 or float64 (NumPy or CuPy)
    labels : ndarray, shape (n,), integer in 0..n_classes-1
    n_classes : int

    Returns
    -------
    ClassStats
        Counts (K,), class means (K, d) and the pooled within-class scatter
        W = \sum_k \sum_{i \in k} (f_i - m_k)(f_i - m_k)^T (d, d), all float64. Float32 features give
        exactly the statistics of the same values cast to float64 first.

    Raises
    ------
    ValueError
        If float64 features are so large (above ~1e150) that their scatter overflows float64;
        float32 features never do (their squares stay below 1.2e77).

    Notes
    -----
    Each class k is shifted by an anchor a_k, one of its own rows, and everything after the cast is
    float64: r_i = f_i - a_{y_i}, S = \sum_i r_i r_i^T (a symmetric rank-k update), s_k = \sum_{i \in k} r_i,
    then o_k = s_k / n_k, m_k = a_k + o_k and W = S - \sum_k n_k o_k o_k^T. For float32 input r_i is exact
    (a difference of two float32 values), and since a_k is a sample of class k, ||o_k||^2 is about one
    within-class variance: the subtraction loses about one bit, never the digits that
    sum(f f^T) - n mu mu^T loses far from the origin. On CPU the rows go through in blocks of a few
    MiB, so the float64 copy never exists for the whole batch.
    """
    n_classes = check_n_classes(n_classes)
    check_features(features)
    check_labels(labels, n_samples=features.shape[0], n_classes=n_classes)
    return batch_stats_unchecked(features, labels, n_classes)


# Rows per block on CPU: 2**19 / d rows is 4 MiB of float64, small enough to stay in cache between the
# centring, the segment sums and the rank-k update of the same block (docs/benchmarks.md, Notes moved from code).
_BLOCK_VALUES = 1 << 19
_MIN_BLOCK_ROWS = 256


def _block_rows(xp: Any, n: int, d: int) -> int:
    if xp is not np:  # pragma: no cover - GPU only
        return max(n, 1)  # one kernel per step over the whole batch: launches, not caches, cost there
    return max(_MIN_BLOCK_ROWS, _BLOCK_VALUES // d)


def _add_gram(xp: Any, gram: Any, rows: Any, *, alpha: float = 1.0) -> Any:
    """gram += alpha rows^T rows for an F-ordered float64 (d, d) gram and C-ordered (m, d) rows.

    On NumPy only the lower triangle is updated (see :func:`_symmetric`).
    """
    if xp is np:
        from scipy.linalg.blas import dsyrk

        # rows.T is F-contiguous, so BLAS reads the block in place; dsyrk does half the flops of a GEMM
        return dsyrk(alpha, rows.T, beta=1.0, c=gram, trans=0, lower=1, overwrite_c=1)
    gram += alpha * (rows.T @ rows)  # pragma: no cover - GPU only
    return gram  # pragma: no cover - GPU only


def _symmetric(xp: Any, gram: Any) -> Any:
    """The full symmetric matrix from the lower triangle (exactly symmetric, whatever BLAS filled above)."""
    full = xp.tril(gram)
    # two passes over d^2, not four: memory-bound, so it shows next to the rank-k update when N is a
    # small multiple of d (docs/benchmarks.md, Notes moved from code)
    full += xp.triu(full.T, 1)
    return xp.ascontiguousarray(full)


def _add_run_sums(sparse: Any, xp: Any, sums: Any, rows: Any, run_labels: Any, bounds: Any) -> None:
    """sums[run_labels[j]] += rows[bounds[j]:bounds[j + 1]].sum(axis=0) for each run j of equal labels.

    A (runs, m) indicator in CSR form, built directly: a (K, m) one-hot would write a K x d result per
    block, more than the m x d rows it sums once K approaches m (ImageNet: K = 1000).
    """
    m = rows.shape[0]
    runs = sparse.csr_matrix((xp.ones(m), xp.arange(m), bounds), shape=(bounds.shape[0] - 1, m))
    sums[run_labels] += runs @ rows  # distinct labels: the rows are sorted, so one run per class


def batch_stats_unchecked(features: Any, labels: Any, n_classes: int) -> ClassStats:
    xp = array_module(features, labels)
    if xp is np:
        from scipy import sparse
    else:  # pragma: no cover - GPU only
        from cupyx.scipy import sparse
    n, d = features.shape
    counts = xp.bincount(labels, minlength=n_classes).astype(xp.int64)
    # Sorting by label (stable, so the result is deterministic) makes each block a few class runs,
    # which a tiny run indicator sums; the anchors are each class's first row.
    order = xp.argsort(labels, kind="stable") if xp is np else xp.argsort(labels)
    sorted_labels = labels[order]
    first = xp.cumsum(counts) - counts
    present = counts > 0
    anchors = xp.zeros((n_classes, d), dtype=xp.float64)
    anchors[present] = features[order[first[present]]]
    block = _block_rows(xp, n, d)
    # run starts in sorted order, cut at block boundaries too, so that each run lies in one block
    run_start = xp.zeros(n + 1, dtype=bool)
    run_start[first[present]] = True
    run_start[0:n:block] = True
    run_start[n] = True
    cuts = to_numpy(xp.flatnonzero(run_start))
    cuts_xp = xp.asarray(cuts)
    run_labels = sorted_labels[cuts_xp[:-1]]
    sums = xp.zeros((n_classes, d), dtype=xp.float64)
    gram = xp.zeros((d, d), dtype=xp.float64, order="F")
    buffer = xp.empty((min(block, n), d), dtype=xp.float64)
    run = 0
    for start in range(0, n, block):
        stop = min(start + block, n)
        rows = buffer[: stop - start]
        # the float64 cast happens here, fused with the centring: nothing is summed in the input dtype
        xp.subtract(features[order[start:stop]], anchors[sorted_labels[start:stop]], out=rows)
        gram = _add_gram(xp, gram, rows)
        end = run + int(np.searchsorted(cuts[run:], stop))  # runs of this block: cuts[run] .. cuts[end]
        _add_run_sums(sparse, xp, sums, rows, run_labels[run:end], cuts_xp[run : end + 1] - start)
        run = end
    offsets = sums / xp.maximum(counts, 1)[:, None].astype(xp.float64)
    means = anchors + offsets
    # W = S - sum_k n_k o_k o_k^T, as one more symmetric rank-k update with negative weight
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported just below
        gram = _add_gram(xp, gram, offsets * xp.sqrt(counts.astype(xp.float64))[:, None], alpha=-1.0)
        scatter = _symmetric(xp, gram)
    if not bool(xp.isfinite(scatter).all()):
        largest = float(xp.abs(features).max())
        raise ValueError(
            f"feature values up to {largest:.3g} overflow float64 in the scatter (squares above 1.8e308); "
            "divide the features by a common constant first: Mahalanobis distances and RMD do not change "
            "under a common rescaling"
        )
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
    # the between-shard term as a symmetric rank-K update (half a GEMM's flops; K = 1000 for ImageNet)
    gram = xp.asfortranarray(a.scatter + b.scatter)
    scatter = _symmetric(xp, _add_gram(xp, gram, delta * xp.sqrt(weight)[:, None]))
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


def between_class_covariance(stats: ClassStats) -> Any:
    r"""Sigma_B = \sum_k (n_k / N) (m_k - mu_0)(m_k - mu_0)^T, shape (d, d), rank <= K - 1."""
    xp = array_module(stats.means)
    centred = stats.means - class_agnostic_mean(stats)
    return (centred * stats.counts.astype(xp.float64)[:, None]).T @ centred / stats.n_samples


def class_agnostic_covariance(stats: ClassStats) -> Any:
    r"""Sigma_0 = (W + \sum_k n_k (m_k - mu_0)(m_k - mu_0)^T) / N = Sigma + Sigma_B, shape (d, d)."""
    return within_class_covariance(stats) + between_class_covariance(stats)


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


def stats_to_bytes(stats: ClassStats, **extra: int) -> bytes:
    """``stats`` (copied to host) as an uncompressed ``.npz``; ``extra`` integers ride along (e.g. rows)."""
    host = stats.to_numpy()
    buffer = io.BytesIO()
    np.savez(buffer, counts=host.counts, means=host.means, scatter=host.scatter,
             **{k: np.int64(v) for k, v in extra.items()})
    return buffer.getvalue()


def stats_from_bytes(data: bytes) -> tuple[ClassStats, dict[str, int]]:
    """Inverse of :func:`stats_to_bytes`: the statistics and the extra integers.

    Raises ValueError (naming what is wrong) on bytes that do not hold consistent statistics.
    """
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"not serialised ClassStats: {err}") from None
    try:
        counts, means, scatter = arrays.pop("counts"), arrays.pop("means"), arrays.pop("scatter")
    except KeyError as err:
        raise ValueError(f"serialised ClassStats lack {err}") from None
    k, d = means.shape if means.ndim == 2 else (-1, -1)
    if counts.shape != (k,) or scatter.shape != (d, d):
        raise ValueError(f"inconsistent ClassStats shapes: counts {counts.shape}, means {means.shape}, "
                         f"scatter {scatter.shape}")
    stats = ClassStats(counts.astype(np.int64), means.astype(np.float64), scatter.astype(np.float64))
    return stats, {key: int(value) for key, value in arrays.items()}

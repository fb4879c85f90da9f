r"""Difficulty scores computed row-wise from fitted Gaussians (never an N x N matrix).

With whitening matrices A (shared, class-conditional) and A_0 (class-agnostic), for a sample f with
its given label y:

- MD(f, y)   = ||A (f - mu_y)||^2    = (f - mu_y)^T Sigma^-1 (f - mu_y)  >= 0
- MD_0(f)    = ||A_0 (f - mu_0)||^2  = (f - mu_0)^T Sigma_0^-1 (f - mu_0)
- RMD(f, y)  = MD(f, y) - MD_0(f)    LARGER = HARDER (docs/design.md 1.3: the paper's text, not its
  sign-flipped formula).
- K-means distance (paper Table 8 baseline): ||f - mu_y||^2, the squared Euclidean distance to the
  sample's own class centroid, i.e. the per-sample term of the K-means objective when the clusters are
  the given classes. It ignores the covariance, which is the point of the comparison.

Rows are processed in chunks of ``chunk_size`` in float64 so memory is O(chunk_size * d).
"""

from __future__ import annotations

from typing import Any

from rmd_ray.core._xp import array_module

DEFAULT_CHUNK = 16384


def mahalanobis_sq(features: Any, centers: Any, whitening: Any, *, chunk_size: int = DEFAULT_CHUNK) -> Any:
    """Squared Mahalanobis distance row-wise.

    Parameters
    ----------
    features : ndarray, shape (N, d)
    centers : ndarray, shape (d,) or (N, d)
        One center for all rows, or one per row.
    whitening : ndarray, shape (d, d)
        A with A^T A = Sigma^-1 (see :func:`rmd_ray.core.covariance.whitening_matrix`).

    Returns
    -------
    ndarray of float64, shape (N,)
    """
    xp = array_module(features, whitening)
    n = features.shape[0]
    out = xp.empty(n, dtype=xp.float64)
    per_row = centers.ndim == 2
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        center = centers[start:stop] if per_row else centers
        z = (features[start:stop].astype(xp.float64) - center) @ whitening.T
        out[start:stop] = (z * z).sum(axis=1)
    return out


def label_conditional_md(
    features: Any, labels: Any, means: Any, whitening: Any, *, chunk_size: int = DEFAULT_CHUNK
) -> Any:
    """MD(f_i, y_i) = (f_i - mu_{y_i})^T Sigma^-1 (f_i - mu_{y_i}), shape (N,)."""
    xp = array_module(features, means)
    n = features.shape[0]
    out = xp.empty(n, dtype=xp.float64)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        out[start:stop] = mahalanobis_sq(features[start:stop], means[labels[start:stop]], whitening)
    return out


def relative_md(
    features: Any,
    labels: Any,
    *,
    means: Any,
    whitening: Any,
    global_mean: Any,
    global_whitening: Any,
    chunk_size: int = DEFAULT_CHUNK,
) -> tuple[Any, Any]:
    """Return ``(md, rmd)``, each shape (N,): MD(f, y) and RMD(f, y) = MD(f, y) - MD_0(f)."""
    md = label_conditional_md(features, labels, means, whitening, chunk_size=chunk_size)
    md0 = mahalanobis_sq(features, global_mean, global_whitening, chunk_size=chunk_size)
    return md, md - md0


def class_distances(features: Any, means: Any, whitening: Any, *, chunk_size: int = 4096) -> Any:
    """MD from every sample to every class mean, shape (N, K) (N x K, never N x N).

    Used to name the class a sample sits nearest (label-issue finder). Computed as
    ||A f - A mu_k||^2 by direct differences per chunk, memory O(chunk_size * K * d / K) per class loop.
    """
    xp = array_module(features, means)
    projected_means = means @ whitening.T  # (K, d)
    n, k = features.shape[0], means.shape[0]
    out = xp.empty((n, k), dtype=xp.float64)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        z = features[start:stop].astype(xp.float64) @ whitening.T  # (c, d)
        # ||z - p||^2 = ||z||^2 - 2 z.p + ||p||^2 on whitened vectors; features are shifted by the class-agnostic
        # centre before whitening by the caller when magnitudes are large (see DifficultyScorer.nearest_class).
        out[start:stop] = (z * z).sum(1)[:, None] - 2.0 * z @ projected_means.T + (projected_means**2).sum(1)[None]
    return xp.maximum(out, 0.0)


def kmeans_distance(features: Any, labels: Any, means: Any, *, chunk_size: int = DEFAULT_CHUNK) -> Any:
    """||f_i - mu_{y_i}||^2, shape (N,): the K-means baseline of paper Table 8 (see module docstring)."""
    xp = array_module(features, means)
    n = features.shape[0]
    out = xp.empty(n, dtype=xp.float64)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        diff = features[start:stop].astype(xp.float64) - means[labels[start:stop]]
        out[start:stop] = (diff * diff).sum(axis=1)
    return out

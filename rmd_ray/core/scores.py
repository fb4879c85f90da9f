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

The discriminant shortcut (docs/design.md 1.13). Without shrinkage, and with the ridge as this project
pins it (the same eps * trace(Sigma)/d * I on both covariances), the class-agnostic covariance is the
shared one plus the between-class covariance:

    Sigma_0 = Sigma + V V^T,   V = [(m_k - mu_0) sqrt(n_k / N)]_k  (d, K),  rank <= K - 1.

With x~ = f - mu_0, q = x~^T Sigma^-1 x~ and G_k = x~^T Sigma^-1 (m_k - mu_0), Woodbury gives

    MD(f, k)  = q - 2 G_k + (m_k - mu_0)^T Sigma^-1 (m_k - mu_0)
    MD_0(f)   = q - g^T C^-1 g,   g = sqrt(n / N) * G,   C = I_K + diag(sqrt(n/N)) M diag(sqrt(n/N)),
                M_kl = (m_k - mu_0)^T Sigma^-1 (m_l - mu_0)

so q cancels in RMD(f, y) = -2 G_y + M_yy + g^T C^-1 g and in the margin: both depend on f only
through its K coordinates G = x~^T Sigma^-1 (m - mu_0)^T, the linear-discriminant subspace.
They cost O(N d K) instead of the O(N d^2) of a whitening product, and MD(f, y) and MD_0(f) together
cost one whitening product instead of two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rmd_ray.core.array_api import array_module
from rmd_ray.core.covariance import solve_lower, solve_triangular_identity

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


def mahalanobis_margin(distances: Any, labels: Any) -> Any:
    """MD(x, y) - min over k != y of MD(x, k), row-wise.

    Parameters
    ----------
    distances : ndarray, shape (N, K), K >= 2
        MD(x_i, k) to every class mean (:func:`class_distances`).
    labels : ndarray of int, shape (N,)
        The given labels y_i in 0..K-1.

    Returns
    -------
    ndarray of float64, shape (N,)
        > 0 iff some other class is strictly nearer than the given one.
    """
    xp = array_module(distances)
    d = distances.astype(xp.float64)
    n, k = d.shape
    if k < 2:
        raise ValueError(f"the margin needs at least 2 classes, got distances of shape {d.shape}")
    labels = xp.asarray(labels)
    rows = xp.arange(n)
    own = d[rows, labels]
    # The smallest and second-smallest distance per row: the best alternative is the second one
    # exactly when the given class is the nearest. O(N K), no (N, K) copy with the own class masked.
    order = xp.argpartition(d, 1, axis=1)[:, :2]
    first, second = d[rows, order[:, 0]], d[rows, order[:, 1]]
    best_other = xp.where(order[:, 0] == labels, second, first)
    return own - best_other


@dataclass(frozen=True)
class DiscriminantFactor:
    """What the discriminant shortcut needs from a fit (module docstring), O(d K + K^2) numbers.

    Attributes
    ----------
    precision_means : ndarray, shape (d, K)
        Sigma^-1 (m_k - mu_0) as columns.
    mean_norms : ndarray, shape (K,)
        M_kk = (m_k - mu_0)^T Sigma^-1 (m_k - mu_0).
    gain_whitening : ndarray, shape (K, K)
        B with ||G B||^2 = g^T C^-1 g for a row G: diag(sqrt(n / N)) R^-T where C = R R^T.
    """

    precision_means: Any
    mean_norms: Any
    gain_whitening: Any


def discriminant_factor(centred_means: Any, counts: Any, lower: Any) -> DiscriminantFactor:
    """Precompute the shortcut from the class means about mu_0, the class counts and Sigma's Cholesky factor.

    Parameters
    ----------
    centred_means : ndarray, shape (K, d)
        m_k - mu_0 (an empty class's mean is mu_0: a zero row, and its count 0 drops it from V).
    counts : ndarray, shape (K,)
        n_k.
    lower : ndarray, shape (d, d)
        L with Sigma = L L^T (a Cholesky factor, not a pseudo-inverse: the identity needs Sigma > 0).
    """
    projected = solve_lower(lower, centred_means.T)  # (d, K): columns L^-1 (m_k - mu_0), K triangular solves
    return _factor(solve_lower(lower, projected, transpose=True), projected.T @ projected, counts)


def discriminant_factor_from_solution(precision_means: Any, centred_means: Any, counts: Any) -> DiscriminantFactor:
    """The shortcut from P = Sigma^-1 (m - mu_0)^T solved elsewhere (:mod:`rmd_ray.core.refinement`).

    Parameters
    ----------
    precision_means : ndarray, shape (d, K)
    centred_means : ndarray, shape (K, d)
        m_k - mu_0.
    counts : ndarray, shape (K,)
    """
    gram = centred_means @ precision_means  # M = (m - mu_0) Sigma^-1 (m - mu_0)^T, symmetric up to rounding
    return _factor(precision_means, 0.5 * (gram + gram.T), counts)


def _factor(precision_means: Any, gram: Any, counts: Any) -> DiscriminantFactor:
    xp = array_module(precision_means, gram)
    root = xp.sqrt(counts.astype(xp.float64) / float(counts.sum()))
    inner = xp.eye(gram.shape[0]) + root[:, None] * gram * root[None, :]
    # C = I + PSD has every eigenvalue >= 1: its Cholesky factor always exists.
    inner_inverse = solve_triangular_identity(xp, xp.linalg.cholesky(inner))
    return DiscriminantFactor(
        precision_means=precision_means,
        mean_norms=xp.diagonal(gram).copy(),
        gain_whitening=root[:, None] * inner_inverse.T,
    )


def discriminant_parts(coordinates: Any, factor: DiscriminantFactor) -> tuple[Any, Any]:
    """``(relative, gain)`` of :func:`discriminant_distances` from the coordinates G = (f - mu_0)^T P, (N, K)."""
    whitened = coordinates @ factor.gain_whitening
    return factor.mean_norms[None, :] - 2.0 * coordinates, (whitened * whitened).sum(axis=1)


def discriminant_distances(
    features: Any, global_mean: Any, factor: DiscriminantFactor, *, chunk_size: int = DEFAULT_CHUNK
) -> tuple[Any, Any]:
    """The parts of MD(f, k) and MD_0(f) that depend on the class geometry, O(N d K).

    Parameters
    ----------
    features : ndarray, shape (N, d)
    global_mean : ndarray, shape (d,)
    factor : DiscriminantFactor

    Returns
    -------
    relative : ndarray of float64, shape (N, K)
        MD(f_i, k) - q_i = -2 G_ik + M_kk.
    gain : ndarray of float64, shape (N,)
        q_i - MD_0(f_i) = g_i^T C^-1 g_i >= 0. So RMD(f_i, y_i) = relative[i, y_i] + gain[i].
    """
    xp = array_module(features, factor.precision_means)
    n, k = features.shape[0], factor.mean_norms.shape[0]
    relative = xp.empty((n, k), dtype=xp.float64)
    gain = xp.empty(n, dtype=xp.float64)
    shift = global_mean @ factor.precision_means
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        # x~^T P = x^T P - mu_0^T P: one float64 copy of the chunk instead of two (cast, then centre)
        coordinates = features[start:stop].astype(xp.float64) @ factor.precision_means - shift
        relative[start:stop], gain[start:stop] = discriminant_parts(coordinates, factor)
    return relative, gain

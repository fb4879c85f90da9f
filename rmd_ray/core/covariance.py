r"""Shrinkage and inversion of the covariances.

Shrinkage maps an empirical covariance S (d x d) of n samples to (1 - a) S + a mu I, mu = trace(S)/d,
with a chosen by:

- ``none``:  a = 0.
- ``ridge``: S + eps * mu * I (scale-aware: eps is relative to the mean eigenvalue). The scorer adds
  the shared covariance's ridge to the class-agnostic one as well (docs/design.md 1.13).
- ``oas``:   Chen et al. (2010) oracle approximating shrinkage, the formula of scikit-learn's ``OAS``:
  a = min(1, (m2 + mu^2) / ((n + 1)(m2 - mu^2/d))), m2 = mean(S**2), clamped to [0, 1] (an isotropic
  S makes the denominator a rounding residue of either sign). Needs only S and n.
- ``ledoit_wolf``: Ledoit & Wolf (2004), the formula of scikit-learn's ``ledoit_wolf_shrinkage``:
  beta = (sum_i ||x_i||^4 / n - ||S||_F^2) / (d n), delta = (||S||_F^2 - trace(S)^2/d) / d,
  a = min(beta, delta) / delta. Needs the fourth-moment sum sum_i ||x_i||^4 of the centred samples
  (:func:`rmd_ray.core.stats.residual_fourth_moments`, one more pass over the features).

We re-derive these from S rather than call scikit-learn because the data are never in memory at
once; the tests check both against scikit-learn to 1e-10.

Inversion: a Cholesky factor S = L L^T gives the whitening matrix A = L^{-1}, and the squared
Mahalanobis distance is ||A (f - mu)||^2 row-wise. When S is not positive definite (or its
eigenvalue ratio is below ``rcond``) we warn, naming the shrinkage that fixes it, and fall back to
the eigh pseudo-inverse whitening A = diag(lambda^-1/2 on the kept eigenvalues) V^T, never NaN.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from rmd_ray.core.array_api import array_module
from rmd_ray.core.registry import Registry
from rmd_ray.core.validation import check_positive


class SingularCovarianceWarning(UserWarning):
    """A covariance is singular or near-singular; the message names the shrinkage that fixes it."""


@dataclass(frozen=True)
class ShrinkageInput:
    """What a shrinkage rule may use: the covariance, the sample count and the fourth-moment sum."""

    covariance: Any
    n_samples: int
    fourth_moment: float | None = None
    ridge_eps: float = 1e-4


ShrinkageRule = Callable[[ShrinkageInput], float]
SHRINKAGE: Registry[ShrinkageRule] = Registry("shrinkage")


@dataclass(frozen=True)
class CovarianceConfig:
    """How the two covariances are regularised and inverted.

    Parameters
    ----------
    shrinkage : {"none", "ridge", "ledoit_wolf", "oas"}
        See :data:`rmd_ray.core.covariance.SHRINKAGE`.
    ridge_eps : float
        Relative ridge for ``shrinkage="ridge"``: Sigma + ridge_eps * trace(Sigma)/d * I, the same amount
        (the shared covariance's trace) added to the class-agnostic covariance, so that
        Sigma_0 - Sigma stays the between-class covariance (docs/design.md 1.13).
    rcond : float
        A covariance whose smallest/largest eigenvalue ratio falls below ``rcond`` is treated as
        singular: a warning, and a pseudo-inverse through eigh (null directions ignored).
    """

    shrinkage: str = "none"
    ridge_eps: float = 1e-4
    rcond: float = 1e-10

    def __post_init__(self) -> None:
        SHRINKAGE.get(self.shrinkage)
        check_positive(self.ridge_eps, name="ridge_eps")
        check_positive(self.rcond, name="rcond")
        if self.rcond >= 1:
            raise ValueError(f"rcond must be < 1 (a ratio of eigenvalues), got {self.rcond}")



def _trace_mean(cov: Any) -> float:
    return float(cov.trace()) / cov.shape[0]


@SHRINKAGE.register("none")
def _no_shrinkage(inp: ShrinkageInput) -> float:
    return 0.0


@SHRINKAGE.register("ridge")
def _ridge_coefficient(inp: ShrinkageInput) -> float:
    # Returned as a ridge coefficient (not a convex weight); apply_shrinkage tells the two apart.
    return inp.ridge_eps


@SHRINKAGE.register("oas")
def _oas_coefficient(inp: ShrinkageInput) -> float:
    cov = inp.covariance
    d = cov.shape[0]
    mu = _trace_mean(cov)
    mean_sq = float((cov**2).mean())
    numerator = mean_sq + mu**2
    # mean_sq - mu^2/d = (mean of squared eigenvalues - squared mean eigenvalue) / d >= 0, zero for an
    # isotropic S. Rounding leaves a tiny value of either sign there, and the ratio then reaches
    # +-1e15: clamp to [0, 1] (an isotropic S is its own target, so a = 1 changes nothing).
    # scikit-learn's OAS has the same flaw (it only caps at 1): on an isotropic S its shrinkage_ can be
    # a huge negative number.
    denominator = (inp.n_samples + 1) * (mean_sq - mu**2 / d)
    if denominator <= 0:
        return 1.0
    return min(max(numerator / denominator, 0.0), 1.0)


@SHRINKAGE.register("ledoit_wolf")
def _ledoit_wolf_coefficient(inp: ShrinkageInput) -> float:
    if inp.fourth_moment is None:
        raise ValueError(
            "shrinkage='ledoit_wolf' needs the fourth-moment sum of the residuals (a second pass over the "
            "features, see residual_fourth_moments); fit on arrays, or use shrinkage='oas', which needs only "
            "the streamed statistics"
        )
    cov = inp.covariance
    d = cov.shape[0]
    if d == 1:
        return 0.0  # as scikit-learn: nothing to shrink towards
    n = inp.n_samples
    frob_sq = float((cov**2).sum())
    trace = float(cov.trace())
    beta = (inp.fourth_moment / n - frob_sq) / (d * n)
    delta = (frob_sq - trace**2 / d) / d
    beta = min(beta, delta)
    return 0.0 if beta == 0 else beta / delta


def apply_shrinkage(
    covariance: Any,
    *,
    method: str,
    n_samples: int,
    fourth_moment: float | None = None,
    ridge_eps: float = 1e-4,
) -> tuple[Any, float]:
    """Return the shrunk covariance and the coefficient used.

    Parameters
    ----------
    covariance : ndarray, shape (d, d)
    method : {"none", "ridge", "ledoit_wolf", "oas"}
    n_samples : int
        Samples behind ``covariance`` (for ``oas`` and ``ledoit_wolf``).
    fourth_moment : float, optional
        sum_i ||x_i||^4 of the centred samples; required by ``ledoit_wolf``.
    ridge_eps : float
        Relative ridge for ``ridge``.

    Returns
    -------
    shrunk : ndarray, shape (d, d)
    coefficient : float
        The convex weight a for ``oas``/``ledoit_wolf`` ((1 - a) S + a mu I), ``ridge_eps`` for ``ridge``.
    """
    rule = SHRINKAGE.get(method)
    coefficient = rule(ShrinkageInput(covariance, n_samples, fourth_moment, ridge_eps))
    if coefficient == 0.0:
        return covariance, 0.0
    xp = array_module(covariance)
    mu = _trace_mean(covariance)
    eye = xp.eye(covariance.shape[0], dtype=covariance.dtype)
    if method == "ridge":
        return covariance + coefficient * mu * eye, coefficient
    return (1.0 - coefficient) * covariance + coefficient * mu * eye, coefficient


def cholesky_or_none(xp: Any, covariance: Any) -> Any:
    """L with covariance = L L^T from its lower triangle (the upper one is not read), or None."""
    try:
        if xp is np:
            from scipy.linalg import cholesky

            # SciPy's LAPACK potrf (lower, check_finite=False): faster than np.linalg.cholesky in float64
            # and float32 (docs/benchmarks.md, Notes moved from code)
            lower = cholesky(covariance, lower=True, check_finite=False)
        else:  # pragma: no cover - GPU only
            lower = xp.linalg.cholesky(covariance)
    except Exception:  # LinAlgError: numerically indefinite; the caller falls back to eigh
        return None
    return lower if bool(xp.isfinite(lower).all()) else None  # CuPy signals failure with NaNs, not an exception


def solve_lower(lower: Any, rhs: Any, *, transpose: bool = False) -> Any:
    """L^-1 rhs (or L^-T rhs) for a lower-triangular L, on the array module of ``lower``."""
    xp = array_module(lower)
    if xp is np:
        from scipy.linalg import solve_triangular
    else:  # pragma: no cover - GPU only
        from cupyx.scipy.linalg import solve_triangular
    # finite by construction (a checked Cholesky factor): SciPy's check is a pass over both operands
    return solve_triangular(lower, rhs, lower=True, trans="T" if transpose else "N", check_finite=False)


def solve_triangular_identity(xp: Any, lower: Any) -> Any:
    return solve_lower(lower, xp.eye(lower.shape[0], dtype=lower.dtype))


def eigenvalue_floor(raw_covariance: Any, coefficient: float) -> float:
    """The identity part a * trace(S)/d that shrinkage added to a positive semi-definite S: a lower bound
    on every eigenvalue of the shrunk covariance (0 without shrinkage)."""
    return float(coefficient) * _trace_mean(raw_covariance) if coefficient > 0 else 0.0


def _checked_cholesky(covariance: Any, *, rcond: float, max_rank: int | None, floor: float) -> tuple[Any, Any]:
    """(L, eigenvalues): L when ``covariance`` passes the condition test of :func:`whitening_matrix`, else
    None; the eigenvalues when the test needed them (None when the floor proved it), for the fallback."""
    xp = array_module(covariance)
    if max_rank is not None and max_rank < covariance.shape[0]:
        return None, None
    eigenvalues = None
    if not (floor > 0 and floor > rcond * float(xp.trace(covariance))):
        eigenvalues = xp.linalg.eigvalsh(covariance)
        largest, smallest = float(eigenvalues[-1]), float(eigenvalues[0])
        if not (largest > 0 and smallest > rcond * largest):
            return None, eigenvalues
    return cholesky_or_none(xp, covariance), eigenvalues


def factor_or_whitening(
    covariance: Any,
    *,
    rcond: float = 1e-10,
    what: str = "covariance",
    max_rank: int | None = None,
    floor: float = 0.0,
) -> tuple[Any, Any]:
    """``(L, None)`` with Sigma = L L^T when ``covariance`` is well conditioned, else ``(None, A)`` with A the
    eigh pseudo-inverse whitening (and a :class:`SingularCovarianceWarning`). Parameters as
    :func:`whitening_matrix`; for callers that solve with L instead of forming L^-1."""
    lower, eigenvalues = _checked_cholesky(covariance, rcond=rcond, max_rank=max_rank, floor=floor)
    if lower is not None:
        return lower, None
    return None, _pseudo_inverse_whitening(covariance, eigenvalues, rcond=rcond, what=what, max_rank=max_rank)


def whitening_matrix(
    covariance: Any,
    *,
    rcond: float = 1e-10,
    what: str = "covariance",
    max_rank: int | None = None,
    floor: float = 0.0,
) -> tuple[Any, bool]:
    """A (d, d) such that ||A (f - mu)||^2 is the squared Mahalanobis distance under ``covariance``.

    Parameters
    ----------
    covariance : ndarray, shape (d, d), float64, symmetric
    rcond : float
        Eigenvalues at or below ``rcond * lambda_max`` count as zero.
    what : str
        Name of the covariance, used in the warning.
    max_rank : int, optional
        The rank the covariance can have at most by construction: N - 1 for a scatter about one mean
        of N samples, N - K' about the means of K' non-empty classes. Below d the covariance is
        singular whatever rounding left in its null space, so it is treated as singular (warning,
        pseudo-inverse on at most ``max_rank`` directions) even when its eigenvalues pass ``rcond``.
    floor : float
        A lower bound on the eigenvalues known by construction (:func:`eigenvalue_floor`). When
        ``floor > rcond * trace`` the ratio test passes without computing eigenvalues (every eigenvalue
        is >= floor and the largest is <= the trace), so the O(d^3) ``eigvalsh`` is skipped.

    Returns
    -------
    whitening : ndarray, shape (d, d)
        L^{-1} from the Cholesky factor, or the eigh pseudo-inverse square root when singular.
    singular : bool
        True when the fallback was used (a :class:`SingularCovarianceWarning` was issued).
    """
    lower, whitening = factor_or_whitening(covariance, rcond=rcond, what=what, max_rank=max_rank, floor=floor)
    if lower is not None:
        return solve_triangular_identity(array_module(covariance), lower), False
    return whitening, True


def _pseudo_inverse_whitening(
    covariance: Any, eigenvalues: Any, *, rcond: float, what: str, max_rank: int | None
) -> Any:
    xp = array_module(covariance)
    d = covariance.shape[0]
    rank_deficient = max_rank is not None and max_rank < d
    if eigenvalues is None:
        eigenvalues = xp.linalg.eigvalsh(covariance)
    largest = float(eigenvalues[-1])
    smallest = float(eigenvalues[0])
    kept = int((eigenvalues > rcond * max(largest, 0.0)).sum()) if largest > 0 else 0
    if rank_deficient:
        kept = min(kept, max(max_rank, 0))
        cause = (
            f"it has rank at most {max(max_rank, 0)} by construction (fewer samples than dimensions plus "
            "fitted means), so distances of the training samples reflect the sample count, not the data"
        )
    else:
        ratio = smallest / largest if largest > 0 else 0.0
        cause = f"{d - kept} eigenvalue(s) <= rcond*max (ratio {ratio:.2e})"
    warnings.warn(
        f"the {what} ({d}x{d}) is singular or near-singular: {cause}; "
        "Mahalanobis distances ignore the null directions. Use shrinkage='ledoit_wolf' (or 'oas', or 'ridge') "
        "to regularise it, or give more samples than feature dimensions plus classes.",
        SingularCovarianceWarning,
        stacklevel=4,  # whoever called whitening_matrix / factor_or_whitening
    )
    values, vectors = xp.linalg.eigh(covariance)
    # eigh sorts ascending: keep the ``kept`` largest, so rounding noise in a structural null space
    # (which can exceed rcond * max) never gets inverted
    keep = (values > rcond * max(largest, 0.0)) & (xp.arange(d) >= d - kept)
    inv_sqrt = xp.where(keep, 1.0 / xp.sqrt(xp.where(keep, values, 1.0)), 0.0)
    return inv_sqrt[:, None] * vectors.T

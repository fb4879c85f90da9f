r"""Solve with a within-class scatter to float64 accuracy from a float32 factor (docs/design.md 1.14).

For rows R (N, d) already centred by their class means, we need Y with

    (W + lambda I) Y = B,   W = R^T R (the within-class scatter),   B (d, K),

and only Y, never W itself. Forming W in float64 is one dsyrk of N d^2 flops, most of the time of an
in-memory label ranking. Mixed-precision iterative refinement (the scheme of LAPACK's ``dsposv``,
Langou et al. 2006) needs W only in float32, as a preconditioner:

    L L^T = fl32(W + lambda I)                      (ssyrk + spotrf: half the float64 flops)
    Y_0 = (L L^T)^-1 B
    r_j = B - (R^T (R Y_j) + lambda Y_j)            (float64, O(N d K): the exact W is applied, never formed)
    Y_{j+1} = Y_j + (L L^T)^-1 r_j

The error contracts by rho ~ cond(W) eps_32 per step, and the residual is computed in float64 from R
itself, so the limit is the accuracy of a float64 solve, not of the float32 factor. ``dsposv`` needs the
float64 matrix for its residual; here R plays that role. The statistics path
(:func:`rmd_ray.core.stats.batch_stats`) keeps the float64 scatter, because shards merge it; this solve is
for rows held in memory.

Stopping: accept Y_j when its correction is at rounding level, ||dY_j|| <= tol ||Y_j|| (max norms), or when
the contraction predicts it, rho_j ||dY_j|| / (1 - rho_j) <= tol ||Y_j|| with rho_j = ||dY_j|| / ||dY_{j-1}||.
Give up (the caller solves in float64) when the float32 factor does not exist, when rho_j >= 1/2 (a float64
factorisation is then cheaper than the steps left), or after ``max_steps``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rmd_ray.core.array_api import array_module
from rmd_ray.core.covariance import cholesky_or_none, solve_lower

__all__ = ["RefinedSolve", "refined_scatter_solve", "scatter_apply"]

#: The contraction above which refinement stops: each later step would gain less than one bit.
MAX_CONTRACTION = 0.5
# Rows per block of the float64 products: 64 x 1,280 float64 is 640 KiB, small enough for a server core's
# L2 cache, so R Y and R^T (R Y) read each block from cache once it is loaded.
_APPLY_BLOCK_ROWS = 64
# A correction this small relative to the solution may be multiplied by R in float32: the product's
# relative error, ~eps_32 sqrt(d) times this, stays below float64 rounding of the whole.
_FLOAT32_UPDATE = 1e-9


@dataclass(frozen=True)
class RefinedSolve:
    """Outcome of :func:`refined_scatter_solve`.

    Attributes
    ----------
    solution : ndarray of float64, shape (d, K), or None
        Y, when ``converged``.
    row_products : ndarray of float64, shape (N, K), or None
        R Y for the returned Y (what the discriminant coordinates need), to the same accuracy.
    converged : bool
    steps : int
        Refinement steps taken (float64 residuals computed).
    reason : str
        Why it stopped: "converged", or what failed (for the caller's record of the fallback).
    """

    solution: Any
    row_products: Any
    converged: bool
    steps: int
    reason: str


def _gram32_lower(xp: Any, rows32: Any) -> Any:
    """rows32^T rows32 in float32; on NumPy only the lower triangle is filled (what spotrf reads)."""
    if xp is np:
        from scipy.linalg.blas import ssyrk

        return ssyrk(1.0, rows32.T, trans=0, lower=1)  # rows32.T is F-contiguous: read in place
    return rows32.T @ rows32  # pragma: no cover - GPU only


def scatter_apply(rows: Any, vectors: Any, *, ridge: float) -> tuple[Any, Any]:
    """``((R^T R + ridge I) Y, R Y)`` in float64 without forming R^T R. O(N d K).

    Parameters
    ----------
    rows : ndarray of float64, shape (N, d)
    vectors : ndarray of float64, shape (d, K)
    ridge : float

    Returns
    -------
    applied : ndarray, shape (d, K)
    row_products : ndarray, shape (N, K)
    """
    xp = array_module(rows, vectors)
    if xp is not np:  # pragma: no cover - GPU only: one kernel per product
        products = rows @ vectors
        applied = rows.T @ products + ridge * vectors
    else:
        applied = ridge * vectors
        products = np.empty((rows.shape[0], vectors.shape[1]))
        for start in range(0, rows.shape[0], _APPLY_BLOCK_ROWS):
            block = rows[start : start + _APPLY_BLOCK_ROWS]
            part = products[start : start + _APPLY_BLOCK_ROWS]
            np.matmul(block, vectors, out=part)
            applied += block.T @ part
    return applied, products


def _max_norm(xp: Any, a: Any) -> float:
    return float(xp.abs(a).max())


def _failed(steps: int, reason: str) -> RefinedSolve:
    return RefinedSolve(None, None, False, steps, reason)


def refined_scatter_solve(
    rows: Any,
    rhs: Any,
    *,
    ridge: float = 0.0,
    rows32: Any = None,
    max_steps: int = 10,
    tol: float | None = None,
) -> RefinedSolve:
    r"""Y with (R^T R + ridge I) Y = rhs to float64 accuracy, factorising only in float32.

    Parameters
    ----------
    rows : ndarray of float64, shape (N, d), C-contiguous
        R, finite (validated by the caller).
    rhs : ndarray of float64, shape (d, K)
    ridge : float
        lambda >= 0 added to the diagonal, in the units of R^T R.
    rows32 : ndarray of float32, shape (N, d), optional
        R rounded to float32, when the caller made it while R was in cache; cast here otherwise.
    max_steps : int
        Refinement steps before giving up.
    tol : float, optional
        Relative accuracy to reach in the max norm; default sqrt(d) eps_64, the residual test of ``dsposv``.

    Returns
    -------
    RefinedSolve
        ``solution`` and ``row_products`` None, with ``converged`` False and the ``reason``, when refinement
        cannot reach ``tol``: the caller then solves in float64.
    """
    xp = array_module(rows, rhs)
    d = rows.shape[1]
    if tol is None:
        tol = float(np.sqrt(d) * np.finfo(np.float64).eps)
    if rows32 is None:
        rows32 = rows.astype(xp.float32)
    gram = _gram32_lower(xp, rows32)
    gram[xp.arange(d), xp.arange(d)] += xp.float32(ridge)
    lower = cholesky_or_none(xp, gram)
    if lower is None:
        return _failed(0, "the float32 scatter is not positive definite")

    def solve32(b: Any) -> Any:
        half = solve_lower(lower, b.astype(xp.float32))
        return solve_lower(lower, half, transpose=True).astype(xp.float64)

    solution = solve32(rhs)
    previous = None
    for step in range(1, max_steps + 1):
        applied, products = scatter_apply(rows, solution, ridge=ridge)
        correction = solve32(rhs - applied)
        solution = solution + correction
        size, scale = _max_norm(xp, correction), _max_norm(xp, solution)
        if not (np.isfinite(size) and np.isfinite(scale)):
            return _failed(step, "refinement overflowed")
        rho = size / previous if previous else 0.0
        if previous is not None and rho >= MAX_CONTRACTION:
            return _failed(step, f"refinement contracts by {rho:.2f} per step (too ill-conditioned for float32)")
        if size <= tol * scale or (previous is not None and rho * size / (1.0 - rho) <= tol * scale):
            # R Y = R Y_prev + R dY; a correction this small needs only float32 (the products are half the bytes)
            small = size <= _FLOAT32_UPDATE * scale
            update = (rows32 @ correction.astype(xp.float32)).astype(xp.float64) if small else rows @ correction
            return RefinedSolve(solution, products + update, True, step, "converged")
        previous = size
    # contraction below MAX_CONTRACTION yet too slow for max_steps: cond * eps_32 * d close to 1
    return _failed(max_steps, f"not converged after {max_steps} refinement steps (too ill-conditioned for float32)")

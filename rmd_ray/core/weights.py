r"""Per-sample weights from difficulty scores (docs/design.md 1.4).

s_i = exp(r_i / T) / (max_j exp(r_j / T) + c),   T = 0.7, c = 1e-3,

with r the RMD after normalisation. Computed in log space so nothing overflows:

log s_i = r_i / T - logaddexp(r_max / T, log c).

s is monotone non-decreasing in r. For ``minmax`` (r in [0, 1]),
exp(-1/T)/(1 + c) <= s_i <= 1/(1 + c exp(-1/T)), strictly inside (0, 1). With ``none`` the raw RMD may span
hundreds of units: exp underflows to exactly 0 for the easiest samples and s_max = 1/(1 + c exp(-r_max/T))
rounds to 1.0 once c exp(-r_max/T) < 2^-53 -- finite and in [0, 1], never NaN, but that collapse is why
``minmax`` is the default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from rmd_ray.core.array_api import array_module
from rmd_ray.core.registry import Registry
from rmd_ray.core.validation import check_positive

Normalization = Callable[[Any, tuple[float, float]], Any]
NORMALIZATIONS: Registry[Normalization] = Registry("normalization")


@dataclass(frozen=True)
class WeightConfig:
    """Per-sample weight s_i = exp(r_i/T) / (max_j exp(r_j/T) + c) (docs/design.md 1.4).

    Parameters
    ----------
    temperature : float
        T > 0, default 0.7 (the paper).
    c : float
        c > 0, default 1e-3; keeps s strictly below 1.
    normalization : {"minmax", "rank", "robust", "none"}
        Applied to the RMD r before the exponential; ``minmax`` maps the training set to [0, 1],
        ``rank`` maps it to its ranks spread evenly over [0, 1], ``robust`` maps its 5th-95th
        percentile range to [0, 1] (clipped).
    """

    temperature: float = 0.7
    c: float = 1e-3
    normalization: str = "minmax"

    def __post_init__(self) -> None:
        check_positive(self.temperature, name="temperature")
        check_positive(self.c, name="c")
        NORMALIZATIONS.get(self.normalization)



@NORMALIZATIONS.register("minmax")
def _minmax(scores: Any, reference: tuple[float, float]) -> Any:
    lo, hi = reference
    if hi == lo:  # every training sample equally hard: all map to 0, so all weights are equal
        return scores * 0.0
    return (scores - lo) / (hi - lo)


@NORMALIZATIONS.register("none")
def _identity(scores: Any, reference: tuple[float, float]) -> Any:
    return scores


@NORMALIZATIONS.register("rank")
def _rank(scores: Any, reference: tuple[float, float]) -> Any:
    # Min-max is compressed by a few extreme scores (most samples crowd near 0); ranks spread the
    # weights evenly over [0, 1] whatever the tails. Ties share their average rank, so equal scores
    # always get equal weights. Ranks are only defined within one set: see normalize_scores.
    # Not scipy.stats.rankdata: it is NumPy-only, and this runs on CuPy arrays too.
    xp = array_module(scores)
    n = scores.shape[0]
    if n == 1:
        return scores * 0.0
    order = xp.argsort(scores, kind="stable")
    ordered = scores[order]
    group = xp.concatenate([xp.zeros(1, dtype=xp.int64), xp.cumsum(ordered[1:] != ordered[:-1])])
    positions = xp.arange(n, dtype=xp.float64)
    mean_position = xp.bincount(group, weights=positions) / xp.bincount(group)
    ranks = xp.empty(n, dtype=xp.float64)
    ranks[order] = mean_position[group]
    return ranks / (n - 1)


#: Normalisations defined only within one set of scores (no reference range for new samples).
SET_RELATIVE = frozenset({"rank", "robust"})

#: The quantiles ``robust`` scales between: the central 90% of the training scores spans [0, 1].
ROBUST_QUANTILES = (0.05, 0.95)


@NORMALIZATIONS.register("robust")
def _robust(scores: Any, reference: tuple[float, float]) -> Any:
    # Min-max with the 5th and 95th percentiles in place of the extremes, clipped to [0, 1]: the
    # paper's formula unchanged, but one extreme RMD no longer compresses everyone else's weight
    # (docs/design.md 1.15). Ranks are only defined within one set (see normalize_scores).
    xp = array_module(scores)
    lo, hi = (float(q) for q in xp.quantile(scores, xp.asarray(ROBUST_QUANTILES)))
    if hi == lo:
        return _minmax(scores, reference)
    return xp.clip((scores - lo) / (hi - lo), 0.0, 1.0)


def _check_scores(scores: Any) -> Any:
    xp = array_module(scores)
    if not isinstance(scores, xp.ndarray) or scores.ndim != 1:
        raise ValueError("scores must be a 1-D array of per-sample RMD values")
    if scores.size == 0:
        raise ValueError("scores is empty; pass at least one RMD value")
    finite = xp.isfinite(scores)
    if not bool(finite.all()):
        bad = int(xp.flatnonzero(~finite)[0])
        raise ValueError(f"score {bad} is NaN or inf; the scorer produced no valid RMD for that sample")
    return scores.astype(xp.float64)


def normalize_scores(
    scores: Any, *, method: str = "minmax", reference: tuple[float, float] | None = None
) -> Any:
    """Normalise RMD values before weighting.

    Parameters
    ----------
    scores : ndarray, shape (N,)
    method : {"minmax", "rank", "robust", "none"}
        ``minmax``: (r - min) / (max - min). ``rank``: (rank(r) - 1) / (N - 1), ties sharing their
        average rank, so the weights spread evenly whatever the tails. ``robust``: min-max between the
        5th and 95th percentiles, clipped to [0, 1]. ``none``: r unchanged.
    reference : (min, max), optional
        Range to normalise by; default the range of ``scores`` itself (the training set). Pass the
        training range to weight new samples consistently; values outside it map outside [0, 1].
        Not defined for ``rank`` and ``robust`` (ValueError).
    """
    normalize = NORMALIZATIONS.get(method)
    scores = _check_scores(scores)
    if method in SET_RELATIVE and reference is not None:
        raise ValueError(
            f"{method} normalisation places the training samples among themselves (ranks or percentiles) and "
            "cannot place new samples against a reference range; weight new samples with "
            "normalization='minmax' (or 'none')"
        )
    if reference is None:
        reference = (float(scores.min()), float(scores.max()))
    return normalize(scores, reference)


def log_difficulty_weights(scores: Any, *, config: WeightConfig = WeightConfig(), reference: Any = None) -> Any:
    """log s_i = r_i/T - logaddexp(r_max/T, log c), shape (N,), float64, all <= 0.

    ``r_max`` is the maximum of the normalised training scores: the maximum of ``scores`` when no
    ``reference`` is given, else the normalised ``reference[1]``.
    """
    xp = array_module(scores)
    r = normalize_scores(scores, method=config.normalization, reference=reference)
    if reference is None:
        r_max = float(r.max())
    else:
        top = xp.asarray([reference[1]], dtype=xp.float64)
        r_max = float(NORMALIZATIONS.get(config.normalization)(top, reference)[0])
        r = xp.minimum(r, r_max)  # a sample harder than every training sample gets the largest weight, still < 1
    log_denominator = np.logaddexp(r_max / config.temperature, np.log(config.c))
    return r / config.temperature - log_denominator


def difficulty_weights(scores: Any, *, config: WeightConfig = WeightConfig(), reference: Any = None) -> Any:
    """s_i = exp(r_i/T) / (max_j exp(r_j/T) + c) in (0, 1), shape (N,); see the module docstring."""
    xp = array_module(scores)
    return xp.exp(log_difficulty_weights(scores, config=config, reference=reference))

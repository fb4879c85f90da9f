"""Small frozen configs for the core; each validates itself on construction."""

from __future__ import annotations

from dataclasses import dataclass

from rmd_ray.core.validation import check_positive


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
        from rmd_ray.core.covariance import SHRINKAGE

        SHRINKAGE.get(self.shrinkage)
        check_positive(self.ridge_eps, name="ridge_eps")
        check_positive(self.rcond, name="rcond")
        if self.rcond >= 1:
            raise ValueError(f"rcond must be < 1 (a ratio of eigenvalues), got {self.rcond}")


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
        from rmd_ray.core.weights import NORMALIZATIONS

        check_positive(self.temperature, name="temperature")
        check_positive(self.c, name="c")
        NORMALIZATIONS.get(self.normalization)

"""``DifficultyScorer``: a thin estimator over the stats / covariance / scores / weights functions.

Its file format (:meth:`DifficultyScorer.save` / :meth:`DifficultyScorer.load`) lives in
:mod:`rmd_ray.core.scorer_io`, the rank checks of an unshrunk fit in :mod:`rmd_ray.core.validation`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from rmd_ray.core.array_api import array_module, module_for_device, to_numpy
from rmd_ray.core.covariance import (
    CovarianceConfig,
    apply_shrinkage,
    eigenvalue_floor,
    factor_or_whitening,
    solve_lower,
    whitening_matrix,
)
from rmd_ray.core.scorer_io import read_scorer, write_scorer
from rmd_ray.core.scores import (
    class_distances,
    discriminant_distances,
    discriminant_factor,
    kmeans_distance,
    label_conditional_md,
    mahalanobis_margin,
    mahalanobis_sq,
)
from rmd_ray.core.stats import (
    ClassStats,
    batch_stats_unchecked,
    between_class_covariance,
    class_agnostic_mean,
    empty_stats,
    merge_stats,
    residual_fourth_moments,
    within_class_covariance,
)
from rmd_ray.core.validation import (
    check_class_counts,
    check_features,
    check_labels,
    check_n_classes,
    rank_bounds,
    require_full_rank,
)
from rmd_ray.core.weights import WeightConfig, difficulty_weights

#: Shrinkage rules under which Sigma_0 = Sigma + Sigma_B exactly (one ridge for both covariances).
SHARED_SHRINKAGE = ("none", "ridge")


class Distances(NamedTuple):
    md: np.ndarray
    md0: np.ndarray
    to_classes: np.ndarray


class LabelScores(NamedTuple):
    rmd: np.ndarray
    margin: np.ndarray
    nearest_class: np.ndarray


class NotFittedError(ValueError):
    """The scorer was used before ``fit`` (or ``finalize``)."""


class DifficultyScorer:
    """Fit class-conditional Gaussians (shared covariance) and a class-agnostic Gaussian; score RMD.

    Parameters
    ----------
    n_classes : int
        K; labels must lie in 0..K-1.
    covariance : CovarianceConfig
        Shrinkage and inversion options.
    device : {"cpu", "cuda", "auto"}
        Array module for fitting: NumPy on CPU, CuPy on GPU.

    Attributes
    ----------
    stats_ : ClassStats
        Merged sufficient statistics.
    means_ : ndarray, shape (K, d)
        Class means; an empty class falls back to ``global_mean_`` (with a warning).
    global_mean_ : ndarray, shape (d,)
    covariance_, global_covariance_ : ndarray, shape (d, d)
        Shared within-class and class-agnostic covariances after shrinkage.
    shrinkage_ : dict
        Coefficient used for each covariance.
    whitening_, global_whitening_ : ndarray, shape (d, d)
    singular_ : dict
        Whether each covariance needed the pseudo-inverse fallback.

    Notes
    -----
    ``whitening_`` and ``global_whitening_`` are built on first use. With ``shrinkage`` ``none`` or
    ``ridge``, a non-singular Sigma and K <= d / 2, MD_0, RMD and the margin come from the discriminant
    shortcut (:mod:`rmd_ray.core.scores`, docs/design.md 1.13): :meth:`label_scores` needs no (N, d) x (d, d)
    product, :meth:`distances` and :meth:`score_parts` one.

    Examples
    --------
    >>> scorer = DifficultyScorer(n_classes=10).fit(features, labels)   # doctest: +SKIP
    >>> md, rmd = scorer.score(features, labels)                         # doctest: +SKIP
    """

    def __init__(
        self, *, n_classes: int, covariance: CovarianceConfig = CovarianceConfig(), device: str = "cpu"
    ) -> None:
        self.n_classes = check_n_classes(n_classes)
        if not isinstance(covariance, CovarianceConfig):
            raise TypeError("covariance must be a CovarianceConfig, e.g. CovarianceConfig(shrinkage='oas')")
        self.covariance = covariance
        self.device = device
        self._xp = module_for_device(device)
        self.stats_: ClassStats | None = None
        self._fitted = False

    # ---------------------------------------------------------------- fitting
    def fit(self, features: Any, labels: Any) -> DifficultyScorer:
        """Fit on all features at once (two passes when ``shrinkage='ledoit_wolf'``); returns self."""
        features, labels = self._validated(features, labels)
        n, d = features.shape
        if self.covariance.shrinkage == "none":
            require_full_rank(n, d, int(to_numpy(self._xp.bincount(labels, minlength=self.n_classes) > 0).sum()))
        self.stats_ = None
        self._accumulate(features, labels)
        fourth = None
        if self.covariance.shrinkage == "ledoit_wolf":
            means, global_mean = self._means_from_stats()
            fourth = residual_fourth_moments(features, labels, means=means, global_mean=global_mean)
        return self.finalize(fourth_moments=fourth)

    def partial_fit(self, features: Any, labels: Any) -> DifficultyScorer:
        """Add one batch to the running statistics; call :meth:`finalize` after the last batch."""
        features, labels = self._validated(features, labels)
        self._accumulate(features, labels)
        return self

    def merge(self, stats: ClassStats) -> DifficultyScorer:
        """Merge statistics computed elsewhere (another shard, another worker); returns self."""
        if not isinstance(stats, ClassStats):
            raise TypeError("merge takes a ClassStats (from rmd_ray.core.stats.batch_stats)")
        if stats.n_classes != self.n_classes:
            raise ValueError(f"statistics have {stats.n_classes} classes, this scorer {self.n_classes}")
        stats = ClassStats(*(self._xp.asarray(a) for a in (stats.counts, stats.means, stats.scatter)))
        self.stats_ = stats if self.stats_ is None else merge_stats(self.stats_, stats)
        return self

    def finalize(self, *, fourth_moments: tuple[float, float] | None = None) -> DifficultyScorer:
        """Derive means, shrunk covariances and whitening matrices from the statistics; returns self.

        Parameters
        ----------
        fourth_moments : (float, float), optional
            ``residual_fourth_moments`` summed over all shards; required by ``shrinkage='ledoit_wolf'``.
        """
        if self.stats_ is None:
            raise NotFittedError("no data seen: call fit, partial_fit or merge before finalize")
        stats = self.stats_
        check_class_counts(to_numpy(stats.counts))
        n = stats.n_samples
        means, global_mean = self._means_from_stats()
        within_fourth = total_fourth = None
        if fourth_moments is not None:
            within_fourth, total_fourth = fourth_moments
        cfg = self.covariance
        raw_within = within_class_covariance(stats)
        within, a_within = apply_shrinkage(
            raw_within, method=cfg.shrinkage, n_samples=n, fourth_moment=within_fourth, ridge_eps=cfg.ridge_eps
        )
        within_floor = eigenvalue_floor(raw_within, a_within)
        between = between_class_covariance(stats)
        if cfg.shrinkage in SHARED_SHRINKAGE:
            # One ridge for both (docs/design.md 1.13): Sigma_0 - Sigma stays the between-class covariance,
            # so no regulariser-made term enters RMD and the discriminant shortcut is exact.
            total, a_total, total_floor = within + between, a_within, within_floor
        else:  # oas / ledoit_wolf: the class-agnostic fit is scikit-learn's on the pooled features
            raw_total = raw_within + between
            total, a_total = apply_shrinkage(
                raw_total, method=cfg.shrinkage, n_samples=n, fourth_moment=total_fourth, ridge_eps=cfg.ridge_eps
            )
            total_floor = eigenvalue_floor(raw_total, a_total)
        self.means_, self.global_mean_ = means, global_mean
        self.covariance_, self.global_covariance_ = within, total
        self.shrinkage_ = {"within": a_within, "global": a_total}
        # Shrinkage (a > 0) restores full rank; without it the rank bounds of the raw scatters hold, and
        # a covariance below full rank by construction is singular even where rounding hides it.
        within_rank, global_rank = rank_bounds(n, int(to_numpy(stats.counts > 0).sum()))
        within_options = dict(rcond=cfg.rcond, max_rank=within_rank if a_within == 0.0 else None, floor=within_floor)
        # L itself (the shortcut solves with it); the pseudo-inverse whitening, with a warning, when singular
        self._within_lower, self._whitening = factor_or_whitening(
            within, what="shared within-class covariance", **within_options
        )
        self._factor = self._global_whitening = None
        within_singular = self._within_lower is None
        k, d = means.shape
        if cfg.shrinkage in SHARED_SHRINKAGE and not within_singular and k <= d // 2:
            # Sigma > 0 and Sigma_0 = Sigma + PSD: Sigma_0 > 0 too, its whitening is only built on request.
            self._factor = discriminant_factor(means - global_mean, stats.counts, self._within_lower)
            global_singular = False
        else:
            self._global_whitening, global_singular = whitening_matrix(
                total, rcond=cfg.rcond, what="class-agnostic covariance",
                max_rank=global_rank if a_total == 0.0 else None, floor=total_floor,
            )
        self.singular_ = {"within": within_singular, "global": global_singular}
        self._fourth = list(fourth_moments) if fourth_moments is not None else None
        self._fitted = True
        return self

    @property
    def whitening_(self) -> Any:
        """A with A^T A = Sigma^-1, shape (d, d): L^-1, built on first use (label_scores never needs it)."""
        self._check_fitted()
        if self._whitening is None:
            self._whitening = solve_lower(self._within_lower, self._xp.eye(self._within_lower.shape[0]))
        return self._whitening

    @property
    def global_whitening_(self) -> Any:
        """A_0 with A_0^T A_0 = Sigma_0^-1, shape (d, d); built on first use when the fit did not need it."""
        self._check_fitted()
        if self._global_whitening is None:
            self._global_whitening, _ = whitening_matrix(
                self.global_covariance_, rcond=self.covariance.rcond, what="class-agnostic covariance",
                floor=eigenvalue_floor(within_class_covariance(self.stats_), self.shrinkage_["within"]),
            )
        return self._global_whitening

    def fourth_moments(self, features: Any, labels: Any) -> tuple[float, float]:
        """Second-pass sums for ``ledoit_wolf`` when streaming: add them up over all batches, then
        ``finalize(fourth_moments=total)``. Uses the means of the statistics accumulated so far."""
        if self.stats_ is None:
            raise NotFittedError("accumulate statistics (partial_fit / merge) before the fourth-moment pass")
        features, labels = self._validated(features, labels)
        means, global_mean = self._means_from_stats()
        return residual_fourth_moments(features, labels, means=means, global_mean=global_mean)

    # ---------------------------------------------------------------- scoring
    def score(self, features: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(md, rmd)`` as NumPy float64 arrays of shape (N,) (see :mod:`rmd_ray.core.scores`)."""
        md, md0 = self.score_parts(features, labels)
        return md, md - md0

    def score_parts(self, features: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(md, md0)``: label-conditional and class-agnostic squared distances, shape (N,).

        One (N, d) x (d, d) product with the discriminant shortcut (MD_0 = MD(f, y) - RMD), two without.
        """
        self._check_fitted()
        md, md0, _ = self._md_md0(*self._validated(features, labels))
        return to_numpy(md), to_numpy(md0)

    def distances(self, features: Any, labels: Any) -> Distances:
        """MD(f, y), MD_0(f) and MD(f, k) to every class, from one whitening product when the shortcut applies.

        Returns
        -------
        Distances
            ``md``, ``md0`` of shape (N,) and ``to_classes`` of shape (N, K), NumPy float64.
        """
        self._check_fitted()
        features, labels = self._validated(features, labels)
        md, md0, relative = self._md_md0(features, labels)
        if relative is None:
            return Distances(to_numpy(md), to_numpy(md0), self._class_distances(features))
        xp, rows = self._xp, self._xp.arange(labels.shape[0])
        offset = md - relative[rows, labels]  # q = ||A (f - mu_0)||^2
        to_classes = xp.maximum(offset[:, None] + relative, 0.0)
        to_classes[rows, labels] = md  # the direct difference, not the expansion, for the given class
        return Distances(to_numpy(md), to_numpy(md0), to_numpy(to_classes))

    def label_scores(self, features: Any, labels: Any) -> LabelScores:
        """RMD, the Mahalanobis margin and the nearest class, without any (N, d) x (d, d) product when the
        discriminant shortcut applies (O(N d K), module docstring of :mod:`rmd_ray.core.scores`).

        Returns
        -------
        LabelScores
            ``rmd``, ``margin`` (:func:`rmd_ray.core.scores.mahalanobis_margin`) of shape (N,) float64
            and ``nearest_class`` of shape (N,) int64, NumPy.
        """
        self._check_fitted()
        features, labels = self._validated(features, labels)
        if self._factor is None:
            to_classes = self._class_distances(features)
            md0 = to_numpy(mahalanobis_sq(features, self.global_mean_, self.global_whitening_))
            labels_np = to_numpy(labels)
            rmd = to_classes[np.arange(labels_np.shape[0]), labels_np] - md0
            return LabelScores(rmd, mahalanobis_margin(to_classes, labels_np), to_classes.argmin(axis=1))
        # The margin and the argmin are unchanged by the per-row shift q, so ``relative`` serves both.
        relative, gain = discriminant_distances(features, self.global_mean_, self._factor)
        return LabelScores(
            to_numpy(relative[self._xp.arange(labels.shape[0]), labels] + gain),
            to_numpy(mahalanobis_margin(relative, labels)),
            to_numpy(relative.argmin(axis=1)).astype(np.int64),
        )

    def kmeans_distance(self, features: Any, labels: Any) -> np.ndarray:
        """Squared Euclidean distance to the own class mean, shape (N,) (paper Table 8 baseline)."""
        self._check_fitted()
        features, labels = self._validated(features, labels)
        return to_numpy(kmeans_distance(features, labels, self.means_))

    def class_distances(self, features: Any) -> np.ndarray:
        """MD under the shared covariance from each sample to each class mean, shape (N, K)."""
        self._check_fitted()
        return self._class_distances(self._xp.asarray(check_features(features)))

    # ---------------------------------------------------------------- helpers
    def _md_md0(self, features: Any, labels: Any) -> tuple[Any, Any, Any]:
        """(MD(f, y), MD_0(f), relative class distances or None) on validated inputs, array-module arrays."""
        md = label_conditional_md(features, labels, self.means_, self.whitening_)
        if self._factor is None:
            return md, mahalanobis_sq(features, self.global_mean_, self.global_whitening_), None
        relative, gain = discriminant_distances(features, self.global_mean_, self._factor)
        rmd = relative[self._xp.arange(labels.shape[0]), labels] + gain
        return md, self._xp.maximum(md - rmd, 0.0), relative  # MD_0 >= 0 exactly: rounding must not flip it

    def _class_distances(self, features: Any) -> np.ndarray:
        # Shift by mu_0 first: the expansion ||z||^2 - 2 z.p + ||p||^2 cancels badly far from the origin.
        centred = features.astype(self._xp.float64) - self.global_mean_
        return to_numpy(class_distances(centred, self.means_ - self.global_mean_, self.whitening_))

    def weights(self, rmd: np.ndarray, *, config: WeightConfig = WeightConfig(), reference: Any = None) -> np.ndarray:
        """Per-sample weights s in (0, 1) from RMD; see :func:`rmd_ray.core.weights.difficulty_weights`."""
        return to_numpy(difficulty_weights(np.asarray(rmd, dtype=np.float64), config=config, reference=reference))

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike[str], *, provenance: dict[str, Any] | None = None) -> Path:
        """Write the fitted statistics to ``.npz`` atomically, with provenance metadata.

        Stored: the sufficient statistics (so a reload can merge more data), the config and
        ``{feature_dim, n_classes, shrinkage, package_version, ...provenance}``
        (:func:`rmd_ray.core.scorer_io.write_scorer`).
        """
        self._check_fitted()
        return write_scorer(
            path, self.stats_, n_classes=self.n_classes, covariance=self.covariance,
            fourth_moments=getattr(self, "_fourth", None), provenance=provenance,
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: str = "cpu") -> DifficultyScorer:
        """Load a scorer written by :meth:`save` (no pickle) and finalize it."""
        stats, meta = read_scorer(path)
        scorer = cls(n_classes=meta["n_classes"], covariance=CovarianceConfig(**meta["covariance"]), device=device)
        scorer.provenance_ = meta
        fourth = meta.get("fourth_moments")
        return scorer.merge(stats).finalize(fourth_moments=tuple(fourth) if fourth else None)

    def _validated(self, features: Any, labels: Any) -> tuple[Any, Any]:
        check_features(features)
        check_labels(labels, n_samples=features.shape[0], n_classes=self.n_classes)
        if self.stats_ is not None and features.shape[1] != self.stats_.n_features:
            raise ValueError(
                f"features have {features.shape[1]} dimensions but the scorer was fitted on "
                f"{self.stats_.n_features}; use the same encoder for fitting and scoring"
            )
        xp = self._xp
        return xp.asarray(features), xp.asarray(labels)

    def _accumulate(self, features: Any, labels: Any) -> None:
        part = batch_stats_unchecked(features, labels, self.n_classes)  # inputs already validated
        self.stats_ = part if self.stats_ is None else merge_stats(self.stats_, part)

    def _means_from_stats(self) -> tuple[Any, Any]:
        stats = self.stats_
        global_mean = class_agnostic_mean(stats)
        xp = array_module(stats.means)
        means = xp.where((stats.counts > 0)[:, None], stats.means, global_mean[None, :])
        return means, global_mean

    def _check_fitted(self) -> None:
        if not getattr(self, "_fitted", False):
            raise NotFittedError("this DifficultyScorer is not fitted: call fit(features, labels) first")

    def __repr__(self) -> str:
        state = f"fitted on {self.stats_.n_samples}" if self.stats_ is not None else "unfitted"
        return f"DifficultyScorer(n_classes={self.n_classes}, shrinkage={self.covariance.shrinkage!r}, {state})"


__all__ = ["DifficultyScorer", "NotFittedError", "empty_stats"]

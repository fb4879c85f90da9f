"""``DifficultyScorer``: a thin estimator over the stats / covariance / scores / weights functions."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from rmd_ray.core._xp import array_module, module_for_device, to_numpy
from rmd_ray.core.atomic import atomic_path
from rmd_ray.core.config import CovarianceConfig, WeightConfig
from rmd_ray.core.covariance import apply_shrinkage, whitening_matrix
from rmd_ray.core.scores import class_distances, kmeans_distance, label_conditional_md, mahalanobis_sq
from rmd_ray.core.stats import (
    ClassStats,
    _batch_stats,
    class_agnostic_covariance,
    class_agnostic_mean,
    empty_stats,
    merge_stats,
    residual_fourth_moments,
    within_class_covariance,
)
from rmd_ray.core.validation import check_class_counts, check_features, check_labels, check_n_classes
from rmd_ray.core.weights import difficulty_weights

FORMAT_VERSION = 1


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

    # ---------------------------------------------------------------- fitting
    def fit(self, features: Any, labels: Any) -> DifficultyScorer:
        """Fit on all features at once (two passes when ``shrinkage='ledoit_wolf'``); returns self."""
        features, labels = self._validated(features, labels)
        n, d = features.shape
        if self.covariance.shrinkage == "none":
            # The pooled within-class scatter has rank at most N - (non-empty classes), the class-agnostic
            # one N - 1: n > d is not enough (N = 12, d = 10, K = 4 gives every sample MD = 8).
            n_nonempty = int(to_numpy(self._xp.bincount(labels, minlength=self.n_classes) > 0).sum())
            within_rank, global_rank = _rank_bounds(n, n_nonempty)
            deficient = [
                f"the {name} covariance has rank at most {formula} = {rank} < d"
                for name, formula, rank in (
                    ("shared within-class", "N - classes", within_rank),
                    ("class-agnostic", "N - 1", global_rank),
                )
                if rank < d
            ]
            if deficient:
                raise ValueError(
                    f"{n} samples for {d} feature dimensions ({n_nonempty} non-empty classes): "
                    f"{' and '.join(deficient)} (singular). Pass CovarianceConfig(shrinkage='ledoit_wolf') "
                    f"(or 'oas'/'ridge'), or at least d + classes = {d + n_nonempty} samples"
                )
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
        within, within_fourth = within_class_covariance(stats), None
        total, total_fourth = class_agnostic_covariance(stats), None
        if fourth_moments is not None:
            within_fourth, total_fourth = fourth_moments
        cfg = self.covariance
        within, a_within = apply_shrinkage(
            within, method=cfg.shrinkage, n_samples=n, fourth_moment=within_fourth, ridge_eps=cfg.ridge_eps
        )
        total, a_total = apply_shrinkage(
            total, method=cfg.shrinkage, n_samples=n, fourth_moment=total_fourth, ridge_eps=cfg.ridge_eps
        )
        self.means_, self.global_mean_ = means, global_mean
        self.covariance_, self.global_covariance_ = within, total
        self.shrinkage_ = {"within": a_within, "global": a_total}
        # Shrinkage (a > 0) restores full rank; without it the rank bounds of the raw scatters hold, and
        # a covariance below full rank by construction is singular even where rounding hides it.
        within_rank, global_rank = _rank_bounds(n, int(to_numpy(stats.counts > 0).sum()))
        self.whitening_, s1 = whitening_matrix(
            within, rcond=cfg.rcond, what="shared within-class covariance",
            max_rank=within_rank if a_within == 0.0 else None,
        )
        self.global_whitening_, s0 = whitening_matrix(
            total, rcond=cfg.rcond, what="class-agnostic covariance",
            max_rank=global_rank if a_total == 0.0 else None,
        )
        self.singular_ = {"within": s1, "global": s0}
        self._fourth = list(fourth_moments) if fourth_moments is not None else None
        return self

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
        """Return ``(md, md0)``: label-conditional and class-agnostic squared distances, shape (N,)."""
        self._check_fitted()
        features, labels = self._validated(features, labels)
        md = label_conditional_md(features, labels, self.means_, self.whitening_)
        md0 = mahalanobis_sq(features, self.global_mean_, self.global_whitening_)
        return to_numpy(md), to_numpy(md0)

    def kmeans_distance(self, features: Any, labels: Any) -> np.ndarray:
        """Squared Euclidean distance to the own class mean, shape (N,) (paper Table 8 baseline)."""
        self._check_fitted()
        features, labels = self._validated(features, labels)
        return to_numpy(kmeans_distance(features, labels, self.means_))

    def class_distances(self, features: Any) -> np.ndarray:
        """MD under the shared covariance from each sample to each class mean, shape (N, K)."""
        self._check_fitted()
        features = self._xp.asarray(check_features(features))
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
        ``{feature_dim, n_classes, shrinkage, package_version, ...provenance}``.
        """
        self._check_fitted()
        from rmd_ray import __version__

        stats = self.stats_.to_numpy()
        meta = {
            "format_version": FORMAT_VERSION,
            "package_version": __version__,
            "feature_dim": stats.n_features,
            "n_classes": self.n_classes,
            "n_samples": stats.n_samples,
            "covariance": asdict(self.covariance),
            "fourth_moments": getattr(self, "_fourth", None),
            **(provenance or {}),
        }
        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"save path must end in .npz, got {path.name!r}")
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(
                fh, counts=stats.counts, means=stats.means, scatter=stats.scatter,
                meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
            )
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: str = "cpu") -> DifficultyScorer:
        """Load a scorer written by :meth:`save` (no pickle) and finalize it."""
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            stats = ClassStats(data["counts"], data["means"], data["scatter"])
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path} has format {meta.get('format_version')}, this version reads {FORMAT_VERSION}")
        scorer = cls(n_classes=meta["n_classes"], covariance=CovarianceConfig(**meta["covariance"]), device=device)
        scorer.provenance_ = meta
        fourth = meta.get("fourth_moments")
        return scorer.merge(stats).finalize(fourth_moments=tuple(fourth) if fourth else None)

    # ---------------------------------------------------------------- helpers
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
        part = _batch_stats(features, labels, self.n_classes)  # inputs already validated
        self.stats_ = part if self.stats_ is None else merge_stats(self.stats_, part)

    def _means_from_stats(self) -> tuple[Any, Any]:
        stats = self.stats_
        global_mean = class_agnostic_mean(stats)
        xp = array_module(stats.means)
        means = xp.where((stats.counts > 0)[:, None], stats.means, global_mean[None, :])
        return means, global_mean

    def _check_fitted(self) -> None:
        if getattr(self, "whitening_", None) is None:
            raise NotFittedError("this DifficultyScorer is not fitted: call fit(features, labels) first")

    def __repr__(self) -> str:
        state = f"fitted on {self.stats_.n_samples}" if self.stats_ is not None else "unfitted"
        return f"DifficultyScorer(n_classes={self.n_classes}, shrinkage={self.covariance.shrinkage!r}, {state})"


def _rank_bounds(n_samples: int, n_nonempty: int) -> tuple[int, int]:
    """Largest possible ranks of the within-class scatter (N - non-empty classes) and of the
    class-agnostic one (N - 1): each centring on a fitted mean removes one degree of freedom."""
    return n_samples - n_nonempty, n_samples - 1


__all__ = ["DifficultyScorer", "NotFittedError", "empty_stats"]

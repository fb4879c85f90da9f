"""The ``.npz`` file of a fitted ``DifficultyScorer``: written atomically, read back without pickle.

The file holds the sufficient statistics (``counts``, ``means``, ``scatter``: a reload can merge more
data) and a JSON ``meta`` record -- format version, package version, feature dimension, class and
sample counts, the covariance config, the ``ledoit_wolf`` fourth moments and the caller's provenance.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from rmd_ray.core.covariance import CovarianceConfig
from rmd_ray.core.stats import ClassStats
from rmd_ray.io.atomic import atomic_path

__all__ = ["FORMAT_VERSION", "read_scorer", "write_scorer"]

FORMAT_VERSION = 1


def write_scorer(
    path: str | os.PathLike[str],
    stats: ClassStats,
    *,
    n_classes: int,
    covariance: CovarianceConfig,
    fourth_moments: list[float] | None,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write a fitted scorer's statistics and metadata to ``path`` (must end in ``.npz``) atomically."""
    from rmd_ray import __version__

    stats = stats.to_numpy()
    meta = {
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "feature_dim": stats.n_features,
        "n_classes": n_classes,
        "n_samples": stats.n_samples,
        "covariance": asdict(covariance),
        "fourth_moments": fourth_moments,
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


def read_scorer(path: str | os.PathLike[str]) -> tuple[ClassStats, dict[str, Any]]:
    """The statistics and the ``meta`` record of a file written by :func:`write_scorer` (no pickle).

    Raises
    ------
    ValueError
        When the file's format version is not :data:`FORMAT_VERSION`.
    """
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(bytes(data["meta"]).decode())
        stats = ClassStats(data["counts"], data["means"], data["scatter"])
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} has format {meta.get('format_version')}, this version reads {FORMAT_VERSION}")
    return stats, meta

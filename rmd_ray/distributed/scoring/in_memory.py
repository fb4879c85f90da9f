"""Scoring a features table held in memory (Python use, tests, benchmarks that rescore a cache).

The streaming pipeline (:mod:`rmd_ray.distributed.scoring.run`) never holds the features on one
process; these helpers do, and exist for tables that fit: ``fit_and_score`` on a features table
with one row per (id, view), as benchmarks use to compare shrinkage options from one cache.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from rmd_ray.core import CovarianceConfig, DifficultyScorer, WeightConfig, difficulty_weights
from rmd_ray.core.array_api import module_for_device
from rmd_ray.core.scores import mahalanobis_margin
from rmd_ray.core.stats import batch_stats_unchecked, merge_all

__all__ = [
    "aggregate_views",
    "dataset_fingerprint",
    "feature_matrix",
    "fit_and_score",
    "score_with",
]

ERROR_SCHEMA = pa.schema([("id", pa.string()), ("label", pa.int64()), ("stage", pa.string()), ("reason", pa.string())])


def _split_blocks(table: pa.Table, blocks: int) -> list[pa.Table]:
    blocks = max(1, min(blocks, table.num_rows))
    bounds = np.linspace(0, table.num_rows, blocks + 1).astype(int)
    return [table.slice(a, b - a) for a, b in zip(bounds[:-1], bounds[1:])]


def feature_matrix(table: pa.Table) -> np.ndarray:
    """The ``features`` column of a features table as an (N, D) float32 array (zero-copy when possible)."""
    column = table.column("features").combine_chunks()
    dim = column.type.list_size
    return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)


# ------------------------------------------------------------------------------- stats and scoring tasks
@ray.remote
def _block_stats(block: pa.Table, n_classes: int) -> Any:
    xp = module_for_device("auto")  # CuPy when this task was given a GPU, NumPy otherwise
    # float64 here: the encoder dominates the run time, so the scatter GEMM can afford full precision
    # and the result does not depend on how rows fall into blocks beyond float64 rounding.
    features = xp.asarray(feature_matrix(block), dtype=xp.float64)
    labels = xp.asarray(block.column("label").to_numpy())
    return batch_stats_unchecked(features, labels, n_classes).to_numpy()


@ray.remote
def _block_fourth_moments(block: pa.Table, scorer: DifficultyScorer) -> tuple[float, float]:
    return scorer.fourth_moments(feature_matrix(block), block.column("label").to_numpy())


@ray.remote
def _block_scores(block: pa.Table, scorer: DifficultyScorer) -> pa.Table:
    features = feature_matrix(block)
    labels = block.column("label").to_numpy()
    md, md0, distances = scorer.distances(features, labels)
    nearest = distances.argmin(axis=1)
    return pa.table(
        {
            "id": block.column("id"),
            "view": block.column("view"),
            "label": block.column("label"),
            "md": md,
            "md0": md0,
            "kmeans": scorer.kmeans_distance(features, labels),
            "nearest_class": nearest.astype(np.int64),
            "nearest_md": distances[np.arange(len(nearest)), nearest],
            "margin": mahalanobis_margin(distances, labels),
        }
    )


def fit_and_score(
    features: pa.Table,
    *,
    n_classes: int,
    covariance: CovarianceConfig = CovarianceConfig(),
    blocks: int = 4,
    shuffle_blocks: int | None = None,
) -> tuple[DifficultyScorer, pa.Table]:
    """Fit the Gaussians from per-block statistics merged across blocks, then score every row.

    Parameters
    ----------
    features : pyarrow.Table
        A features table (``id``, ``view``, ``label``, ``features``; see
        :func:`rmd_ray.distributed.inference.stages.feature_column`).
    blocks : int
        Blocks the rows are split into; each block's statistics are computed by its own Ray task.
    shuffle_blocks : int, optional
        Seed to shuffle the block order before merging (results must not depend on it).

    Returns
    -------
    scorer : DifficultyScorer
    per_row : pyarrow.Table
        ``id, view, label, md, md0, kmeans, nearest_class, nearest_md, margin`` for every row, sorted by
        (id, view).
    """
    parts = _split_blocks(features, blocks)
    if shuffle_blocks is not None:
        random.Random(shuffle_blocks).shuffle(parts)
    refs = [ray.put(p) for p in parts]
    stats = merge_all(ray.get([_block_stats.remote(r, n_classes) for r in refs]))
    scorer = DifficultyScorer(n_classes=n_classes, covariance=covariance).merge(stats)
    fourth = None
    if covariance.shrinkage == "ledoit_wolf":
        scorer_ref = ray.put(scorer)
        fourth = tuple(np.sum(ray.get([_block_fourth_moments.remote(r, scorer_ref) for r in refs]), axis=0))
    scorer.finalize(fourth_moments=fourth)
    return scorer, _score_blocks(refs, scorer)


def _score_blocks(refs: list[Any], scorer: DifficultyScorer) -> pa.Table:
    scorer_ref = ray.put(scorer)
    scored = pa.concat_tables(ray.get([_block_scores.remote(r, scorer_ref) for r in refs]))
    return scored.sort_by([("id", "ascending"), ("view", "ascending")])


def score_with(features: pa.Table, scorer: DifficultyScorer, *, blocks: int = 4) -> pa.Table:
    """Score every row with an already-fitted scorer (e.g. a validation set, for the proxy test).

    Same output as :func:`fit_and_score`'s ``per_row``; the scorer's Gaussians are not refitted.
    """
    return _score_blocks([ray.put(p) for p in _split_blocks(features, blocks)], scorer)


def check_fitted_scorer(scorer: DifficultyScorer, *, encoder: str, resolution: int, classes: list[str]) -> None:
    """A scorer fitted on other features or classes would give meaningless distances: compare its provenance."""
    meta = getattr(scorer, "provenance_", None) or {}
    now = {"encoder": encoder, "resolution": resolution, "classes": classes}
    differ = [f"{k}: scorer {meta[k]!r} vs now {v!r}" for k, v in now.items() if k in meta and meta[k] != v]
    if differ:
        raise ValueError(
            f"the scorer was fitted on other features ({'; '.join(differ)}); score with the encoder and "
            "image size it was fitted with"
        )


def aggregate_views(per_row: pa.Table, *, n_views: int, weights: WeightConfig) -> pa.Table:
    """One row per id: md, md0, rmd averaged over views (per-view lists when n_views > 1) and the weight."""
    per_row = per_row.append_column("rmd", pc.subtract(per_row.column("md"), per_row.column("md0")))
    if n_views > 1:
        grouped = per_row.group_by(["id", "label"], use_threads=False).aggregate(
            [(c, "mean") for c in ("md", "md0", "rmd", "kmeans", "margin")]
            + [(c, "list") for c in ("md", "rmd")]
            + [("nearest_class", "min"), ("view", "count")]
        )
        table = pa.table(
            {
                "id": grouped["id"],
                "label": grouped["label"],
                "md": grouped["md_mean"],
                "md0": grouped["md0_mean"],
                "rmd": grouped["rmd_mean"],
                "kmeans": grouped["kmeans_mean"],
                "nearest_class": grouped["nearest_class_min"],
                "margin": grouped["margin_mean"],
                "md_views": grouped["md_list"],
                "rmd_views": grouped["rmd_list"],
            }
        ).sort_by("id")
    else:
        table = per_row.select(["id", "label", "md", "md0", "rmd", "kmeans", "nearest_class", "margin"])
    rmd = table.column("rmd").to_numpy()
    return table.append_column("weight", pa.array(difficulty_weights(rmd, config=weights)))


def dataset_fingerprint(table: pa.Table) -> str:
    """sha256 over the (id, label) pairs sorted by id: the same data gives the same fingerprint."""
    ordered = table.select(["id", "label"]).sort_by("id")
    digest = hashlib.sha256()
    for batch in ordered.to_batches(max_chunksize=65536):
        digest.update("\n".join(batch.column(0).to_pylist()).encode())
        digest.update(batch.column(1).to_numpy(zero_copy_only=False).astype(np.int64).tobytes())
    return digest.hexdigest()[:16]



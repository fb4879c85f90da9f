"""The Ray tasks of scoring passes 2-4 (fit, score, weigh), over features parts on any URI.

Kept apart from :mod:`rmd_ray.distributed.inference.pipeline` so that the workers running them import NumPy,
pyarrow and the core only, never torch: these tasks start in a fraction of a second.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from rmd_ray.core import CovarianceConfig, DifficultyScorer, WeightConfig, difficulty_weights
from rmd_ray.core.array_api import module_for_device
from rmd_ray.core.scores import mahalanobis_margin
from rmd_ray.core.stats import batch_stats_unchecked, merge_all, stats_from_bytes
from rmd_ray.distributed.scoring.in_memory import ERROR_SCHEMA, feature_matrix
from rmd_ray.io import storage
from rmd_ray.io.parts import stats_sidecar

__all__ = ["fit_scorer", "id_hashes", "view_mean_scores", "part_scores", "weigh_part", "copy_part"]

_MERGE_FAN_IN = 8


# ------------------------------------------------------------------------------- pass 2: fit (tasks)
def _ok_features(table: pa.Table, n_views: int) -> tuple[np.ndarray, np.ndarray, pa.Table]:
    """(n*V, D) float32 features and (n*V,) labels of the rows that embedded, and those rows."""
    ok = table.filter(pc.equal(table.column("error"), ""))
    flat = feature_matrix(ok) if ok.num_rows else np.zeros((0, table.column("features").type.list_size), np.float32)
    dim = flat.shape[1] // n_views
    labels = ok.column("label").to_numpy(zero_copy_only=False).astype(np.int64)
    return flat.reshape(-1, dim), np.repeat(labels, n_views), ok


@ray.remote
def _part_stats(uri: str, n_classes: int, n_views: int) -> Any:
    """A part's ClassStats: its sidecar, formed by the encoder actor that embedded it, else from its features."""
    sidecar = stats_sidecar(uri)
    if storage.exists(sidecar):
        stats, _ = stats_from_bytes(storage.read_bytes(sidecar))
        if stats.n_classes == n_classes:  # features cached by a run with another class count: recompute
            return stats
    features, labels, _ = _ok_features(storage.read_parquet(uri, columns=["label", "features", "error"]), n_views)
    xp = module_for_device("auto")  # CuPy when this task was given a GPU, NumPy otherwise
    # float64: the encoder dominates the run time; exact statistics do not depend on how rows fall into parts
    return batch_stats_unchecked(xp.asarray(features, dtype=xp.float64), xp.asarray(labels), n_classes).to_numpy()


@ray.remote
def _merge_stats(*parts: Any) -> Any:
    return merge_all(parts)


def _tree_merge(refs: list[Any]) -> Any:
    """Merge per-part statistics in a tree of tasks (fan-in 8): the driver receives one ClassStats."""
    while len(refs) > 1:
        refs = [_merge_stats.remote(*refs[i : i + _MERGE_FAN_IN]) for i in range(0, len(refs), _MERGE_FAN_IN)]
    return ray.get(refs[0])


@ray.remote
def _part_fourth_moments(uri: str, scorer: DifficultyScorer, n_views: int) -> tuple[float, float]:
    features, labels, _ = _ok_features(storage.read_parquet(uri, columns=["label", "features", "error"]), n_views)
    return scorer.fourth_moments(features, labels) if len(labels) else (0.0, 0.0)


def fit_scorer(
    parts: list[str], *, n_classes: int, n_views: int, covariance: CovarianceConfig
) -> DifficultyScorer:
    """Pass 2: the Gaussians from per-part statistics merged by a tree (plus the Ledoit-Wolf pass)."""
    stats = _tree_merge([_part_stats.remote(p, n_classes, n_views) for p in parts])
    if stats.n_samples == 0:
        raise ValueError("no row could be embedded (every row is in the errors table); nothing to fit")
    scorer = DifficultyScorer(n_classes=n_classes, covariance=covariance).merge(stats)
    fourth = None
    if covariance.shrinkage == "ledoit_wolf":
        scorer_ref = ray.put(scorer)
        moments = ray.get([_part_fourth_moments.remote(p, scorer_ref, n_views) for p in parts])
        fourth = tuple(np.sum(moments, axis=0))
    return scorer.finalize(fourth_moments=fourth)


# ----------------------------------------------------------------------------- pass 3: score (tasks)
#: Samples per block of the (samples * views, K) class-distance matrix: 2,048 x 1,000 classes x 8 bytes
#: is 16 MB per view, so memory stays flat in the part size whatever K.
CLASS_DISTANCE_CHUNK = 2048


def view_mean_scores(
    scorer: DifficultyScorer, features: np.ndarray, labels: np.ndarray, *, n_views: int,
    chunk: int = CLASS_DISTANCE_CHUNK,
) -> dict[str, np.ndarray]:
    """Per sample: MD and MD_0 per view, the nearest class and the Mahalanobis margin of the view-mean
    class distances.

    ``features`` is (n * V, D) with the V views of a sample consecutive; ``labels`` is (n,). The
    distances to all K classes are formed ``chunk`` samples at a time, never as one (n, K) matrix, and
    with one whitening product per chunk (:meth:`DifficultyScorer.distances`).
    Returns ``md``, ``md0`` (n, V) float64, ``nearest`` (n,) int64 and ``margin`` (n,) float64; margin > 0
    exactly when nearest != label (:func:`rmd_ray.core.scores.mahalanobis_margin`).
    """
    n = labels.shape[0]
    md, md0 = np.empty((n, n_views)), np.empty((n, n_views))
    nearest, margin = np.empty(n, dtype=np.int64), np.empty(n)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        rows = slice(start * n_views, stop * n_views)
        part = scorer.distances(features[rows], np.repeat(labels[start:stop], n_views))
        md[start:stop], md0[start:stop] = part.md.reshape(-1, n_views), part.md0.reshape(-1, n_views)
        d = part.to_classes.reshape(stop - start, n_views, -1).mean(axis=1)
        nearest[start:stop] = d.argmin(axis=1)
        margin[start:stop] = mahalanobis_margin(d, labels[start:stop])
    return {"md": md, "md0": md0, "nearest": nearest, "margin": margin}


def id_hashes(ids: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(
        [int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8).digest(), "little") for i in ids.to_pylist()],
        dtype=np.uint64,
    )


@ray.remote
def part_scores(
    uri: str, scorer: DifficultyScorer, n_views: int, staging: str, index: int, hash_ids: bool
) -> dict[str, Any]:
    table = storage.read_parquet(uri)
    features, labels, ok = _ok_features(table, n_views)
    n = ok.num_rows
    md = md0 = kmeans = np.zeros((n, n_views))
    nearest, margin = np.zeros(n, dtype=np.int64), np.zeros(n)
    if n:
        parts = view_mean_scores(scorer, features, labels[::n_views], n_views=n_views)
        md, md0, nearest, margin = parts["md"], parts["md0"], parts["nearest"], parts["margin"]
        kmeans = scorer.kmeans_distance(features, labels).reshape(n, n_views)
    rmd = md - md0
    columns = {
        "id": ok.column("id"),
        "label": ok.column("label"),
        "md": md.mean(axis=1),
        "md0": md0.mean(axis=1),
        "rmd": rmd.mean(axis=1),
        "kmeans": kmeans.mean(axis=1),
        "nearest_class": nearest.astype(np.int64),
        "margin": margin,
    }
    if n_views > 1:
        columns["md_views"] = pa.FixedSizeListArray.from_arrays(pa.array(md.reshape(-1)), n_views)
        columns["rmd_views"] = pa.FixedSizeListArray.from_arrays(pa.array(rmd.reshape(-1)), n_views)
    scores = pa.table(columns)
    bad = table.filter(pc.not_equal(table.column("error"), ""))
    errors = pa.table(
        {"id": bad.column("id"), "label": bad.column("label"), "stage": bad.column("stage"),
         "reason": bad.column("error")},
        schema=ERROR_SCHEMA,
    )
    storage.write_parquet_atomic(scores, storage.join(staging, f"scores-{index:06d}.parquet"))
    if errors.num_rows:
        storage.write_parquet_atomic(errors, storage.join(staging, f"errors-{index:06d}.parquet"))
    finite = rmd.mean(axis=1)
    if n and not np.isfinite(finite).all():
        raise FloatingPointError(f"{int((~np.isfinite(finite)).sum())} non-finite RMD in {uri}")
    return {
        "scored": n,
        "errors": errors.num_rows,
        "rmd_min": float(finite.min()) if n else np.inf,
        "rmd_max": float(finite.max()) if n else -np.inf,
        "hashes": id_hashes(table.column("id")) if hash_ids else None,
    }


# ----------------------------------------------------------------------------- pass 4: weigh (tasks)
@ray.remote
def weigh_part(staged: str, target: str, weights: WeightConfig, reference: tuple[float, float]) -> int:
    scores = storage.read_parquet(staged).replace_schema_metadata(None)
    if scores.num_rows:
        w = difficulty_weights(scores.column("rmd").to_numpy(), config=weights, reference=reference)
    else:
        w = np.zeros(0)
    storage.write_parquet_atomic(scores.append_column("weight", pa.array(w, pa.float64())), target)
    return scores.num_rows


@ray.remote
def copy_part(staged: str, target: str) -> int:
    table = storage.read_parquet(staged).replace_schema_metadata(None)
    storage.write_parquet_atomic(table, target)
    return table.num_rows



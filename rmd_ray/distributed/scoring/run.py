"""Distributed difficulty scoring on Ray, at any size: the driver holds statistics, never the data.

Passes over a source (every output is a directory of Parquet parts plus a manifest, on any URI)::

    1 embed   shards --read/decode (tasks)--> encoder actors --> features.parquet/ parts   (resumable)
    2 fit     features parts --ClassStats per part (tasks; CuPy on GPU)--> tree merge --> scorer
    3 score   features parts + scorer (broadcast once) --> md, md0, rmd per id (tasks) --> staged parts
    4 weigh   staged parts + global (min, max) RMD --> scores.parquet/ and errors.parquet/ parts

Every input row ends either in the scores or in the errors, never in neither and never twice:
``rows_in == rows_scored + rows_in_errors`` is checked after pass 3, before any output is published.
The encoder runs once; passes 2-4 stream the written features (docs/design.md section 7).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from rmd_ray import __version__
from rmd_ray.core import CovarianceConfig, DifficultyScorer, WeightConfig
from rmd_ray.core.weights import SET_RELATIVE
from rmd_ray.distributed.inference.pipeline import EmbedActor, EncoderSpec, ExtractConfig, embed_source, feature_column
from rmd_ray.distributed.scoring.in_memory import (
    ERROR_SCHEMA,
    _check_fitted_scorer,
    aggregate_views,
    dataset_fingerprint,
    feature_matrix,
    fit_and_score,
    score_with,
)
from rmd_ray.distributed.scoring.passes import copy_part, fit_scorer, id_hashes, part_scores, weigh_part
from rmd_ray.distributed.sources.plan import DEFAULT_SHARD_ROWS, ShardedSource, open_source, source_from_table
from rmd_ray.io import storage
from rmd_ray.io.parts import part_uris, read_table_metadata, write_manifest

log = logging.getLogger("rmd_ray.scoring")

__all__ = [
    "EmbedActor",
    "EncoderSpec",
    "ExtractConfig",
    "ScoringResult",
    "aggregate_views",
    "dataset_fingerprint",
    "feature_column",
    "feature_matrix",
    "fit_and_score",
    "run_scoring",
    "score_with",
]

@dataclass(frozen=True)
class ScoringResult:
    """Where the outputs are (URIs) and how every input row was accounted for."""

    scores_path: str
    errors_path: str
    features_path: str | None
    scorer_path: str
    rows_in: int
    rows_scored: int
    rows_error: int
    seconds: dict[str, float] = field(default_factory=dict)
    nodes: tuple[str, ...] = ()
    shards_reused: int = 0


# ------------------------------------------------------------------------------- publishing outputs
def _staging_dir(output_dir: str, name: str, attempt: str) -> str:
    """Where a parts directory is written before it is published (a hidden sibling, locally)."""
    if storage.is_remote(output_dir):
        final = storage.join(output_dir, name)
        storage.delete(final)  # an object store has no rename: parts go in place, the manifest commits
        return final
    return storage.join(output_dir, f".{name}.{attempt}")


def _publish(output_dir: str, name: str, written: str) -> str:
    """Make ``written`` the output ``name``: a rename locally (readers see the old or the new one)."""
    final = storage.join(output_dir, name)
    if written == final:
        return final
    old = storage.join(output_dir, f".{name}.old-{uuid.uuid4().hex[:8]}")
    if os.path.lexists(final):
        os.replace(final, old)
    os.replace(written, final)
    storage.delete(old)
    return final


def _write_parts_dir(
    output_dir: str, name: str, attempt: str, tasks: Callable[[str], list[Any]], metadata: dict[str, Any]
) -> str:
    target = _staging_dir(output_dir, name, attempt)
    storage.makedirs(target)
    rows = ray.get(tasks(target))
    parts = [f"part-{i:05d}.parquet" for i in range(len(rows))]
    write_manifest(target, parts, rows=sum(rows), metadata=metadata)
    return _publish(output_dir, name, target)


def _save_scorer(scorer: DifficultyScorer, uri: str, provenance: dict[str, Any]) -> str:
    if not storage.is_remote(uri):
        return str(scorer.save(storage.resolve(uri)[1], provenance=provenance))
    with tempfile.TemporaryDirectory() as tmp:
        local = scorer.save(os.path.join(tmp, "scorer.npz"), provenance=provenance)
        storage.write_bytes_atomic(uri, local.read_bytes())
    return uri


def _load_scorer(scorer: DifficultyScorer | str | os.PathLike[str]) -> DifficultyScorer:
    if isinstance(scorer, DifficultyScorer):
        return scorer
    uri = str(scorer)
    if not storage.is_file(uri):
        raise ValueError(f"scorer file {uri!r} not found; pass the scorer.npz of a `rmd-ray score` run")
    if not storage.is_remote(uri):
        return DifficultyScorer.load(storage.resolve(uri)[1])
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "scorer.npz")
        with open(local, "wb") as fh:
            fh.write(storage.read_bytes(uri))
        return DifficultyScorer.load(local)


# -------------------------------------------------------------------------------------------- the job
def _cached_features(
    cache: str, *, output_dir: str, source: ShardedSource, encoder: str, resolution: int, n_views: int,
    feature_dim: int,
) -> tuple[str, dict[str, Any]]:
    """Validate a ``--features-cache`` (a features directory, or the single file older versions wrote)."""
    cache = str(cache)
    if not storage.exists(cache):
        raise ValueError(f"features cache {cache!r} not found; run without --features-cache once to create it")
    meta = read_table_metadata(cache)
    if not storage.is_dir(cache):
        cache, meta = _convert_single_file_cache(cache, meta, output_dir=output_dir, n_views=n_views)
    expected = {"encoder": encoder, "n_views": n_views, "resolution": resolution}
    if "plan" in meta:
        expected["plan"] = source.plan_fingerprint()
    mismatched = {k: (meta.get(k), v) for k, v in expected.items() if meta.get(k) != v}
    if mismatched:
        detail = ", ".join(f"{k}: cache {a!r} vs now {b!r}" for k, (a, b) in mismatched.items())
        raise ValueError(
            f"features cache {cache!r} was made for other inputs ({detail}); drop --features-cache to re-embed"
        )
    return cache, {**meta, "feature_dim": meta.get("feature_dim", feature_dim)}


def _convert_single_file_cache(path: str, meta: dict, *, output_dir: str, n_views: int) -> tuple[str, dict]:
    """A features file of rmd-ray <= 0.1 (one row per (id, view), CIFAR-scale) -> a one-part directory."""
    table = storage.read_parquet(path).sort_by([("id", "ascending"), ("view", "ascending")])
    views = int(meta.get("n_views", 1))
    feats = feature_matrix(table).reshape(table.num_rows // views, -1)
    ids = table.column("id").take(pa.array(np.arange(0, table.num_rows, views)))
    labels = table.column("label").take(pa.array(np.arange(0, table.num_rows, views)))
    decode_errors = pa.Table.from_pylist(meta.get("decode_errors", []), schema=ERROR_SCHEMA)
    ok = pa.table({"id": ids, "label": labels, "shard": pa.array(np.zeros(len(ids), np.int64)),
                   "features": feature_column(feats), "error": pa.array([""] * len(ids)),
                   "stage": pa.array([""] * len(ids))})
    bad = pa.table({"id": decode_errors.column("id"), "label": decode_errors.column("label"),
                    "shard": pa.array(np.zeros(decode_errors.num_rows, np.int64)),
                    "features": feature_column(np.zeros((decode_errors.num_rows, feats.shape[1]), np.float32)),
                    "error": decode_errors.column("reason"), "stage": decode_errors.column("stage")})
    target = storage.join(output_dir, "features.converted.parquet")
    storage.write_parquet_atomic(pa.concat_tables([ok, bad]), storage.join(target, "part-00000.parquet"))
    meta = {**meta, "rows": ok.num_rows + bad.num_rows, "feature_dim": feats.shape[1] // max(views, 1)}
    write_manifest(target, ["part-00000.parquet"], rows=meta["rows"], metadata=meta)
    return target, meta


def run_scoring(
    source: str | ShardedSource | pa.Table,
    *,
    output_dir: str | os.PathLike[str],
    encoder: EncoderSpec = EncoderSpec(),
    extract: ExtractConfig = ExtractConfig(),
    covariance: CovarianceConfig = CovarianceConfig(),
    weights: WeightConfig = WeightConfig(),
    n_classes: int | None = None,
    features_cache: str | os.PathLike[str] | None = None,
    scorer: DifficultyScorer | str | os.PathLike[str] | None = None,
    limit: int | None = None,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    fresh: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ScoringResult:
    """Score every row of a source; write ``scores.parquet/``, ``errors.parquet/``, ``features.parquet/``
    (parts directories) and ``scorer.npz`` under ``output_dir`` (a local path or any filesystem URI).

    Parameters
    ----------
    source : str, ShardedSource or pyarrow.Table
        A source spec (see :func:`rmd_ray.distributed.sources.plan.open_source`), a planned source, or an
        in-memory reader table (:func:`rmd_ray.data.readers.from_arrays`).
    features_cache : URI, optional
        The ``features.parquet`` of an earlier run on the same data: skip embedding, so rescoring
        with another T, normalisation or shrinkage does not re-embed.
    scorer : DifficultyScorer or URI, optional
        A fitted scorer (the ``scorer.npz`` of a training-set run): nothing is fitted and the rows
        are scored under its Gaussians (the difficulty proxy test needs this for a validation set).
        ``covariance`` is then ignored; its encoder, resolution and classes must match.
    limit : int, optional
        Score only the first ``limit`` rows of a source spec.
    shard_rows : int
        Rows per shard, the unit of resumption (Parquet row groups and class directories are never split).
    fresh : bool
        Ignore features a killed run left in ``output_dir`` (default: resume from them).
    progress : callable, optional
        ``progress(rows_embedded, rows_total)`` as pass 1 goes.
    """
    output_dir = str(output_dir)
    if weights.normalization in SET_RELATIVE:
        # parts are weighted independently against the global (min, max); ranks would need one global sort
        raise ValueError(
            f"{weights.normalization} normalisation is not available when scoring (each part is weighted against "
            "the global range); "
            "score with normalization='minmax' and rank the weights where they are used: rmd-ray train "
            "--difficulty rmd --normalization rank, or a Tune space's normalization"
        )
    timings: dict[str, float] = {}
    if isinstance(source, pa.Table):
        source = source_from_table(source, shard_rows=shard_rows)
    elif isinstance(source, str):
        source = open_source(source, limit=limit, shard_rows=shard_rows)
    fitted = None if scorer is None else _load_scorer(scorer)
    # Build the encoder once on the driver: a bad name or checkpoint fails before any Ray stage, and
    # the provenance records the resolution actually used.
    built = encoder.build()
    resolution, feature_dim = built.image_size, built.feature_dim
    del built
    classes = list(source.classes)
    if fitted is not None:
        _check_fitted_scorer(fitted, encoder=encoder.name, resolution=resolution, classes=classes)
        covariance, n_classes = fitted.covariance, fitted.n_classes
    n_classes = n_classes or len(classes)
    storage.makedirs(output_dir)
    attempt = uuid.uuid4().hex[:12]

    start = time.perf_counter()
    embedded = None
    if features_cache is not None:
        features_dir, feature_meta = _cached_features(
            str(features_cache), output_dir=output_dir, source=source, encoder=encoder.name,
            resolution=resolution, n_views=extract.n_views, feature_dim=feature_dim,
        )
    else:
        features_dir = storage.join(output_dir, "features.parquet")
        embedded = embed_source(
            source, features_dir=features_dir, encoder=encoder, extract=extract, resolution=resolution,
            feature_dim=feature_dim, fresh=fresh, progress=progress,
        )
        feature_meta = embedded.metadata
    parts = part_uris(features_dir)
    timings["extract"] = time.perf_counter() - start

    start = time.perf_counter()
    fitted_on = None
    if fitted is None:
        fitted = fit_scorer(parts, n_classes=n_classes, n_views=extract.n_views, covariance=covariance)
    else:
        fitted_on = (getattr(fitted, "provenance_", None) or {}).get("dataset_fingerprint", "unknown")
    timings["fit"] = time.perf_counter() - start

    start = time.perf_counter()
    staging = storage.join(output_dir, f"_staging-{attempt}")
    scorer_ref = ray.put(fitted)
    hash_ids = not source.ids_unique_by_construction
    scored = ray.get([
        part_scores.remote(p, scorer_ref, extract.n_views, staging, i, hash_ids) for i, p in enumerate(parts)
    ])
    rows_in = int(feature_meta.get("rows", 0)) if features_cache is None else source.n_rows
    rows_scored = sum(s["scored"] for s in scored)
    rows_error = sum(s["errors"] for s in scored)
    if rows_in != rows_scored + rows_error:  # the accounting invariant: nothing is lost without a record
        storage.delete(staging)
        raise RuntimeError(f"row accounting broken: {rows_in} in, {rows_scored} scored, {rows_error} errors")
    if hash_ids:
        _check_unique_ids([s["hashes"] for s in scored], parts)
    if rows_scored == 0:
        storage.delete(staging)
        raise ValueError("no row could be scored: every row is in the errors table (see its reasons)")
    reference = (min(s["rmd_min"] for s in scored), max(s["rmd_max"] for s in scored))
    timings["score"] = time.perf_counter() - start

    start = time.perf_counter()
    fingerprint = feature_meta.get("dataset_fingerprint", "unknown")
    metadata = {
        "encoder": encoder.name,
        "checkpoint": encoder.checkpoint,
        "resolution": resolution,
        "feature_dim": feature_dim,
        "n_views": extract.n_views,
        "temperature": weights.temperature,
        "c": weights.c,
        "normalization": weights.normalization,
        "shrinkage": fitted.covariance.shrinkage,
        "shrinkage_coefficients": fitted.shrinkage_,
        "n_classes": n_classes,
        "classes": classes,
        "dataset_fingerprint": fingerprint,
        "scorer_fitted_on": fitted_on or fingerprint,  # another dataset's fingerprint for validation scores
        "source": source.description,
        "package_version": __version__,
        "rows_in": rows_in,
        "rows_scored": rows_scored,
        "rows_error": rows_error,
        "rmd_range": list(reference),
        "nodes": list(embedded.nodes) if embedded else [],
    }
    scores_path = _write_parts_dir(
        output_dir, "scores.parquet", attempt,
        lambda target: [
            weigh_part.remote(storage.join(staging, f"scores-{i:06d}.parquet"),
                              storage.join(target, f"part-{i:05d}.parquet"), weights, reference)
            for i in range(len(scored))
        ],
        metadata,
    )
    with_errors = [i for i, s in enumerate(scored) if s["errors"]]
    errors_path = _write_parts_dir(
        output_dir, "errors.parquet", attempt,
        lambda target: [
            copy_part.remote(storage.join(staging, f"errors-{i:06d}.parquet"),
                              storage.join(target, f"part-{n:05d}.parquet"))
            for n, i in enumerate(with_errors)
        ],
        metadata,
    )
    storage.delete(staging)
    provenance_keys = ("encoder", "resolution", "n_views", "dataset_fingerprint", "classes")
    provenance = {k: metadata[k] for k in provenance_keys}
    if fitted_on is not None:  # a given scorer keeps the record of the data it was fitted on
        provenance.update({k: v for k, v in (fitted.provenance_ or {}).items() if k in provenance_keys})
    scorer_path = _save_scorer(fitted, storage.join(output_dir, "scorer.npz"), provenance)
    timings["write"] = time.perf_counter() - start
    return ScoringResult(
        scores_path, errors_path, features_dir if features_cache is None else None, scorer_path,
        rows_in, rows_scored, rows_error, timings,
        nodes=embedded.nodes if embedded else (), shards_reused=embedded.shards_done_before if embedded else 0,
    )


def _check_unique_ids(hashes: list[np.ndarray], parts: list[str]) -> None:
    """Ids are join keys downstream: a source whose ids repeat is an error that names one."""
    every = np.concatenate([h for h in hashes if h is not None]) if hashes else np.zeros(0, np.uint64)
    values, counts = np.unique(every, return_counts=True)
    repeated = set(values[counts > 1].tolist())
    if not repeated:
        return
    for part in parts:
        ids = storage.read_parquet(part, columns=["id"]).column("id")
        for image_id, h in zip(ids.to_pylist(), id_hashes(ids)):
            if int(h) in repeated:
                raise ValueError(f"duplicate ids in the source (e.g. {image_id!r}); ids must be unique")
    raise ValueError(f"{len(repeated)} ids occur more than once in the source; ids must be unique")

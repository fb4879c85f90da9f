"""Distributed difficulty scoring on Ray, at any size: the driver holds statistics, never the data.

Passes over a source (every output is a directory of Parquet parts plus a manifest, on any URI)::

    1 embed   shards --read/decode (tasks)--> encoder actors --> features.parquet/ parts   (resumable)
    2 fit     ClassStats per part (sidecars the encoder actors formed; else tasks) --> tree merge --> scorer
    3 score   features parts + scorer (broadcast once) --> md, md0, rmd per id (tasks) --> staged parts
    4 weigh   staged parts + global (min, max) RMD --> scores.parquet/ and errors.parquet/ parts

Every input row ends either in the scores or in the errors, never in neither and never twice:
``rows_in == rows_scored + rows_in_errors`` is checked after pass 3, before any output is published.
The encoder runs once; passes 2-4 stream the written features (docs/design.md section 7).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa
import ray

from rmd_ray import __version__
from rmd_ray.core import CovarianceConfig, DifficultyScorer, WeightConfig
from rmd_ray.core.weights import SET_RELATIVE
from rmd_ray.distributed.inference.pipeline import EmbedActor, EncoderSpec, ExtractConfig, embed_source, feature_column
from rmd_ray.distributed.scoring.in_memory import (
    aggregate_views,
    check_fitted_scorer,
    dataset_fingerprint,
    feature_matrix,
    fit_and_score,
    score_with,
)
from rmd_ray.distributed.scoring.outputs import (
    cached_features,
    check_unique_ids,
    load_scorer,
    save_scorer,
    write_parts_dir,
)
from rmd_ray.distributed.scoring.passes import copy_part, fit_scorer, part_scores, weigh_part
from rmd_ray.distributed.sources.census import check_census, label_census
from rmd_ray.distributed.sources.plan import DEFAULT_SHARD_ROWS, ShardedSource, open_source, source_from_table
from rmd_ray.io import storage
from rmd_ray.io.parts import part_uris

log = logging.getLogger("rmd_ray.scoring")

__all__ = [
    "EmbedActor",
    "EncoderSpec",
    "ExtractConfig",
    "ScoringResult",
    "aggregate_views",
    "clear_staging",
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
    shards_changed: int = 0


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
    _check_normalization(weights)
    if isinstance(source, pa.Table):
        source = source_from_table(source, shard_rows=shard_rows)
    elif isinstance(source, str):
        source = open_source(source, limit=limit, shard_rows=shard_rows)
    source = _with_class_count(source, n_classes)
    setup = _setup(source, encoder=encoder, scorer=scorer, covariance=covariance, n_classes=n_classes)
    if setup.fitted is None:  # fitting Gaussians: the labels must make sense before the encoder runs
        check_census(label_census(source), source, limit=limit)
    storage.makedirs(output_dir)
    clear_staging(output_dir)  # what a killed run left: never read, only in the way
    attempt, timings = uuid.uuid4().hex[:12], {}
    with _timed(timings, "extract"):
        features_dir, feature_meta, embedded = _embed(source, setup, output_dir=output_dir, encoder=encoder,
                                                      extract=extract, features_cache=features_cache, fresh=fresh,
                                                      progress=progress)
        parts = part_uris(features_dir)
    with _timed(timings, "fit"):
        fitted, fitted_on = setup.fitted, None
        if fitted is None:
            fitted = fit_scorer(parts, n_classes=setup.n_classes, n_views=extract.n_views, covariance=setup.covariance)
        else:
            fitted_on = (getattr(fitted, "provenance_", None) or {}).get("dataset_fingerprint", "unknown")
    rows_in = int(feature_meta.get("rows", 0)) if features_cache is None else source.n_rows
    with _timed(timings, "score"):
        staging = storage.join(output_dir, f"_staging-{attempt}")
        scored = _score_parts(parts, fitted, staging, rows_in=rows_in, n_views=extract.n_views,
                              hash_ids=not source.ids_unique_by_construction)
    with _timed(timings, "write"):
        metadata = _provenance(source, setup, fitted, scored, feature_meta, embedded, encoder=encoder,
                               extract=extract, weights=weights, fitted_on=fitted_on, rows_in=rows_in)
        scores_path, errors_path = _publish_outputs(output_dir, attempt, staging, scored, weights, metadata)
        scorer_path = _save_fitted(fitted, output_dir, metadata, fitted_on=fitted_on)
    return ScoringResult(
        scores_path, errors_path, features_dir if features_cache is None else None, scorer_path,
        rows_in, metadata["rows_scored"], metadata["rows_error"], timings,
        nodes=embedded.nodes if embedded else (), shards_reused=embedded.shards_done_before if embedded else 0,
        shards_changed=embedded.shards_changed if embedded else 0,
    )


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[stage] = time.perf_counter() - start


def _check_normalization(weights: WeightConfig) -> None:
    if weights.normalization in SET_RELATIVE:
        # parts are weighted independently against the global (min, max); ranks would need one global sort
        raise ValueError(
            f"{weights.normalization} normalisation is not available when scoring (each part is weighted against "
            f"the global range); score with normalization='minmax' and apply {weights.normalization} where the "
            f"weights are used: rmd-ray train --difficulty rmd --normalization {weights.normalization}, or a Tune "
            "space's normalization"
        )


def _with_class_count(source: ShardedSource, n_classes: int | None) -> ShardedSource:
    """The source with ``n_classes`` classes when it names none (its count was inferred from its labels)."""
    if n_classes is None or not source.classes_inferred:
        return source
    if n_classes < 2:
        raise ValueError(f"--num-classes must be >= 2, got {n_classes}")
    return replace(source, classes=tuple(str(k) for k in range(n_classes)), classes_inferred=False)


@dataclass(frozen=True)
class _Setup:
    """What is fixed before embedding: a given scorer, the encoder's resolution and width, the classes."""

    fitted: DifficultyScorer | None
    resolution: int
    feature_dim: int
    classes: list[str]
    covariance: CovarianceConfig
    n_classes: int


def _setup(source: ShardedSource, *, encoder, scorer, covariance, n_classes) -> _Setup:
    fitted = None if scorer is None else load_scorer(scorer)
    # Build the encoder once on the driver: a bad name or checkpoint fails before any Ray stage, and
    # the provenance records the resolution actually used.
    built = encoder.build()
    resolution, feature_dim = built.image_size, built.feature_dim
    del built
    classes = list(source.classes)
    if fitted is not None:
        check_fitted_scorer(fitted, encoder=encoder.name, resolution=resolution, classes=classes)
        covariance, n_classes = fitted.covariance, fitted.n_classes
    return _Setup(fitted, resolution, feature_dim, classes, covariance, n_classes or len(classes))


def _embed(source, setup: _Setup, *, output_dir, encoder, extract, features_cache, fresh, progress):
    """(features directory, its metadata, the embedding result or None when a cache is used)."""
    if features_cache is not None:
        features_dir, meta = cached_features(
            str(features_cache), source=source, encoder=encoder.name, resolution=setup.resolution,
            n_views=extract.n_views, feature_dim=setup.feature_dim,
        )
        return features_dir, meta, None
    features_dir = storage.join(output_dir, "features.parquet")
    embedded = embed_source(
        source, features_dir=features_dir, encoder=encoder, extract=extract, resolution=setup.resolution,
        feature_dim=setup.feature_dim, fresh=fresh, progress=progress,
        stats_classes=setup.n_classes if setup.fitted is None else None,
    )
    return features_dir, embedded.metadata, embedded


def _score_parts(parts, fitted, staging: str, *, rows_in: int, n_views: int, hash_ids: bool) -> list[dict]:
    """Score every part into ``staging``; check the accounting (every row scored or in the errors) and ids."""
    scorer_ref = ray.put(fitted)
    scored = ray.get([part_scores.remote(p, scorer_ref, n_views, staging, i, hash_ids) for i, p in enumerate(parts)])
    rows_scored = sum(s["scored"] for s in scored)
    rows_error = sum(s["errors"] for s in scored)
    if rows_in != rows_scored + rows_error:  # the accounting invariant: nothing is lost without a record
        storage.delete(staging)
        raise RuntimeError(f"row accounting broken: {rows_in} in, {rows_scored} scored, {rows_error} errors")
    if hash_ids:
        check_unique_ids([s["hashes"] for s in scored], parts)
    if rows_scored == 0:
        storage.delete(staging)
        raise ValueError("no row could be scored: every row is in the errors table (see its reasons)")
    return scored


def _provenance(source, setup: _Setup, fitted, scored, feature_meta, embedded, *, encoder, extract, weights,
                fitted_on, rows_in) -> dict[str, Any]:
    """The manifest metadata of ``scores.parquet/`` and ``errors.parquet/``."""
    fingerprint = feature_meta.get("dataset_fingerprint", "unknown")
    return {
        "encoder": encoder.name, "checkpoint": encoder.checkpoint, "resolution": setup.resolution,
        "feature_dim": setup.feature_dim, "n_views": extract.n_views, "temperature": weights.temperature,
        "c": weights.c, "normalization": weights.normalization, "shrinkage": fitted.covariance.shrinkage,
        "shrinkage_coefficients": fitted.shrinkage_, "n_classes": setup.n_classes, "classes": setup.classes,
        "dataset_fingerprint": fingerprint,
        "scorer_fitted_on": fitted_on or fingerprint,  # another dataset's fingerprint for validation scores
        "source": source.description, "package_version": __version__, "rows_in": rows_in,
        "rows_scored": sum(s["scored"] for s in scored), "rows_error": sum(s["errors"] for s in scored),
        "rmd_range": [min(s["rmd_min"] for s in scored), max(s["rmd_max"] for s in scored)],
        "nodes": list(embedded.nodes) if embedded else [],
    }


def clear_staging(output_dir: str) -> list[str]:
    """Delete the ``_staging-*`` folders a killed scoring run left in ``output_dir``; return them.

    Staged scores are an intermediate of one attempt, published into ``scores.parquet/`` and then
    deleted: one still there belongs to an attempt that died, and nothing ever reads it.
    """
    stale = [d for d in storage.list_dirs(output_dir) if storage.basename(d).startswith("_staging-")]
    for folder in stale:
        storage.delete(folder)
    return stale


def _publish_outputs(output_dir, attempt, staging, scored, weights, metadata) -> tuple[str, str]:
    """Weigh the staged scores against the global RMD range into ``scores.parquet/``; copy the errors."""
    reference = tuple(metadata["rmd_range"])
    scores_path = write_parts_dir(
        output_dir, "scores.parquet", attempt,
        lambda target: [
            weigh_part.remote(storage.join(staging, f"scores-{i:06d}.parquet"),
                              storage.join(target, f"part-{i:05d}.parquet"), weights, reference)
            for i in range(len(scored))
        ],
        metadata,
    )
    with_errors = [i for i, s in enumerate(scored) if s["errors"]]
    errors_path = write_parts_dir(
        output_dir, "errors.parquet", attempt,
        lambda target: [
            copy_part.remote(storage.join(staging, f"errors-{i:06d}.parquet"),
                             storage.join(target, f"part-{n:05d}.parquet"))
            for n, i in enumerate(with_errors)
        ],
        metadata,
    )
    storage.delete(staging)
    return scores_path, errors_path


def _save_fitted(fitted, output_dir: str, metadata: dict[str, Any], *, fitted_on) -> str:
    provenance_keys = ("encoder", "resolution", "n_views", "dataset_fingerprint", "classes")
    provenance = {k: metadata[k] for k in provenance_keys}
    if fitted_on is not None:  # a given scorer keeps the record of the data it was fitted on
        provenance.update({k: v for k, v in (fitted.provenance_ or {}).items() if k in provenance_keys})
    return save_scorer(fitted, storage.join(output_dir, "scorer.npz"), provenance)

"""Scoring's outputs: parts directories published atomically, the scorer saved and loaded on any URI, a
features cache checked against the inputs, and the duplicate-id check over the scored parts."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import ray

from rmd_ray.core import DifficultyScorer
from rmd_ray.distributed.inference.resume import load_records, stale_records
from rmd_ray.distributed.scoring.passes import id_hashes
from rmd_ray.distributed.sources.plan import ShardedSource
from rmd_ray.io import storage
from rmd_ray.io.parts import read_table_metadata, write_manifest

__all__ = ["cached_features", "check_unique_ids", "load_scorer", "save_scorer", "write_parts_dir"]


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


def write_parts_dir(
    output_dir: str, name: str, attempt: str, tasks: Callable[[str], list[Any]], metadata: dict[str, Any]
) -> str:
    """Run ``tasks(target)`` (Ray refs, each returning its part's rows), write the manifest, publish ``name``."""
    target = _staging_dir(output_dir, name, attempt)
    storage.makedirs(target)
    rows = ray.get(tasks(target))
    parts = [f"part-{i:05d}.parquet" for i in range(len(rows))]
    write_manifest(target, parts, rows=sum(rows), metadata=metadata)
    return _publish(output_dir, name, target)


def save_scorer(scorer: DifficultyScorer, uri: str, provenance: dict[str, Any]) -> str:
    """Save ``scorer`` (npz) to a local path or URI; returns where it went."""
    if not storage.is_remote(uri):
        return str(scorer.save(storage.resolve(uri)[1], provenance=provenance))
    with tempfile.TemporaryDirectory() as tmp:
        local = scorer.save(os.path.join(tmp, "scorer.npz"), provenance=provenance)
        storage.write_bytes_atomic(uri, local.read_bytes())
    return uri


def load_scorer(scorer: DifficultyScorer | str | os.PathLike[str]) -> DifficultyScorer:
    """A fitted scorer as given, or loaded from a local path or URI (ValueError when the file is missing)."""
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


def cached_features(
    cache: str, *, source: ShardedSource, encoder: str, resolution: int, n_views: int,
    feature_dim: int,
) -> tuple[str, dict[str, Any]]:
    """Validate a ``--features-cache``: the ``features.parquet/`` directory of an earlier run on the same data."""
    cache = str(cache)
    if not storage.exists(cache):
        raise ValueError(f"features cache {cache!r} not found; run without --features-cache once to create it")
    if not storage.is_dir(cache):
        raise ValueError(
            f"features cache {cache!r} is a file; pass the features.parquet/ directory an `rmd-ray score` run "
            "wrote (or drop --features-cache to re-embed)"
        )
    meta = read_table_metadata(cache)
    expected = {"encoder": encoder, "n_views": n_views, "resolution": resolution}
    if "plan" in meta:
        expected["plan"] = source.plan_fingerprint()
    mismatched = {k: (meta.get(k), v) for k, v in expected.items() if meta.get(k) != v}
    changed = stale_records(load_records(cache), source)
    if changed:
        mismatched["content"] = (f"{len(changed)} shards embedded from other bytes", "the source as it is now")
    if mismatched:
        detail = ", ".join(f"{k}: cache {a!r} vs now {b!r}" for k, (a, b) in mismatched.items())
        raise ValueError(
            f"features cache {cache!r} was made for other inputs ({detail}); drop --features-cache to re-embed"
        )
    return cache, {**meta, "feature_dim": meta.get("feature_dim", feature_dim)}


def check_unique_ids(hashes: list[np.ndarray], parts: list[str]) -> None:
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

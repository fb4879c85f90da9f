"""Lazy, sharded image sources: the driver plans shards, Ray tasks read them.

A *shard* is the unit that is read, embedded, written and recorded as done: a group of Parquet row
groups, one WebDataset tar, a run of ``shard_rows`` files of an ImageFolder (cut across class
directories), a range of an ImageNet validation label file, or a slice of an in-memory table. The
driver holds only the plan (a few numbers per shard); image bytes, file listings and label files are
read inside tasks, where the work runs (docs/design.md section 7).

Every shard is read into the reader-table format of :mod:`rmd_ray.data.readers` (``id``, ``label``,
one image column) plus ``shard`` and ``shard_rows`` columns, so a stage further down can tell when
every row of a shard has been written.

Why not ``ray.data.read_parquet`` / ``read_binary_files`` directly: they split by file fragment and
do not tell a row which fragment it came from, and they list every file on the driver. Resumable
runs need stable shard ids, and ImageNet's 1.28 M paths should not pass through the driver; so the
plan is made from Parquet footers and directory names, and the tasks read with pyarrow (the same
column projection and filesystem layer Ray Data uses).

This module validates a source spec and dispatches it to its planner in
:mod:`rmd_ray.distributed.sources.planners`; the shards, the planned source and the content digests
live in :mod:`rmd_ray.distributed.sources.shards` and reading a shard in
:mod:`rmd_ray.distributed.sources.read`. All of them are re-exported here.
"""

from __future__ import annotations

from dataclasses import replace

from rmd_ray.distributed.sources.folder import plan_folder
from rmd_ray.distributed.sources.hf_parquet import plan_hf_parquet
from rmd_ray.distributed.sources.planners import (
    plan_cifar_pickle,
    plan_fashion_mnist,
    plan_parquet,
    plan_sklearn_digits,
    plan_val,
    source_from_table,
)
from rmd_ray.distributed.sources.read import read_shard
from rmd_ray.distributed.sources.shards import (
    DEFAULT_SHARD_ROWS,
    Shard,
    ShardedSource,
    combine_digests,
    shard_digest,
)
from rmd_ray.distributed.sources.webdataset import plan_webdataset

__all__ = [
    "DEFAULT_SHARD_ROWS",
    "Shard",
    "check_source_spec",
    "ShardedSource",
    "combine_digests",
    "limit_source",
    "open_source",
    "read_shard",
    "shard_digest",
    "source_from_table",
]


def open_source(spec: str, *, limit: int | None = None, shard_rows: int = DEFAULT_SHARD_ROWS) -> ShardedSource:
    """Plan a source named by ``"<scheme>:<argument>"`` without reading its images.

    ``parquet:PATH`` (a file, a directory of ``*.parquet``, a glob, or a URI such as
    ``s3://bucket/train/?endpoint_override=...``), ``hf-parquet:PATH`` (Hugging Face ``datasets`` image
    shards, the same forms; :mod:`rmd_ray.distributed.sources.hf_parquet`), ``webdataset:PATTERN``
    (WebDataset tar shards, one shard per tar: a brace pattern such as ``train-{000000..000012}.tar``, a
    glob, a directory, a tar, or a wids JSON index ``index.json`` giving the sample counts; local or URI;
    :mod:`rmd_ray.distributed.sources.webdataset`), ``folder:ROOT``
    (ImageFolder / ImageNet train layout, local or URI), ``imagenet-val:ROOT`` (flat validation images
    plus a label file mapping names to wnids in ROOT: ``LOC_val_solution.csv`` or ``val_labels.txt``
    with ``name wnid`` lines;
    classes are ``ROOT/wnids.txt`` if present, else the sorted wnids of the label file), and the
    in-memory readers ``fashion-mnist:[ROOT:]SPLIT`` and ``cifar-pickle:ROOT[:SPLIT]``.

    ``limit`` keeps the first ``limit`` rows in plan order (files sorted by name, classes by index).
    """
    check_source_spec(spec)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be None or an int >= 0, got {limit!r}")
    if isinstance(shard_rows, bool) or not isinstance(shard_rows, int) or shard_rows < 1:
        raise ValueError(f"shard_rows must be an int >= 1, got {shard_rows!r}")
    scheme, _, rest = spec.partition(":")
    if scheme in _IN_MEMORY:  # small fixed datasets read whole: cut before anything enters the object store
        source = _IN_MEMORY[scheme](rest, shard_rows=shard_rows, limit=limit)
    else:
        source = _PLANNERS[scheme](rest, shard_rows=shard_rows)
    source = replace(source, spec=spec)
    return source if limit is None else limit_source(source, limit)


def check_source_spec(spec: str) -> None:
    """Validate a source spec's form without touching storage or Ray (fails before anything starts)."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(
            f"source {spec!r} must look like SCHEME:ARGUMENT, e.g. parquet:/data/train.parquet, "
            "folder:s3://bucket/train, webdataset:/data/train-{000000..000012}.tar, imagenet-val:/data/val, "
            "fashion-mnist:train"
        )
    scheme, _, rest = spec.partition(":")
    if scheme not in _PLANNERS:
        raise ValueError(f"unknown data source {scheme!r}; valid: {', '.join(sorted(_PLANNERS))}")
    if not rest and scheme != "sklearn-digits":  # the one source with nothing to point at
        raise ValueError(f"source {scheme!r} needs an argument: '{scheme}:/path/to/data'")


def limit_source(source: ShardedSource, limit: int) -> ShardedSource:
    """The first ``limit`` rows of ``source`` in plan order (the last shard kept is cut short)."""
    kept, left = [], limit
    for shard in source.shards:
        if left <= 0:
            break
        take = min(left, shard.n_rows)
        kept.append(shard if take == shard.n_rows else replace(shard, n_rows=take))
        left -= take
    return replace(source, shards=tuple(kept), description=f"{source.description} (first {limit} rows)")


_IN_MEMORY = {
    "fashion-mnist": plan_fashion_mnist, "cifar-pickle": plan_cifar_pickle, "sklearn-digits": plan_sklearn_digits,
}
_PLANNERS = {
    "parquet": plan_parquet, "hf-parquet": plan_hf_parquet, "webdataset": plan_webdataset, "folder": plan_folder,
    "imagenet-val": plan_val, **_IN_MEMORY,
}

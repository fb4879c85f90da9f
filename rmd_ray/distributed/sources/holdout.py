"""A seeded, stratified validation split carved from a planned training source, as two lazy views.

Model selection (``rmd-ray tune``, every benchmark, the epochs ``rmd-ray train`` reports) reads the
validation view; the test split is predicted once, after training. The split needs only each row's
``id`` and ``label``: they are read in Ray tasks (Parquet reads those two columns, folders list
their files, nothing is decoded) and gathered on the driver, about 40 MB for ImageNet's 1.28 M rows
(ids such as ``n01440764/n01440764_10026.JPEG`` plus an int64 label), the one place a split's size
reaches the driver, and only while the split is drawn. :func:`rmd_ray.core.stratified_split` draws
the positions; the views then carry, per shard, only the validation ids (about ``fraction`` of the
rows) as a row filter that :func:`~rmd_ray.distributed.sources.plan.read_shard` applies in the tasks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from rmd_ray.core import stratified_split
from rmd_ray.core.splits import validation_counts
from rmd_ray.distributed.sources.plan import Shard, ShardedSource, read_shard
from rmd_ray.io import storage

__all__ = ["VAL_SPLIT_FILE", "SourceSplit", "read_ids_labels", "split_source", "split_views", "write_val_split"]

#: The file in a run's output that records the validation ids.
VAL_SPLIT_FILE = "val_split.parquet"


@dataclass(frozen=True)
class SourceSplit:
    """A source cut in two views by id, and what was drawn.

    Attributes
    ----------
    train, val : ShardedSource
        Lazy views of the same shards: ``train`` without the validation ids, ``val`` only them.
    val_ids : pyarrow.Table
        ``id`` (string), ``label`` (int64) of the validation rows, in plan order; shape (M, 2).
    fraction : float
    seed : int
    source : str
        The spec of the source that was split.
    """

    train: ShardedSource
    val: ShardedSource
    val_ids: pa.Table
    fraction: float
    seed: int
    source: str

    def metadata(self) -> dict[str, Any]:
        """What ``val_split.parquet`` records beside the ids (how to draw the same split again)."""
        return {
            "fraction": self.fraction,
            "seed": self.seed,
            "source": self.source,
            "plan_fingerprint": self.val.plan_fingerprint(),
            "n_train": self.train.n_rows,
            "n_val": self.val.n_rows,
            "stratified_by": "label",
        }


@ray.remote(num_cpus=0.25, scheduling_strategy="DEFAULT")  # never captured by a Tune trial's placement group
def _ids_labels(shard: Shard, classes: tuple[str, ...]) -> pa.Table:
    return read_shard(shard, classes=classes, ids_only=True)


def read_ids_labels(source: ShardedSource) -> list[pa.Table]:
    """``id``, ``label`` of every shard, in plan order: one Ray task per shard, no image read.

    Returns
    -------
    list of pyarrow.Table, one per shard of ``source.shards``
        Shard ``k`` has ``source.shards[k].n_rows`` rows.
    """
    refs = [_ids_labels.remote(shard, source.classes) for shard in source.shards]
    return ray.get(refs)


def split_views(
    source: ShardedSource, ids_labels: list[pa.Table], *, fraction: float, seed: int
) -> SourceSplit:
    """Draw the stratified split from each shard's ids and labels and cut ``source`` into two views.

    Parameters
    ----------
    source : ShardedSource
        A planned source (any ``limit`` already applied).
    ids_labels : list of pyarrow.Table
        Per shard of ``source``, in plan order: ``id``, ``label`` of its rows (:func:`read_ids_labels`).
    fraction : float in (0, 1)
        Share of each class held out (see :func:`rmd_ray.core.stratified_split`).
    seed : int

    Returns
    -------
    SourceSplit

    Raises
    ------
    ValueError
        Ids not unique, a missing label, fewer read rows than planned, no class with two samples (the
        validation split would be empty), or a source that is already a view.
    """
    if len(ids_labels) != len(source.shards):
        raise ValueError(f"{len(ids_labels)} id tables for {len(source.shards)} shards; pass one per shard")
    if any(shard.id_filter_mode for shard in source.shards):
        raise ValueError(f"source {source.spec!r} is already a split view; split the planned source itself")
    for shard, table in zip(source.shards, ids_labels):
        if table.num_rows != shard.n_rows:
            raise ValueError(
                f"shard {shard.index} of {source.spec!r} was planned with {shard.n_rows} rows but {table.num_rows} "
                "were read (did the data change since planning?); plan the source again"
            )
    whole = pa.concat_tables([t.select(["id", "label"]) for t in ids_labels]) if ids_labels else None
    if whole is None or whole.num_rows == 0:
        raise ValueError(f"source {source.spec!r} has no rows to split")
    ids = whole.column("id").cast(pa.string())
    if ids.null_count or pc.count_distinct(ids).as_py() != whole.num_rows:
        raise ValueError(
            f"ids of {source.spec!r} must be unique and not null: the split is recorded and applied by id"
        )
    labels = whole.column("label")
    if labels.null_count:
        bad = ids.filter(labels.is_null())[0].as_py()
        raise ValueError(
            f"row id {bad!r} of {source.spec!r} has no label ({labels.null_count} such rows): a stratified split "
            "needs every label; fix the label file or drop those rows"
        )
    labels = labels.to_numpy().astype(np.int64)
    _, val_idx = stratified_split(labels, fraction=fraction, seed=seed)
    if val_idx.size == 0:
        raise ValueError(
            f"no class of {source.spec!r} has 2 samples, so the validation split would be empty; "
            "pass a validation source instead (--val-source)"
        )
    is_val = np.zeros(whole.num_rows, dtype=bool)
    is_val[val_idx] = True
    train_shards, val_shards, start = [], [], 0
    for shard in source.shards:
        mask = is_val[start : start + shard.n_rows]
        chosen = ids.slice(start, shard.n_rows).filter(pa.array(mask)).to_pylist()
        start += shard.n_rows
        n_val = len(chosen)
        common = {"id_filter": tuple(chosen), "rows_read": shard.n_rows}
        train_shards.append(replace(shard, n_rows=shard.n_rows - n_val, id_filter_mode="exclude", **common))
        val_shards.append(replace(shard, n_rows=n_val, id_filter_mode="only", **common))
    drawn = f"{fraction:g} stratified, seed {seed}"
    train = replace(source, spec=f"{source.spec} [train of {drawn}]", shards=tuple(train_shards),
                    description=f"{source.description}, training part ({drawn})")
    val = replace(source, spec=f"{source.spec} [val of {drawn}]", shards=tuple(val_shards),
                  description=f"{source.description}, validation part ({drawn})")
    val_ids = pa.table({"id": ids.take(pa.array(val_idx)), "label": pa.array(labels[val_idx], pa.int64())})
    return SourceSplit(train=train, val=val, val_ids=val_ids, fraction=float(fraction), seed=int(seed),
                       source=source.spec)


def split_source(source: ShardedSource, *, fraction: float, seed: int) -> SourceSplit:
    """Carve a seeded, stratified validation split out of a planned source (Ray tasks read the ids).

    Parameters
    ----------
    source : ShardedSource
        The planned training source, e.g. ``open_source("folder:/data/train", limit=...)``.
    fraction : float in (0, 1)
        Share of each class held out: ``round(fraction * n_c)`` rows of a class with ``n_c`` rows (half
        up; at least 1 and at most ``n_c - 1`` when ``n_c >= 2``; a singleton class stays in training).
    seed : int
        The same source, fraction and seed give the same split.

    Returns
    -------
    SourceSplit
        Two lazy views and the validation ids (record them with :func:`write_val_split`).
    """
    validation_counts([2], fraction=fraction)  # a bad fraction fails before any task starts
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    return split_views(source, read_ids_labels(source), fraction=fraction, seed=seed)


def write_val_split(split: SourceSplit, output_dir: str | os.PathLike) -> str:
    """Write ``<output_dir>/val_split.parquet`` (``id``, ``label``; fraction, seed, source in its metadata).

    Written atomically (:func:`rmd_ray.io.storage.write_parquet_atomic`); ``output_dir`` may be a URI.
    Returns the file's path or URI.
    """
    storage.makedirs(os.fspath(output_dir))
    uri = storage.join(os.fspath(output_dir), VAL_SPLIT_FILE)
    return storage.write_parquet_atomic(split.val_ids, uri, metadata=split.metadata())

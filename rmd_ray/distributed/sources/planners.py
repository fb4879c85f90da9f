"""The per-format planners: each turns a source argument into a :class:`ShardedSource` without reading images.

Parquet is planned from its footers (row groups grouped, or cut into row ranges, up to a shard's rows),
an ImageNet validation layout from its label file, and the small in-memory datasets (Fashion-MNIST,
CIFAR pickles, scikit-learn digits) by reading them whole and putting slices into the object store
(:func:`source_from_table`).
:mod:`rmd_ray.distributed.sources.plan` dispatches a source spec to these planners (image folders are
planned in :mod:`rmd_ray.distributed.sources.folder`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray

from rmd_ray.data.locations import parquet_files, read_val_labels, val_classes, val_label_file
from rmd_ray.data.readers import (
    FASHION_MNIST_ROOT,
    parse_classes,
    read_cifar_pickle,
    read_fashion_mnist,
    table_classes,
)
from rmd_ray.distributed.sources.shards import DEFAULT_SHARD_ROWS, Shard, ShardedSource, shard_digest
from rmd_ray.io import storage

__all__ = [
    "parquet_stamp", "row_group_content", "row_group_shards", "val_shard_digests",
    "plan_cifar_pickle",
    "plan_fashion_mnist",
    "plan_parquet",
    "plan_sklearn_digits",
    "plan_val",
    "source_from_table",
]


def source_from_table(
    table: pa.Table, *, shard_rows: int = DEFAULT_SHARD_ROWS, spec: str = "table"
) -> ShardedSource:
    """Shard an in-memory reader table (``from_arrays``, Fashion-MNIST, CIFAR pickles) into the object store.

    The table is put into the object store once, in slices of ``shard_rows`` rows; tasks read the
    slices. For Python use and small benchmark sets: a split of ImageNet's size belongs in files.
    """
    classes = tuple(table_classes(table))
    source_meta = (table.schema.metadata or {}).get(b"source", b"in-memory table").decode()
    image_columns = tuple(c for c in ("image", "path", "pixels", "shape") if c in table.column_names)
    columns = ("id", "label", *image_columns)
    slim = table.select(list(columns)).replace_schema_metadata(None)
    shards = []
    for index, start in enumerate(range(0, max(table.num_rows, 1), shard_rows)):
        part = slim.slice(start, shard_rows)
        if part.num_rows == 0:
            break
        digest = shard_digest(part)
        shards.append(
            Shard(index=index, kind="table", n_rows=part.num_rows, uri=f"{source_meta}#{digest}",
                  start=start, stop=start + part.num_rows, table_ref=ray.put(part), columns=columns)
        )
    return ShardedSource(spec, classes, source_meta, tuple(shards), ids_unique_by_construction=False)


def plan_parquet(rest: str, *, shard_rows: int) -> ShardedSource:
    """Plan ``parquet:REST`` from the files' footers: row groups grouped up to ``shard_rows`` rows."""
    files = parquet_files(rest)
    first = pq.ParquetFile(storage.open_input(files[0]))
    names = first.schema_arrow.names
    missing = [c for c in ("id", "label", "image") if c not in names]
    if missing:
        raise ValueError(f"{files[0]!r} lacks column(s) {missing}; its columns are {names}")
    meta = first.schema_arrow.metadata or {}
    shards, label_max = row_group_shards(files, kind="parquet", label_index=names.index("label"),
                                         shard_rows=shard_rows)
    if b"classes" in meta:
        classes = parse_classes(meta[b"classes"])
    elif label_max >= 0:
        classes = [str(k) for k in range(label_max + 1)]
    else:
        raise ValueError(
            f"{files[0]!r} has no b'classes' schema metadata and no label statistics; write the class "
            "names into the schema metadata (key 'classes', a JSON list)"
        )
    described = f"parquet {rest} ({len(files)} file{'s' * (len(files) > 1)})"
    return ShardedSource(rest, tuple(classes), described, tuple(shards), ids_unique_by_construction=False,
                         classes_inferred=b"classes" not in meta)


def row_group_shards(files: Sequence[str], *, kind: str, label_index: int,
                     shard_rows: int) -> tuple[list[Shard], int]:
    """Shards of ``kind`` over the row groups of ``files``, grouped up to ``shard_rows`` rows (a larger row
    group cut into row ranges), each with its content digest; and the largest label the footers show."""
    shards: list[Shard] = []
    label_max = -1
    for uri in files:
        meta_file = pq.ParquetFile(storage.open_input(uri)).metadata
        stamp = parquet_stamp(uri)
        group, rows = [], 0
        for g in range(meta_file.num_row_groups):
            n = meta_file.row_group(g).num_rows
            label_max = max(label_max, _label_max(meta_file.row_group(g), label_index))
            if group and rows + n > shard_rows:
                shards.append(Shard(len(shards), kind, rows, uri=uri, row_groups=tuple(group),
                                    content=row_group_content(stamp, meta_file, group)))
                group, rows = [], 0
            if n > shard_rows:  # a large row group is cut into row ranges: each read decodes its slice only
                for start in range(0, n, shard_rows):
                    stop = min(start + shard_rows, n)
                    shards.append(Shard(len(shards), kind, stop - start, uri=uri, row_groups=(g,),
                                        start=start, stop=stop,
                                        content=row_group_content(stamp, meta_file, [g], f"{start}:{stop}")))
                continue
            group.append(g)
            rows += n
        if group:
            shards.append(Shard(len(shards), kind, rows, uri=uri, row_groups=tuple(group),
                                content=row_group_content(stamp, meta_file, group)))
    return shards, label_max


def parquet_stamp(uri: str) -> str:
    """``uri|size|mtime`` of a Parquet file: a rewrite in place changes it (object stores included)."""
    fs, path = storage.resolve(uri)
    info = fs.get_file_info(path)
    mtime = info.mtime_ns if info.mtime_ns is not None else ""
    return f"{uri}|{info.size}|{mtime}"


def row_group_content(stamp: str, meta: Any, groups: Sequence[int], rows: str = "") -> str:
    """A digest of a shard's file stamp and its row groups' footer metadata (sizes and statistics of
    every column chunk): what :class:`Shard` calls ``content``, read from the footer alone."""
    digest = hashlib.sha256(f"{stamp}|{rows}".encode())
    for g in groups:
        group = meta.row_group(g)
        digest.update(f"|{g}:{group.num_rows}:{group.total_byte_size}".encode())
        for c in range(group.num_columns):
            chunk = group.column(c)
            stats = chunk.statistics
            seen = (stats.min, stats.max, stats.null_count) if stats is not None and stats.has_min_max else ()
            digest.update(f"|{chunk.path_in_schema}:{chunk.total_compressed_size}:{seen!r}".encode())
    return digest.hexdigest()[:24]


def _label_max(row_group: Any, column: int) -> int:
    stats = row_group.column(column).statistics
    if stats is None or not stats.has_min_max:
        return -1
    return int(stats.max)


def plan_val(rest: str, *, shard_rows: int) -> ShardedSource:
    """Plan ``imagenet-val:REST``: ranges of ``shard_rows`` lines of the name-sorted label file.

    Each shard's ``content`` digests its (name, wnid) lines and its images' sizes and modification
    times, from one listing of the folder made in the same task: a label fixed or an image swapped
    in place is embedded again on resume.
    """
    if not storage.is_dir(rest):
        raise ValueError(f"imagenet-val root is not a directory: {rest!r}")
    labels_uri = val_label_file(rest)
    # The label file (50,000 short lines for ImageNet) is read in a task; the driver keeps K wnids
    # and one digest per shard.
    n_rows, classes, digests = ray.get(_scan_val_labels.remote(rest, labels_uri, shard_rows))
    shards = tuple(
        Shard(i, "val", min(shard_rows, n_rows - start), uri=rest, labels_uri=labels_uri, start=start,
              stop=min(start + shard_rows, n_rows), content=digests[i])
        for i, start in enumerate(range(0, n_rows, shard_rows))
    )
    return ShardedSource(rest, tuple(classes), f"ImageNet validation layout {rest}", shards, True)


def val_shard_digests(root: str, pairs: Sequence[tuple[str, str]], shard_rows: int) -> list[str]:
    """One content digest per ``shard_rows`` lines of ``pairs``: the lines and the listed size and
    modification time of each named image below ``root`` (a missing image digests as absent)."""
    fs, base = storage.resolve(root)
    base = base.rstrip("/")
    stamps = {
        info.path[len(base):].lstrip("/"): f"{info.size}|{info.mtime_ns}"
        for info in fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        if info.type == pafs.FileType.File
    }
    digests = []
    for start in range(0, len(pairs), shard_rows):
        lines = (f"{name}|{wnid}|{stamps.get(name, 'absent')}" for name, wnid in pairs[start:start + shard_rows])
        digests.append(hashlib.sha256("\n".join(lines).encode()).hexdigest()[:24])
    return digests


@ray.remote(num_cpus=0.25)
def _scan_val_labels(root: str, labels_uri: str, shard_rows: int) -> tuple[int, list[str], list[str]]:
    pairs = read_val_labels(labels_uri)
    return len(pairs), val_classes(root, pairs), val_shard_digests(root, pairs, shard_rows)


def plan_fashion_mnist(rest: str, *, shard_rows: int, limit: int | None = None) -> ShardedSource:
    """Read ``fashion-mnist:[ROOT:]SPLIT`` whole (its first ``limit`` rows) and shard it into the object store."""
    head, sep, tail = rest.rpartition(":")
    root, split = (head, tail) if sep and tail in ("train", "test") else ("", rest)
    if split not in ("train", "test"):
        root, split = rest, "train"
    table = read_fashion_mnist(root or FASHION_MNIST_ROOT, split=split, limit=limit)
    return source_from_table(table, shard_rows=shard_rows, spec=f"fashion-mnist:{rest}")


def plan_cifar_pickle(rest: str, *, shard_rows: int, limit: int | None = None) -> ShardedSource:
    """Read ``cifar-pickle:ROOT[:SPLIT]`` whole (its first ``limit`` rows) and shard it into the object store."""
    head, sep, tail = rest.rpartition(":")
    root, split = (head, tail) if sep and tail in ("train", "test") else (rest, "train")
    table = read_cifar_pickle(root, split=split)
    table = table if limit is None else table.slice(0, limit)
    return source_from_table(table, shard_rows=shard_rows, spec=f"cifar-pickle:{rest}")


def plan_sklearn_digits(rest: str, *, shard_rows: int, limit: int | None = None) -> ShardedSource:
    """Read scikit-learn's digits (``sklearn-digits:``, no argument) and shard them into the object store."""
    from rmd_ray.data.readers import read_sklearn_digits

    if rest:
        raise ValueError(f"sklearn-digits takes no argument, got {rest!r}: write 'sklearn-digits:'")
    return source_from_table(read_sklearn_digits(limit=limit), shard_rows=shard_rows, spec="sklearn-digits:")

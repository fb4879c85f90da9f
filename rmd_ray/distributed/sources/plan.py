"""Lazy, sharded image sources: the driver plans shards, Ray tasks read them.

A *shard* is the unit that is read, embedded, written and recorded as done: a group of Parquet row
groups, one class directory of an ImageFolder, a range of an ImageNet validation label file, or a
slice of an in-memory table. The driver holds only the plan (a few numbers per shard); image bytes,
file listings and label files are read inside tasks, where the work runs (docs/design.md section 7).

Every shard is read into the reader-table format of :mod:`rmd_ray.data.readers` (``id``, ``label``,
one image column) plus ``shard`` and ``shard_rows`` columns, so a stage further down can tell when
every row of a shard has been written.

Why not ``ray.data.read_parquet`` / ``read_binary_files`` directly: they split by file fragment and
do not tell a row which fragment it came from, and they list every file on the driver. Resumable
runs need stable shard ids, and ImageNet's 1.28 M paths should not pass through the driver; so the
plan is made from Parquet footers and directory names, and the tasks read with pyarrow (the same
column projection and filesystem layer Ray Data uses).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from rmd_ray.data.locations import parquet_files, read_val_labels, val_classes, val_label_file
from rmd_ray.data.readers import (
    FASHION_MNIST_ROOT,
    _image_extensions,
    _parse_classes,
    read_cifar_pickle,
    read_fashion_mnist,
    table_classes,
)
from rmd_ray.io import storage

__all__ = [
    "Shard",
    "check_source_spec",
    "ShardedSource",
    "open_source",
    "read_shard",
    "source_from_table",
]

_DIRS_PER_COUNT_TASK = 50
#: Rows per shard for sources that can be cut anywhere (Parquet row groups are never split).
DEFAULT_SHARD_ROWS = 2048


@dataclass(frozen=True)
class Shard:
    """One unit of reading and of resumption.

    ``kind`` says how :func:`read_shard` reads it: ``"parquet"`` (``uri`` a file, ``row_groups``, and
    rows ``start:stop`` of a row group larger than a shard),
    ``"folder"`` (``dirs``: consecutive class directories as (uri, label, class name, image count)),
    ``"val"`` (``uri`` the image folder, ``labels_uri`` the label file, rows ``start:stop`` of its
    name-sorted lines) or ``"table"`` (``table_ref`` an object ref of a table slice).

    A *view* of a shard (:mod:`rmd_ray.distributed.sources.holdout`: the training and validation parts of a
    split) keeps its index and read recipe and adds a row filter by id: ``id_filter_mode`` ``"only"``
    keeps the rows whose id is in ``id_filter``, ``"exclude"`` drops them; the first ``rows_read``
    rows are read before filtering and ``n_rows`` counts the rows kept. The ids are the shard's
    validation ids only (about ``fraction`` of its rows), so a split of ImageNet's 1.28 M training rows
    at fraction 0.1 carries about 128,000 short strings (a few MB), shipped with the plan.
    """

    index: int
    kind: str
    n_rows: int
    uri: str = ""
    row_groups: tuple[int, ...] = ()
    dirs: tuple[tuple[str, int, str, int], ...] = ()
    labels_uri: str = ""
    start: int = 0
    stop: int = 0
    table_ref: Any = field(default=None, compare=False)
    columns: tuple[str, ...] = ()
    id_filter: tuple[str, ...] = ()
    id_filter_mode: str = ""
    rows_read: int = 0

    def key(self) -> str:
        """What identifies the shard's content across runs (no object refs)."""
        parts = [self.kind, self.uri, ",".join(map(str, self.row_groups)), repr(self.dirs),
                 self.labels_uri, f"{self.start}:{self.stop}", str(self.n_rows), ",".join(self.columns)]
        if self.id_filter_mode:  # a view: the same rows under another filter are other content
            digest = hashlib.sha256("\n".join(sorted(self.id_filter)).encode()).hexdigest()[:16]
            parts.append(f"{self.id_filter_mode}:{digest}:{self.rows_read}")
        return "|".join(parts)


@dataclass(frozen=True)
class ShardedSource:
    """A planned source: class names, a description and the shards (no data)."""

    spec: str
    classes: tuple[str, ...]
    description: str
    shards: tuple[Shard, ...]
    ids_unique_by_construction: bool

    @property
    def n_rows(self) -> int:
        return sum(s.n_rows for s in self.shards)

    def plan_fingerprint(self) -> str:
        """sha256 over the shard keys and class names: the same plan gives the same fingerprint."""
        digest = hashlib.sha256("\n".join(self.classes).encode())
        for shard in self.shards:
            digest.update(b"\x00" + shard.key().encode())
        return digest.hexdigest()[:16]


# ------------------------------------------------------------------------------------------- planning
def open_source(spec: str, *, limit: int | None = None, shard_rows: int = DEFAULT_SHARD_ROWS) -> ShardedSource:
    """Plan a source named by ``"<scheme>:<argument>"`` without reading its images.

    ``parquet:PATH`` (a file, a directory of ``*.parquet``, a glob, or a URI such as
    ``s3://bucket/train/?endpoint_override=...``), ``folder:ROOT`` (ImageFolder / ImageNet train
    layout, local or URI), ``imagenet-val:ROOT`` (flat validation images plus a label file mapping
    names to wnids in ROOT: ``LOC_val_solution.csv`` or ``val_labels.txt`` with ``name wnid`` lines;
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
    return source if limit is None else _limit(source, limit)


def check_source_spec(spec: str) -> None:
    """Validate a source spec's form without touching storage or Ray (fails before anything starts)."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(
            f"source {spec!r} must look like SCHEME:ARGUMENT, e.g. parquet:/data/train.parquet, "
            "folder:s3://bucket/train, imagenet-val:/data/val, fashion-mnist:train"
        )
    scheme, _, rest = spec.partition(":")
    if scheme not in _PLANNERS:
        raise ValueError(f"unknown data source {scheme!r}; valid: {', '.join(sorted(_PLANNERS))}")
    if not rest and scheme != "sklearn-digits":  # the one source with nothing to point at
        raise ValueError(f"source {scheme!r} needs an argument: '{scheme}:/path/to/data'")


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


def _limit(source: ShardedSource, limit: int) -> ShardedSource:
    kept, left = [], limit
    for shard in source.shards:
        if left <= 0:
            break
        take = min(left, shard.n_rows)
        kept.append(shard if take == shard.n_rows else replace(shard, n_rows=take))
        left -= take
    return replace(source, shards=tuple(kept), description=f"{source.description} (first {limit} rows)")


def _plan_parquet(rest: str, *, shard_rows: int) -> ShardedSource:
    files = parquet_files(rest)
    first = pq.ParquetFile(storage.open_input(files[0]))
    names = first.schema_arrow.names
    missing = [c for c in ("id", "label", "image") if c not in names]
    if missing:
        raise ValueError(f"{files[0]!r} lacks column(s) {missing}; its columns are {names}")
    meta = first.schema_arrow.metadata or {}
    shards: list[Shard] = []
    label_max = -1
    for uri in files:
        meta_file = pq.ParquetFile(storage.open_input(uri)).metadata
        group, rows = [], 0
        for g in range(meta_file.num_row_groups):
            n = meta_file.row_group(g).num_rows
            label_max = max(label_max, _label_max(meta_file.row_group(g), names.index("label")))
            if group and rows + n > shard_rows:
                shards.append(Shard(len(shards), "parquet", rows, uri=uri, row_groups=tuple(group)))
                group, rows = [], 0
            if n > shard_rows:  # a large row group is cut into row ranges: each read decodes its slice only
                for start in range(0, n, shard_rows):
                    stop = min(start + shard_rows, n)
                    shards.append(Shard(len(shards), "parquet", stop - start, uri=uri, row_groups=(g,),
                                        start=start, stop=stop))
                continue
            group.append(g)
            rows += n
        if group:
            shards.append(Shard(len(shards), "parquet", rows, uri=uri, row_groups=tuple(group)))
    if b"classes" in meta:
        classes = _parse_classes(meta[b"classes"])
    elif label_max >= 0:
        classes = [str(k) for k in range(label_max + 1)]
    else:
        raise ValueError(
            f"{files[0]!r} has no b'classes' schema metadata and no label statistics; write the class "
            "names into the schema metadata (key 'classes', a JSON list)"
        )
    described = f"parquet {rest} ({len(files)} file{'s' * (len(files) > 1)})"
    return ShardedSource(rest, tuple(classes), described, tuple(shards), ids_unique_by_construction=False)


def _label_max(row_group: Any, column: int) -> int:
    stats = row_group.column(column).statistics
    if stats is None or not stats.has_min_max:
        return -1
    return int(stats.max)


def _plan_folder(rest: str, *, shard_rows: int) -> ShardedSource:
    if not storage.is_dir(rest):
        raise ValueError(f"image folder root is not a directory: {rest!r}")
    class_dirs = storage.list_dirs(rest)
    classes = tuple(storage.basename(d) for d in class_dirs)
    if not classes:
        raise ValueError(f"{rest!r} has no class sub-directories (expected root/<class>/<image>)")
    # Count each class's images: the driver keeps K numbers, never the 1.28 M paths.
    groups = [class_dirs[i : i + _DIRS_PER_COUNT_TASK] for i in range(0, len(class_dirs), _DIRS_PER_COUNT_TASK)]
    if storage.is_remote(rest):
        # Object-store listings are paged requests: spread them over tasks, 50 folders a task.
        counts = [n for group in ray.get([_count_images.remote(g) for g in groups]) for n in group]
    else:
        # A local (or NFS) folder lists in milliseconds; a Ray task would only add worker start-up. One
        # folder's names at a time, in threads: memory stays one folder, not the dataset.
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=8) as pool:
            counts = list(pool.map(lambda d: len(_list_images(d)), class_dirs))
    if not sum(counts):
        raise ValueError(f"no image files under {rest!r} (extensions {', '.join(_image_extensions())})")
    empty = [c for c, n in zip(classes, counts) if n == 0]
    if empty:
        warnings.warn(
            f"{len(empty)} class directories under {rest!r} hold no images (e.g. {empty[0]!r}); "
            "they keep their indices so class numbers stay aligned",
            stacklevel=3,
        )
    # Whole class directories per shard, consecutive ones grouped up to ~shard_rows rows, so that a
    # class of 1,300 ImageNet images is one shard and 1,000 tiny classes are not 1,000 shards.
    shards, group, rows = [], [], 0
    for label, (name, uri, n) in enumerate(zip(classes, class_dirs, counts)):
        if group and rows + n > shard_rows:
            shards.append(Shard(len(shards), "folder", rows, dirs=tuple(group)))
            group, rows = [], 0
        group.append((uri, label, name, n))
        rows += n
    if group:
        shards.append(Shard(len(shards), "folder", rows, dirs=tuple(group)))
    return ShardedSource(rest, classes, f"image folder {rest}", tuple(shards), ids_unique_by_construction=True)


def _list_images(class_dir: str) -> list[str]:
    files = storage.list_files(class_dir, recursive=True)
    return [f for f in files if storage.resolve(f)[1].lower().endswith(_image_extensions())]


@ray.remote(num_cpus=0.25)
def _count_images(class_dirs: list[str]) -> list[int]:
    return [len(_list_images(d)) for d in class_dirs]


def _plan_val(rest: str, *, shard_rows: int) -> ShardedSource:
    if not storage.is_dir(rest):
        raise ValueError(f"imagenet-val root is not a directory: {rest!r}")
    labels_uri = val_label_file(rest)
    # The label file (50,000 short lines for ImageNet) is read in a task; the driver keeps K wnids.
    n_rows, classes = ray.get(_scan_val_labels.remote(rest, labels_uri))
    shards = tuple(
        Shard(i, "val", min(shard_rows, n_rows - start), uri=rest, labels_uri=labels_uri, start=start,
              stop=min(start + shard_rows, n_rows))
        for i, start in enumerate(range(0, n_rows, shard_rows))
    )
    return ShardedSource(rest, tuple(classes), f"ImageNet validation layout {rest}", shards, True)


@ray.remote(num_cpus=0.25)
def _scan_val_labels(root: str, labels_uri: str) -> tuple[int, list[str]]:
    pairs = read_val_labels(labels_uri)
    return len(pairs), val_classes(root, pairs)


def _plan_fashion_mnist(rest: str, *, shard_rows: int, limit: int | None = None) -> ShardedSource:
    head, sep, tail = rest.rpartition(":")
    root, split = (head, tail) if sep and tail in ("train", "test") else ("", rest)
    if split not in ("train", "test"):
        root, split = rest, "train"
    table = read_fashion_mnist(root or FASHION_MNIST_ROOT, split=split, limit=limit)
    return source_from_table(table, shard_rows=shard_rows, spec=f"fashion-mnist:{rest}")


def _plan_cifar_pickle(rest: str, *, shard_rows: int, limit: int | None = None) -> ShardedSource:
    head, sep, tail = rest.rpartition(":")
    root, split = (head, tail) if sep and tail in ("train", "test") else (rest, "train")
    table = read_cifar_pickle(root, split=split)
    table = table if limit is None else table.slice(0, limit)
    return source_from_table(table, shard_rows=shard_rows, spec=f"cifar-pickle:{rest}")


# -------------------------------------------------------------------------------------------- reading
def read_shard(shard: Shard, *, classes: Sequence[str], ids_only: bool = False) -> pa.Table:
    """Read one shard into a reader table plus ``shard`` (int64) and ``shard_rows`` (int64) columns.

    Runs inside a Ray task. Labels are not judged here (see :func:`rmd_ray.data.readers.validate_labels`).
    ``ids_only`` keeps only ``id`` and ``label`` (Parquet then reads no image bytes; folders list
    their files, nothing more): what a split needs.
    """
    if shard.kind == "parquet":
        parquet = pq.ParquetFile(storage.open_input(shard.uri))
        wanted = ["id", "label"] if ids_only else ["id", "label", "image"]
        table = parquet.read_row_groups(list(shard.row_groups), columns=wanted)
        if shard.stop:
            table = table.slice(shard.start, shard.stop - shard.start)
        casts = {"id": pa.string(), "label": pa.int64(), "image": pa.binary()}
        table = pa.table({name: table.column(name).cast(casts[name]) for name in wanted})
    elif shard.kind == "folder":
        ids, labels, paths = [], [], []
        for uri, label, name, _ in shard.dirs:
            files = _list_images(uri)
            root = storage.resolve(uri)[1].rstrip("/")
            ids += [f"{name}/{storage.resolve(f)[1][len(root) + 1:]}" for f in files]
            labels += [label] * len(files)
            paths += files
        table = pa.table({
            "id": pa.array(ids, pa.string()),
            "label": pa.array(labels, pa.int64()),
            "path": pa.array(paths, pa.string()),
        })
    elif shard.kind == "val":
        pairs = read_val_labels(shard.labels_uri)[shard.start : shard.stop]
        index = {c: k for k, c in enumerate(classes)}
        table = pa.table(
            {
                "id": pa.array([n for n, _ in pairs], pa.string()),
                "label": pa.array([index.get(w) for _, w in pairs], pa.int64()),
                "path": pa.array([storage.join(shard.uri, n) for n, _ in pairs], pa.string()),
            }
        )
    elif shard.kind == "table":
        table = ray.get(shard.table_ref)
    else:  # pragma: no cover - planners only make the kinds above
        raise ValueError(f"unknown shard kind {shard.kind!r}")
    if shard.id_filter_mode:
        # a view: the rows the plan counted, then the filter (by id, so file order cannot move a row)
        table = table.slice(0, shard.rows_read)
        listed = pc.is_in(table.column("id").cast(pa.string()), value_set=pa.array(shard.id_filter, pa.string()))
        table = table.filter(listed if shard.id_filter_mode == "only" else pc.invert(listed))
    table = table.slice(0, shard.n_rows)
    if ids_only:
        table = table.select(["id", "label"])
    n = table.num_rows
    table = table.append_column("shard", pa.array(np.full(n, shard.index, dtype=np.int64)))
    return table.append_column("shard_rows", pa.array(np.full(n, shard.n_rows, dtype=np.int64)))


def shard_digest(table: pa.Table) -> str:
    """sha256 over a shard's (id, label) pairs in id order: recorded per shard, combined per dataset."""
    ordered = table.select(["id", "label"]).sort_by("id")
    digest = hashlib.sha256()
    digest.update("\n".join(ordered.column("id").to_pylist()).encode())
    digest.update(pc.fill_null(ordered.column("label"), -1).to_numpy(zero_copy_only=False).astype(np.int64).tobytes())
    return digest.hexdigest()[:16]


def combine_digests(digests: Sequence[str]) -> str:
    """The dataset fingerprint: sha256 over the per-shard digests in shard order."""
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()[:16]


def _plan_sklearn_digits(rest: str, *, shard_rows: int, limit: int | None = None) -> ShardedSource:
    from rmd_ray.data.readers import read_sklearn_digits

    if rest:
        raise ValueError(f"sklearn-digits takes no argument, got {rest!r}: write 'sklearn-digits:'")
    return source_from_table(read_sklearn_digits(limit=limit), shard_rows=shard_rows, spec="sklearn-digits:")


_IN_MEMORY = {
    "fashion-mnist": _plan_fashion_mnist, "cifar-pickle": _plan_cifar_pickle, "sklearn-digits": _plan_sklearn_digits,
}
_PLANNERS = {"parquet": _plan_parquet, "folder": _plan_folder, "imagenet-val": _plan_val, **_IN_MEMORY}

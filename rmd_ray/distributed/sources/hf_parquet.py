"""``hf-parquet:PATH``: Hugging Face ``datasets`` image Parquet shards (e.g. ``imagenet-1k``'s
``data/train-*.parquet``), planned per row group like ``parquet:`` and read inside tasks.

What differs from ``parquet:``: the image is a struct column ``{bytes, path}`` (or plain bytes), the
label column is an integer ``ClassLabel`` whose names sit in the file's ``huggingface`` schema metadata
(``info.features.<label>.names``), and there is no ``id`` column: a row's id is its ``image.path`` when
the shard stores one, else ``<file>:<row in file>`` (stable while the file is unchanged), ``<file>`` the
file's name, or its path below the files' common folder when two planned files share a name.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import replace

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rmd_ray.data.locations import parquet_files
from rmd_ray.distributed.sources.planners import row_group_shards
from rmd_ray.distributed.sources.shards import Shard, ShardedSource
from rmd_ray.io import storage

__all__ = ["LABEL_COLUMN", "file_names", "hf_class_names", "plan_hf_parquet", "read_hf_shard"]

LABEL_COLUMN = "label"


def hf_class_names(metadata: dict[bytes, bytes] | None, label: str = LABEL_COLUMN) -> list[str] | None:
    """The ``ClassLabel`` names of column ``label`` in a ``datasets`` schema metadata, or None."""
    raw = (metadata or {}).get(b"huggingface")
    if raw is None:
        return None
    features = json.loads(raw).get("info", {}).get("features", {})
    names = features.get(label, {}).get("names")
    return [str(n) for n in names] if names else None


def plan_hf_parquet(rest: str, *, shard_rows: int) -> ShardedSource:
    """Plan ``hf-parquet:REST`` (a file, a directory, a glob or a URI) from the files' footers."""
    files = parquet_files(rest)
    schema = pq.ParquetFile(storage.open_input(files[0])).schema_arrow
    missing = [c for c in ("image", LABEL_COLUMN) if c not in schema.names]
    if missing:
        raise ValueError(f"{files[0]!r} lacks column(s) {missing} of a datasets image table; its columns are "
                         f"{schema.names} (for a table with an id column use parquet:)")
    image = schema.field("image").type
    if not (pa.types.is_struct(image) and image.get_field_index("bytes") >= 0) and not pa.types.is_binary(image):
        raise ValueError(f"{files[0]!r}: column 'image' is {image}, not a datasets Image struct {{bytes, path}}")
    leaves = pq.ParquetFile(storage.open_input(files[0])).metadata.schema  # image.bytes, image.path, label
    label_index = [leaves.column(i).path for i in range(len(leaves))].index(LABEL_COLUMN)
    shards, label_max = row_group_shards(files, kind="hf-parquet", label_index=label_index, shard_rows=shard_rows)
    names = file_names(files)
    shards = [replace(s, id_prefix=names[s.uri]) for s in shards]
    classes = hf_class_names(schema.metadata)
    inferred = classes is None
    if inferred:
        if label_max < 0:
            raise ValueError(f"{files[0]!r} names no ClassLabel in its 'huggingface' metadata and has no label "
                             "statistics; pass a file written by datasets")
        classes = [str(k) for k in range(label_max + 1)]
    described = f"hf-parquet {rest} ({len(files)} file{'s' * (len(files) > 1)})"
    return ShardedSource(rest, tuple(classes), described, tuple(shards), ids_unique_by_construction=False,
                         classes_inferred=inferred)


def file_names(files: list[str]) -> dict[str, str]:
    """Each file's name for ids: its base name, or its path below the common folder when names repeat."""
    bases = [storage.basename(f) for f in files]
    if len(set(bases)) == len(bases):
        return dict(zip(files, bases))
    paths = [storage.resolve(f)[1] for f in files]
    root = posixpath.commonpath([posixpath.dirname(p) for p in paths])
    return {f: posixpath.relpath(p, root) for f, p in zip(files, paths)}


def read_hf_shard(shard: Shard, *, ids_only: bool = False) -> pa.Table:
    """``id``, ``label`` (int64) and ``image`` (JPEG/PNG bytes) of one ``hf-parquet`` shard, in a task."""
    parquet = pq.ParquetFile(storage.open_input(shard.uri))
    image_type = parquet.schema_arrow.field("image").type
    has_path = pa.types.is_struct(image_type) and image_type.get_field_index("path") >= 0
    # ids and labels only (the census, hold-out splits): the path leaf, never the image bytes
    columns = (["image.path"] if has_path else []) + [LABEL_COLUMN] if ids_only else ["image", LABEL_COLUMN]
    table = parquet.read_row_groups(list(shard.row_groups), columns=columns)
    first_row = sum(parquet.metadata.row_group(g).num_rows for g in range(shard.row_groups[0]))
    if shard.stop:
        table = table.slice(shard.start, shard.stop - shard.start)
        first_row += shard.start
    image = table.column("image") if "image" in table.column_names else None
    paths = pc.struct_field(image, "path") if has_path and image is not None else None
    name = shard.id_prefix or storage.basename(shard.uri)
    rows = [f"{name}:{first_row + i}" for i in range(table.num_rows)]
    if paths is not None:
        given = paths.to_pylist()
        ids = [p if p else r for p, r in zip(given, rows)]
    else:
        ids = rows
    out = {"id": pa.array(ids, pa.string()), "label": table.column(LABEL_COLUMN).cast(pa.int64())}
    if not ids_only:
        struct = pa.types.is_struct(image_type)
        out["image"] = (pc.struct_field(image, "bytes") if struct else image).cast(pa.binary())
    return pa.table(out)

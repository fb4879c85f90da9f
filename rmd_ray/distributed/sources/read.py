"""Reading one shard inside a Ray task, into the reader-table format plus ``shard`` and ``shard_rows``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from rmd_ray.data.locations import read_val_labels
from rmd_ray.distributed.sources.folder import list_images
from rmd_ray.distributed.sources.hf_parquet import read_hf_shard
from rmd_ray.distributed.sources.shards import Shard
from rmd_ray.distributed.sources.webdataset import read_webdataset_shard
from rmd_ray.io import storage

__all__ = ["read_shard"]


def read_shard(shard: Shard, *, classes: Sequence[str], ids_only: bool = False) -> pa.Table:
    """Read one shard into a reader table plus ``shard`` (int64) and ``shard_rows`` (int64) columns.

    Runs inside a Ray task. Labels are not judged here (see :func:`rmd_ray.data.readers.validate_labels`).
    ``ids_only`` keeps only ``id`` and ``label`` (Parquet and tars then read no image bytes; folders list
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
    elif shard.kind == "hf-parquet":
        table = read_hf_shard(shard, ids_only=ids_only)
    elif shard.kind == "webdataset":
        table = read_webdataset_shard(shard, ids_only=ids_only)
    elif shard.kind == "folder":
        ids, labels, paths = [], [], []
        for uri, label, name, start, stop in shard.dirs:
            files = list_images(uri)[start:stop]
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

"""The rows of a few ids from any source, reading image bytes only where those ids are.

:func:`rmd_ray.data.locations.fetch_rows_by_id` fetches by id in one process for the sources whose
ids say where a row is (folder and ImageNet-validation paths) or that can push an id filter into the
scan (``parquet:``, read row group by row group: ids first, images only where a wanted id is). Sources
whose ids do not locate a row (``hf-parquet:`` ids from ``image.path`` or ``file:row``, ``webdataset:``
sample keys) are planned like any other and searched in Ray tasks, one per shard: each reads the
shard's ids and labels only, and reads images only when it holds a wanted id, and then, in a Parquet
shard of several row groups, only those of the row groups that hold one. The driver receives the
wanted rows, nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from rmd_ray.distributed.runtime.cluster import init_ray
from rmd_ray.distributed.sources.plan import Shard, open_source, read_shard
from rmd_ray.io import storage

__all__ = ["LOCATED_BY_ID", "fetch_rows", "pieces_holding"]

#: schemes whose rows :func:`rmd_ray.data.locations.fetch_rows_by_id` finds without a plan
LOCATED_BY_ID = ("folder", "imagenet-val", "parquet", "fashion-mnist", "cifar-pickle", "sklearn-digits")


@ray.remote(num_cpus=0.25)
def _rows_of(shard: Shard, classes: tuple[str, ...], wanted: pa.Array) -> pa.Table | None:
    listed = read_shard(shard, classes=classes, ids_only=True)
    hit = pc.is_in(listed.column("id"), value_set=wanted).to_numpy(zero_copy_only=False)
    if not hit.any():
        return None  # no wanted id here: its image bytes are never read
    table = pa.concat_tables([read_shard(piece, classes=classes) for piece in pieces_holding(shard, hit)])
    table = table.filter(pc.is_in(table.column("id"), value_set=wanted))
    return table.drop_columns([c for c in ("shard", "shard_rows") if c in table.column_names])


def pieces_holding(shard: Shard, hit: np.ndarray) -> list[Shard]:
    """The parts of ``shard`` to read whole for its rows marked in ``hit`` (a mask over its id listing).

    A Parquet shard (``parquet``, ``hf-parquet``) of several whole row groups gives one single-group shard
    per row group holding a marked row, so the image column chunks of its other row groups are never read;
    any other shard is read whole.
    """
    whole = shard.kind not in ("parquet", "hf-parquet") or shard.stop or shard.id_filter_mode
    if whole or len(shard.row_groups) < 2:
        return [shard]
    with storage.open_input(shard.uri) as handle:
        meta = pq.ParquetFile(handle).metadata
    ends = np.cumsum([meta.row_group(g).num_rows for g in shard.row_groups])
    starts = ends - np.diff(ends, prepend=0)
    # the listing is the row groups' rows in order (cut to n_rows by a limit): row i is in the first group
    # whose cumulative end exceeds i
    holding = np.unique(np.searchsorted(ends, np.flatnonzero(hit), side="right"))
    return [replace(shard, row_groups=(shard.row_groups[j],), n_rows=int(min(ends[j], shard.n_rows) - starts[j]))
            for j in holding.tolist()]


def fetch_rows(spec: str, ids: Sequence[str]) -> pa.Table:
    """The reader rows (``id``, ``label``, image column) of ``ids`` from the source ``spec``.

    Sources in :data:`LOCATED_BY_ID` go to :func:`rmd_ray.data.locations.fetch_rows_by_id` (no Ray);
    the others are planned and searched shard by shard in Ray tasks (Ray is started if needed). Ids
    not in the source are absent from the result.
    """
    from rmd_ray.data.locations import fetch_rows_by_id

    if spec.partition(":")[0] in LOCATED_BY_ID:
        return fetch_rows_by_id(spec, ids)
    wanted = pa.array(sorted({str(i) for i in ids}), pa.string())
    if not len(wanted):
        return pa.table({"id": pa.array([], pa.string()), "label": pa.array([], pa.int64())})
    if not ray.is_initialized():
        init_ray()  # a local instance, as every command starts it
    source = open_source(spec)
    found = [t for t in ray.get([_rows_of.remote(s, source.classes, wanted) for s in source.shards]) if t is not None]
    if not found:
        return pa.table({"id": pa.array([], pa.string()), "label": pa.array([], pa.int64())})
    return pa.concat_tables(found, promote_options="permissive")

"""The rows of a few ids from any source, reading image bytes only where those ids are.

:func:`rmd_ray.data.locations.fetch_rows_by_id` fetches by id in one process for the sources whose
ids say where a row is (folder and ImageNet-validation paths) or that can push an id filter into the
scan (``parquet:``). Sources whose ids do not locate a row (``hf-parquet:`` ids from ``image.path``
or ``file:row``, ``webdataset:`` sample keys) are planned like any other and searched in Ray tasks,
one per shard: each reads the shard's ids and labels only, and reads the images of its shard only
when it holds a wanted id. The driver receives the wanted rows, nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc
import ray

from rmd_ray.distributed.runtime.cluster import init_ray
from rmd_ray.distributed.sources.plan import Shard, open_source, read_shard

__all__ = ["LOCATED_BY_ID", "fetch_rows"]

#: schemes whose rows :func:`rmd_ray.data.locations.fetch_rows_by_id` finds without a plan
LOCATED_BY_ID = ("folder", "imagenet-val", "parquet", "fashion-mnist", "cifar-pickle", "sklearn-digits")


@ray.remote(num_cpus=0.25)
def _rows_of(shard: Shard, classes: tuple[str, ...], wanted: pa.Array) -> pa.Table | None:
    listed = read_shard(shard, classes=classes, ids_only=True)
    if not pc.any(pc.is_in(listed.column("id"), value_set=wanted)).as_py():
        return None  # no wanted id here: its image bytes are never read
    table = read_shard(shard, classes=classes)
    table = table.filter(pc.is_in(table.column("id"), value_set=wanted))
    return table.drop_columns([c for c in ("shard", "shard_rows") if c in table.column_names])


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

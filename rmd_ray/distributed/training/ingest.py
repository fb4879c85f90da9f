"""Lazy training and evaluation datasets: shards read, decoded and cropped in Ray tasks, never on the driver.

Data flow of one epoch (docs/design.md section 7.7)::

    shard groups (tiny; shards_per_task each, drawn from the seed) --randomize_block_order (per epoch)
    or a seeded order--> one generator task per group: read_shard for each -> the group's rows permuted
    together -> decode -> geometry (imagenet: RandomResizedCrop + flip)
        -> weight looked up by id (sorted ids from the object store) -> uint8 (B, S, S, 3) batches
    --streaming_split(equal=True)--> workers: local shuffle buffer seeded by (seed, epoch, rank)

The row's ``index`` (int64) is its position in the shard plan (shard offset + row in shard): the CRL
loss and error messages key on it, and :func:`ids_at` turns indices back into string ids by reading
only the shards that hold them.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from rmd_ray.distributed.runtime.cluster import worker_setup
from rmd_ray.distributed.sources.plan import Shard, ShardedSource, read_shard
from rmd_ray.distributed.training.errors import IngestError
from rmd_ray.distributed.training.weight_join import lookup_weights

__all__ = [
    "Geometry", "channel_stats", "eval_dataset", "ids_at", "prestarted_split", "probe_native_size", "release_split",
    "train_dataset",
]

_ROWS_PER_BATCH = 256  # rows per yielded block: small enough to stream, large enough to amortise


@dataclass(frozen=True)
class Geometry:
    """What the decode tasks do to each image: the preset and the model's input side."""

    preset: str
    image_size: int | None
    native: tuple[int, int] | None = None  # (H, W) every image must have when image_size is None


def probe_native_size(source: ShardedSource) -> tuple[int, int]:
    """(H, W) of the first row of the first non-empty shard, decoded in a task."""
    shard = next((s for s in source.shards if s.n_rows), None)
    if shard is None:
        raise ValueError(f"source {source.spec!r} has no rows")
    return ray.get(_probe.remote(shard, source.classes))


@ray.remote(num_cpus=0.25, scheduling_strategy="DEFAULT")  # never captured by a Tune trial's placement group
def _probe(shard: Shard, classes: tuple[str, ...]) -> tuple[int, int]:
    from rmd_ray.data.decode import DecodeError, decode_image

    row = read_shard(shard, classes=classes).slice(0, 1).to_pylist()[0]
    try:
        image = decode_image(row)
    except DecodeError as err:
        raise IngestError(f"row id {row['id']!r}: {err}") from None
    return image.height, image.width


@functools.lru_cache(maxsize=8)
def _geometry_fn(geometry: Geometry, train: bool):
    from rmd_ray.nn.transforms import eval_geometry, train_geometry

    return (train_geometry if train else eval_geometry)(geometry.preset, geometry.image_size)


def _to_uint8(row: dict[str, Any], geometry: Geometry, *, train: bool) -> np.ndarray:
    from rmd_ray.data.decode import DecodeError, decode_image

    try:
        image = decode_image(row)
    except DecodeError as err:
        raise IngestError(f"row id {row['id']!r}: {err}") from None
    if geometry.image_size is None and geometry.native is not None and (image.height, image.width) != geometry.native:
        h, w = geometry.native
        raise IngestError(
            f"row id {row['id']!r} is {image.width}x{image.height} but the first training image is {w}x{h}; "
            "set image_size so that every image is resized to one size"
        )
    return np.asarray(_geometry_fn(geometry, train)(image), dtype=np.uint8)


def _decode_shard(
    batch: pa.Table, *, plan: dict[int, Shard], offsets: dict[int, int], classes: tuple[str, ...],
    geometry: Geometry, train: bool, permute: str, seed: int, weights: list | None,
) -> Iterator[dict[str, np.ndarray]]:
    """A group of shard indices in; their rows, interleaved, out in batches of uint8 images (a generator).

    The rows of every shard in the group are permuted together, so each yielded block mixes the group's
    shards: a class-sorted source (ImageFolder, the CIFAR-10 Parquet) has one or two classes per shard.
    """
    worker_setup()
    for group in batch.column("shards").to_pylist():
        tables, indices, group_weights = [], [], []
        for index in group:
            shard = plan[index]
            table = read_shard(shard, classes=classes)
            _check_labels(table, len(classes))
            if weights is not None:
                group_weights.append(lookup_weights(weights[0], table.column("id"), labels=table.column("label")))
            keep = [c for c in table.column_names if c not in ("shard", "shard_rows")]
            tables.append(table.select(keep))
            indices.append(offsets[index] + np.arange(table.num_rows, dtype=np.int64))
        table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
        index_of_row = np.concatenate(indices)
        shard_weights = np.concatenate(group_weights) if weights is not None else None
        n = table.num_rows
        if permute == "fresh":
            order = np.random.default_rng().permutation(n)
        elif permute == "seeded":
            order = np.random.default_rng([seed, group[0]]).permutation(n)
        else:
            order = np.arange(n)
        if train and geometry.preset == "imagenet":  # RandomResizedCrop draws from torch's global RNG
            import torch

            rng = np.random.default_rng() if permute == "fresh" else np.random.default_rng([seed, group[0], 1])
            torch.manual_seed(int(rng.integers(2**62)))
        for start in range(0, n, _ROWS_PER_BATCH):
            rows = order[start : start + _ROWS_PER_BATCH]
            part = table.take(pa.array(rows))
            records = part.to_pylist()
            out = {
                "image": np.stack([_to_uint8(r, geometry, train=train) for r in records]),
                "label": part.column("label").to_numpy().astype(np.int64),
                "index": index_of_row[rows],
            }
            if shard_weights is not None:
                out["weight"] = shard_weights[rows]
            yield out


@ray.remote(scheduling_strategy="DEFAULT")  # never captured by a Tune trial's placement group
def _warm(geometry: Geometry) -> None:
    from rmd_ray.data.decode import decode_image  # noqa: F401

    worker_setup()
    _geometry_fn(geometry, True)
    _geometry_fn(geometry, False)


def _train_runtime_env() -> dict[str, Any] | None:
    """The runtime environment Ray Train 2.60 gives its controller, and so the split coordinator and the
    decode tasks it launches; None when this Ray version does not expose the same internals.

    Ray's worker pool reuses an idle process only for a task with the same runtime environment, and Ray
    offers no way to pre-start processes for the controller's children: this mirrors
    ``DataParallelTrainer._initialize_and_run_controller`` (internal API, hence the guard).
    """
    try:
        from ray._common.constants import RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_ENV_VAR
        from ray.train.v2._internal.constants import (
            DEFAULT_RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_VALUE,
            get_env_vars_to_propagate,
        )
    except ImportError:
        return None
    env_vars = get_env_vars_to_propagate()
    env_vars.setdefault(RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_ENV_VAR, DEFAULT_RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_VALUE)
    return {"env_vars": env_vars}


def warm_decode_workers(count: int, *, geometry: Geometry, decode_cpus: float, train_env: bool = True) -> list[Any]:
    """Start ``count`` pooled worker processes that have imported what a decode task imports.

    Call before ``TorchTrainer.fit``, without waiting. Ray's worker pool reuses an idle process only for
    a task with the same runtime environment: ``train_env=True`` warms them in Ray Train's (that of the
    split Ray Train makes, whose coordinator inherits its controller's), ``False`` in this driver's (that
    of :func:`prestarted_split`'s decode tasks). Measured (benchmarks/training_scale.py, N = 4,000): the
    first batch of a run waited 3.5 s against 0.7-0.9 s in later epochs, as the first decode task started a
    fresh process; warmed, 2.6-2.7 s. Skipped inside a placement group (a Tune trial), where these tasks
    would queue for CPUs outside it.
    """
    runtime_env = _train_runtime_env() if train_env else {}
    if runtime_env is None or ray.get_runtime_context().get_placement_group_id() is not None:
        return []
    options = {"runtime_env": runtime_env} if runtime_env else {}
    return [_warm.options(num_cpus=decode_cpus, **options).remote(geometry) for _ in range(count)]


def prestarted_split(ds, world_size: int, *, execution_options: Any) -> list[Any] | None:
    """The training split Ray Train would make, made now, before ``fit()``; None where it should not be.

    Ray Train 2.60 makes ``streaming_split(world_size, equal=True)`` of a copy of the dataset carrying
    the ingest options only when rank 0 first calls ``get_dataset_shard``, after the worker group has
    started; its split coordinator is an actor in a fresh process, and the first batch of a run waited
    for it (2.2-2.4 s at N = 4,000 on 2 cores, 14% of epoch 1). Made here, the coordinator starts beside
    Ray Train's start-up: first batch 0.5-0.7 s, epoch 1 waits 4-5% (benchmarks/training_scale.py).

    Only on one node and outside a placement group: Ray Train passes the workers' nodes as locality hints,
    unknown before they are placed (on one node there is nothing to localise), and a Tune trial's
    processes stay in its placement group. The workers use it on the run's first attempt only
    (:meth:`FatalErrors.first_start`); a restart takes Ray Train's own split, since this one's epoch state
    went with the failed group.
    """
    if ray.get_runtime_context().get_placement_group_id() is not None:
        return None
    if sum(1 for node in ray.nodes() if node["Alive"]) != 1:
        return None
    ds = ds.copy(ds)
    ds.context.execution_options = copy.deepcopy(execution_options)
    return ds.streaming_split(world_size, equal=True)


def release_split(split: list[Any] | None) -> None:
    """Stop the executor of a :func:`prestarted_split` (what Ray Train does to its own split when a worker
    group ends), without waiting: decode tasks for a group that is gone would hold CPUs and object store.

    Uses the split iterator's coordinator handle, a Ray Data internal, hence the guard.
    """
    coordinator = getattr(split[0], "_coord_actor", None) if split else None
    if coordinator is not None:
        with contextlib.suppress(Exception):  # already gone with its node, or an older Ray
            coordinator.shutdown_executor.remote()


def _check_labels(table: pa.Table, num_classes: int) -> None:
    from rmd_ray.data.readers import label_errors

    reasons = label_errors(table.column("label"), n_classes=num_classes)
    bad = [i for i, r in enumerate(reasons) if r]
    if bad:
        raise IngestError(
            f"row id {table.column('id')[bad[0]].as_py()!r}: {reasons[bad[0]]} ({len(bad)} rows with bad labels in "
            "this shard); fix the labels or drop those rows"
        )


def _shard_dataset(source: ShardedSource, *, shuffle: str, seed: int, shards_per_task: int = 1):
    shards = [s for s in source.shards if s.n_rows]
    if shuffle == "seeded" or (shuffle == "fresh" and shards_per_task > 1):
        # groups drawn at random once (from the seed): a group mixes shards far apart in the plan, and so
        # classes of a class-sorted source; "fresh" still re-orders the groups every epoch
        shards = [shards[i] for i in np.random.default_rng(seed).permutation(len(shards))]
    groups = [[s.index for s in shards[i : i + shards_per_task]] for i in range(0, len(shards), shards_per_task)]
    ds = ray.data.from_items([{"shards": g} for g in groups], override_num_blocks=len(groups))
    if shuffle == "fresh":
        # one block per group: a new group order every execution (epoch). Not random_shuffle(): its
        # all-to-all tasks carry no scheduling strategy and inside a Tune trial they are captured by
        # the trial's placement group, where they never fit (seen here as a hang).
        ds = ds.randomize_block_order()
    return ds


def _offsets(source: ShardedSource) -> dict[int, int]:
    offsets, total = {}, 0
    for s in source.shards:
        offsets[s.index] = total
        total += s.n_rows
    return offsets


def train_dataset(
    source: ShardedSource, *, geometry: Geometry, augment: bool, weights_ref: Any | None, shuffle: str,
    seed: int, decode_cpus: float = 1.0, decode_tasks: int | None = None, shards_per_task: int = 1,
):
    """The lazy training dataset: ``image`` uint8 (S, S, 3), ``label``, ``index``, ``weight`` if given.

    ``augment=False`` gives every row the eval geometry. ``decode_tasks`` caps the tasks in flight
    (None: Ray Data's default). ``shards_per_task`` shards are read, and their rows interleaved, by one
    task (groups drawn once from ``seed``).

    ``shuffle``: ``"fresh"`` draws the shard order and each shard's row order anew every epoch (and
    RandomResizedCrop's draws); ``"seeded"`` fixes both from ``seed`` (reproducible runs; the epochs
    then differ only through the workers' seeded local shuffle buffer).
    """
    ds = _shard_dataset(source, shuffle=shuffle, seed=seed, shards_per_task=shards_per_task)
    ds = ds.map_batches(
        _decode_shard,
        fn_kwargs={
            "plan": {s.index: s for s in source.shards}, "offsets": _offsets(source), "classes": source.classes,
            "geometry": geometry, "train": augment, "permute": shuffle, "seed": seed,
            # wrapped in a list: Ray Data resolves top-level object refs in fn_kwargs into copies per call
            "weights": None if weights_ref is None else [weights_ref],
        },
        batch_size=1, batch_format="pyarrow", num_cpus=decode_cpus,
        compute=None if decode_tasks is None else ray.data.TaskPoolStrategy(size=decode_tasks),
    )
    return _stream_yields(ds, geometry)


def eval_dataset(source: ShardedSource, *, geometry: Geometry, decode_cpus: float = 1.0,
                 part: tuple[int, int] = (0, 1)):
    """The lazy evaluation dataset in plan order (``image``, ``label``, ``index``).

    ``part = (r, n)``: only every n-th shard from the r-th (one worker's part of a validation split);
    ``index`` stays the row's position in the whole source, so parts never share an index.
    """
    r, n = part
    ds = _shard_dataset(dataclasses.replace(source, shards=source.shards[r::n]), shuffle="none", seed=0)
    ds = ds.map_batches(
        _decode_shard,
        fn_kwargs={
            "plan": {s.index: s for s in source.shards}, "offsets": _offsets(source), "classes": source.classes,
            "geometry": geometry, "train": False, "permute": "none", "seed": 0, "weights": None,
        },
        batch_size=1, batch_format="pyarrow", num_cpus=decode_cpus,
    )
    return _stream_yields(ds, geometry)


def _stream_yields(ds, geometry: Geometry):
    """``ds`` with each of a decode task's yields its own block, so the first rows reach a worker while
    the task still decodes the rest.

    Ray Data buffers a task's yields until they pass ``DataContext.target_max_block_size`` (128 MiB by
    default) or the task ends: at 32 px a whole epoch of one task would be one block, handed over only
    when the task finished (docs/design.md 7.7).
    The target is set, on this dataset's own context only, to one yield's image bytes, which the yield
    (with its labels and indices) just exceeds. At 224 px (38 MB a yield) the buffer merged three yields
    into a block; now each is one.
    """
    side = (geometry.image_size, geometry.image_size) if geometry.image_size is not None else geometry.native
    if side is not None:
        yield_bytes = _ROWS_PER_BATCH * side[0] * side[1] * 3
        ds.context.target_max_block_size = min(ds.context.target_max_block_size or yield_bytes, yield_bytes)
    return ds


def channel_stats(source: ShardedSource, *, geometry: Geometry) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (in [0, 1] units) of the training images at the eval geometry.

    One streaming pass: each task returns the float64 sums of its batches
    (:func:`rmd_ray.nn.transforms.channel_moments`), the driver adds them up.
    """
    from rmd_ray.nn.transforms import channel_moments, moments_to_mean_std

    def moments(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"moments": channel_moments(batch["image"])[None, :]}

    total = None
    for batch in eval_dataset(source, geometry=geometry).map_batches(moments, batch_size=None).iter_batches(
        batch_size=None, batch_format="numpy"
    ):
        part = batch["moments"].sum(axis=0)
        total = part if total is None else total + part
    return moments_to_mean_std(total)


def ids_at(source: ShardedSource, indices: Sequence[int]) -> list[str]:
    """String ids of plan positions ``indices`` (reads only the shards that hold them, in tasks)."""
    offsets = _offsets(source)
    starts = np.array([offsets[s.index] for s in source.shards])
    wanted: dict[int, list[int]] = {}
    for i in indices:
        k = int(np.searchsorted(starts, i, side="right")) - 1
        wanted.setdefault(k, []).append(int(i) - int(starts[k]))
    refs = {k: _ids_of.remote(source.shards[k], source.classes, rows) for k, rows in wanted.items()}
    found = {k: dict(zip(wanted[k], ray.get(ref))) for k, ref in refs.items()}
    out = []
    for i in indices:
        k = int(np.searchsorted(starts, i, side="right")) - 1
        out.append(found[k][int(i) - int(starts[k])])
    return out


@ray.remote(num_cpus=0.25, scheduling_strategy="DEFAULT")  # never captured by a Tune trial's placement group
def _ids_of(shard: Shard, classes: tuple[str, ...], rows: list[int]) -> list[str]:
    ids = read_shard(shard, classes=classes).column("id")
    return [str(ids[r].as_py()) for r in rows]

"""First-epoch start-up: the training split made before fit(), the first batch fetched while the worker
builds its model, and decode processes warmed in Ray Train's runtime environment
(rmd_ray.distributed.training.worker / ingest)."""

from __future__ import annotations

import threading

import pytest

from rmd_ray.distributed.training.ingest import Geometry, _train_runtime_env, warm_decode_workers
from rmd_ray.distributed.training.worker import _Started, _train_shard


def _recording(items, seen_in):
    for item in items:
        seen_in.append(threading.current_thread().name)
        yield item


def test_started_fetches_the_first_item_in_the_background_and_keeps_the_order():
    seen: list[str] = []
    started = _Started(_recording([1, 2, 3], seen))
    started._thread.join(timeout=10)
    assert seen == ["first-batch"]  # before anyone iterated
    assert list(started) == [1, 2, 3]
    assert seen == ["first-batch", "MainThread", "MainThread"]


def test_started_reraises_the_pipeline_error_in_the_consumer():
    def failing():
        raise ValueError("row id 'x': not an image")
        yield  # pragma: no cover

    with pytest.raises(ValueError, match="row id 'x': not an image"):
        list(_Started(failing()))
    assert list(_Started(iter(()))) == []


def test_train_runtime_env_is_the_controllers():
    # DataParallelTrainer gives its controller {"env_vars": propagated vars + the blocking-get warning
    # switch}; the worker pool reuses a warmed process only for this exact environment.
    from ray._common.constants import RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_ENV_VAR

    env = _train_runtime_env()
    assert set(env) == {"env_vars"}
    assert env["env_vars"][RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_ENV_VAR] == "0"


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_warm_decode_workers_import_the_decoder_and_skip_inside_a_placement_group(ray_local):
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    geometry = Geometry("cifar", 32)
    refs = warm_decode_workers(2, geometry=geometry, decode_cpus=0.5)
    assert len(refs) == 2
    assert ray.get(refs, timeout=60) == [None, None]
    refs = warm_decode_workers(1, geometry=geometry, decode_cpus=0.5, train_env=False)  # the driver's own
    assert ray.get(refs, timeout=60) == [None]

    group = placement_group([{"CPU": 0.5}])
    ray.get(group.ready(), timeout=60)
    try:
        @ray.remote(num_cpus=0.5)
        def inside() -> int:  # as a Tune trial's driver code runs: captured by the trial's group
            return len(warm_decode_workers(2, geometry=geometry, decode_cpus=0.5))

        strategy = ray.util.scheduling_strategies.PlacementGroupSchedulingStrategy(
            group, placement_group_capture_child_tasks=True
        )
        assert ray.get(inside.options(scheduling_strategy=strategy).remote(), timeout=60) == 0
    finally:
        remove_placement_group(group)


def _small_source(rows: int = 96):
    import numpy as np

    from rmd_ray.data.readers import from_arrays
    from rmd_ray.distributed.sources.plan import source_from_table

    table = from_arrays(np.zeros((rows, 4, 4, 3), np.uint8), np.arange(rows) % 3,
                        ids=[f"r{i}" for i in range(rows)], classes=["a", "b", "c"])
    return source_from_table(table, shard_rows=16)


@pytest.mark.ray
@pytest.mark.timeout(180)
def test_prestarted_split_gives_each_rank_equal_rows_with_the_ingest_options(ray_local):
    import copy

    import numpy as np
    from ray.data import DataContext

    from rmd_ray.distributed.training.ingest import prestarted_split, train_dataset

    ds = train_dataset(_small_source(), geometry=Geometry("cifar", None, (4, 4)), augment=False,
                       weights_ref=None, shuffle="seeded", seed=0, decode_tasks=1)
    options = copy.deepcopy(DataContext.get_current().execution_options)
    options.preserve_order = True
    splits = prestarted_split(ds, 2, execution_options=options)
    assert len(splits) == 2
    # Ray Train's shallow copy shares the dataset's context, and sets the ingest options on it: so does this
    assert ds.context.execution_options.preserve_order is True

    import threading

    seen: dict[int, list[int]] = {}

    def consume(rank: int) -> None:  # the ranks of an equal split must read concurrently, as workers do
        seen[rank] = [int(i) for b in splits[rank].iter_batches(batch_size=None) for i in b["index"]]

    for _ in range(2):  # two epochs from the same coordinator
        threads = [threading.Thread(target=consume, args=(r,)) for r in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert len(seen[0]) == len(seen[1]) == 48
        assert sorted(seen[0] + seen[1]) == list(range(96))
        assert not np.isin(seen[0], seen[1]).any()


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_prestarted_split_is_skipped_on_several_nodes_and_inside_a_placement_group(ray_local, monkeypatch):
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    from rmd_ray.distributed.training import ingest

    ds = ray.data.range(8)
    alive = [{"Alive": True}, {"Alive": True}, {"Alive": False}]
    with monkeypatch.context() as patch:  # Ray Train's locality hints need the workers' nodes
        patch.setattr(ingest.ray, "nodes", lambda: alive)
        assert ingest.prestarted_split(ds, 1, execution_options=ds.context.execution_options) is None
        patch.setattr(ingest.ray, "nodes", lambda: alive[1:])
        assert ingest.prestarted_split(ds, 1, execution_options=ds.context.execution_options) is not None

    group = placement_group([{"CPU": 0.5}])
    ray.get(group.ready(), timeout=60)
    try:
        @ray.remote(num_cpus=0.5)
        def inside() -> bool:  # a Tune trial's driver code
            return ingest.prestarted_split(ds, 1, execution_options=ds.context.execution_options) is None

        strategy = ray.util.scheduling_strategies.PlacementGroupSchedulingStrategy(
            group, placement_group_capture_child_tasks=True
        )
        assert ray.get(inside.options(scheduling_strategy=strategy).remote(), timeout=60) is True
    finally:
        remove_placement_group(group)


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_the_prestarted_split_serves_the_first_worker_group_only(ray_local, monkeypatch):
    import dataclasses

    import ray

    from rmd_ray.distributed.training.errors import FatalErrors

    @dataclasses.dataclass
    class Spec:
        fatal: object
        prestarted_split: list | None

    class Coordinator:  # the split coordinator's handle: only shutdown_executor.remote() is called
        def __init__(self) -> None:
            self.shutdown_executor = self
            self.calls = 0

        def remote(self) -> None:
            self.calls += 1

    class Split:
        def __init__(self, name: str, coordinator: Coordinator) -> None:
            self.name, self._coord_actor = name, coordinator

    group: list[bool] = []

    def broadcast_from_rank_zero(value):  # every rank gets rank 0's value (rank 0 calls first here)
        group.append(value)
        return group[0]

    monkeypatch.setattr("ray.train.get_dataset_shard", lambda name: f"train's own {name}")
    monkeypatch.setattr("ray.train.collective.broadcast_from_rank_zero", broadcast_from_rank_zero)
    record = FatalErrors.remote()
    coordinator = Coordinator()
    spec = Spec(fatal=record, prestarted_split=[Split("rank 0's", coordinator), Split("rank 1's", coordinator)])
    # the first worker group: rank 0 asks the record keeper, rank 1 follows rank 0's answer
    assert [_train_shard(spec, rank, 2).name for rank in (0, 1)] == ["rank 0's", "rank 1's"]
    assert group == [True, False] and coordinator.calls == 0
    group.clear()  # a restarted group: Ray Train's own split on every rank; rank 0 stops the first one's executor
    assert [_train_shard(spec, rank, 2) for rank in (0, 1)] == ["train's own train"] * 2
    assert group == [False, False] and coordinator.calls == 1
    group.clear()
    assert _train_shard(spec, 0, 1) == "train's own train" and group == []  # alone: nothing to broadcast
    assert _train_shard(Spec(fatal=record, prestarted_split=None), 0, 1) == "train's own train"
    ray.kill(record)  # the record keeper lost with its node: Ray Train's split
    assert _train_shard(Spec(fatal=record, prestarted_split=[Split("x", coordinator)]), 0, 1) == "train's own train"

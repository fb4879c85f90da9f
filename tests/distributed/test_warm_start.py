"""First-epoch start-up: the first batch fetched while the worker builds its model, and decode processes
warmed in Ray Train's runtime environment (rmd_ray.distributed.training.worker / ingest)."""

from __future__ import annotations

import threading

import pytest

from rmd_ray.distributed.training.ingest import Geometry, _train_runtime_env, warm_decode_workers
from rmd_ray.distributed.training.worker import _Started


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

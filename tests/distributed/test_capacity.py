"""The bounded wait for a worker group the cluster cannot hold, and the error that names the last checkpoint.

The controller callback and the message are checked here without a cluster; the node lost with no spare
capacity, end to end, is in test_fault_tolerance.py.
"""

from __future__ import annotations

import json
import pickle

import pytest

from rmd_ray.distributed.training import TrainConfig, capacity
from rmd_ray.distributed.training.capacity import (
    PlacementTimeout,
    PlacementWatchdog,
    WorkerCapacityError,
    capacity_error,
    check_wait,
    last_checkpoint,
)
from rmd_ray.nn.engine import OptimConfig


def _state(name: str):
    return type(name, (), {})()  # the watchdog goes by the state's class name, as Ray's states are plain classes


def test_watchdog_raises_once_no_group_has_run_for_the_timeout(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(capacity.time, "monotonic", lambda: now[0])
    dog = PlacementWatchdog(15)
    running, restarting = _state("RunningState"), _state("RestartingState")
    dog.after_controller_state_update(None, _state("InitializingState"))
    now[0] += 40  # a slow first start is fine as long as the group then runs
    dog.after_controller_state_update(None, running)
    now[0] += 500
    dog.after_controller_state_update(running, running)
    for name, dt in (("RestartingState", 0), ("SchedulingState", 1), ("ReschedulingState", 10), ("SchedulingState", 4)):
        now[0] += dt
        dog.after_controller_state_update(restarting, _state(name))  # 15 s, not more: still waiting
    dog.after_controller_state_update(None, _state("ShuttingDownState"))  # not a wait for room: ignored
    now[0] += 0.5
    with pytest.raises(PlacementTimeout, match="no worker group could be placed for 16 s after losing workers") as err:
        dog.after_controller_state_update(restarting, _state("ReschedulingState"))
    assert pickle.loads(pickle.dumps(err.value)).waited_s == err.value.waited_s == 15.5  # crosses to the driver

    fresh = PlacementWatchdog(5)
    fresh.after_controller_state_update(None, _state("InitializingState"))
    now[0] += 6
    with pytest.raises(PlacementTimeout, match="for 6 s at the start"):
        fresh.after_controller_state_update(None, _state("InitializingState"))  # elastic, below min_workers


class _ControllerError(Exception):  # what Ray Train's ControllerError carries: the controller's failure
    def __init__(self, failure):
        super().__init__(str(failure))
        self.controller_failure = failure


def _snapshot(run, name: str, epoch: int) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / capacity.SNAPSHOT_FILE).write_text(json.dumps(
        {"latest_checkpoint_result": {"checkpoint_dir_name": name, "metrics": {"epoch": epoch, "val_acc": 0.5}}}
    ))


def test_the_error_names_the_need_the_wait_and_the_checkpoint_to_rerun_from(tmp_path, monkeypatch):
    # what the cluster has now: a head and the node left (or, below, a cluster that no longer answers)
    monkeypatch.setattr(capacity.ray, "cluster_resources", lambda: {"CPU": 2.0, "GPU": 1.0})
    monkeypatch.setattr(capacity.ray, "nodes", lambda: [{"Alive": True}, {"Alive": True}, {"Alive": False}])
    cfg = TrainConfig(loss="ce", num_workers=2, cpus_per_worker=1.5, placement_timeout_s=15,
                      optim=OptimConfig(epochs=3))
    run = tmp_path / "r"
    _snapshot(run, "epoch_0001_ab12cd34", 1)
    assert last_checkpoint(str(run)) == (str(run / "epoch_0001_ab12cd34"), 1)
    err = capacity_error(_ControllerError(PlacementTimeout(21.2, True)), cfg, str(run))
    assert isinstance(err, WorkerCapacityError) and err.checkpoint == str(run / "epoch_0001_ab12cd34")
    assert str(err) == (
        "training stopped: after losing workers, the cluster could not place 2 workers x 1.5 CPUs for 21 s "
        f"(placement_timeout_s=15); it has 2 CPUs on 2 nodes now. Last checkpoint: {run / 'epoch_0001_ab12cd34'} "
        "(epoch 1 of 3), intact. Rerun the same command once the cluster has room to continue from it, or set "
        "min_workers (--min-workers) to go on with fewer workers."
    )
    assert pickle.loads(pickle.dumps(err)).checkpoint == err.checkpoint

    def unreachable():
        raise ConnectionError("GCS gone")

    monkeypatch.setattr(capacity.ray, "cluster_resources", unreachable)
    elastic = TrainConfig(loss="ce", num_workers=4, min_workers=2, use_gpu=True, optim=OptimConfig(epochs=3))
    err = capacity_error(_ControllerError(PlacementTimeout(601, False)), elastic, str(tmp_path / "none"))
    assert err.checkpoint is None and str(err) == (
        "training stopped: at the start, the cluster could not place at least 2 workers x 1 CPUs + 1 GPU each for "
        "601 s (placement_timeout_s=600). No checkpoint was written yet. Rerun the same command once the cluster "
        "has room."
    )
    assert capacity_error(RuntimeError("worker died"), cfg, str(run)) is None  # any other failure: not this
    (run / capacity.SNAPSHOT_FILE).write_text("{not json")
    assert last_checkpoint(str(run)) == (None, None)


def test_an_elastic_wait_shorter_than_rays_old_size_retries_is_warned_about(monkeypatch, caplog):
    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "10")
    with caplog.at_level("WARNING", logger="rmd_ray.training"):
        check_wait(TrainConfig(loss="ce", num_workers=2, min_workers=1, placement_timeout_s=39))
        check_wait(TrainConfig(loss="ce", num_workers=2, min_workers=1, placement_timeout_s=40))  # 20 s + 2 attempts
        check_wait(TrainConfig(loss="ce", num_workers=2, placement_timeout_s=5))  # a fixed group: nothing to wait for
    assert [r.getMessage() for r in caplog.records] == [
        "placement_timeout_s=39 may stop an elastic restart that would succeed: Ray retries the old group size for "
        "up to 40 s first; use at least that"
    ]

"""A worker group the cluster cannot hold: a bounded wait, then one clear error that names the last checkpoint.

Ray Train 2.60 waits without end for room it will never get. A fixed-size group that lost a node with no
spare capacity is retried in start attempts of ``RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S`` (60 s) each, and
``FailureConfig.controller_failure_limit`` allows any number of them; an elastic group below its
``min_workers`` makes no attempt at all and waits. :class:`PlacementWatchdog`, a callback on the Train
controller, ends either wait once the group has not been running for ``TrainConfig.placement_timeout_s``;
the driver turns that into :class:`WorkerCapacityError`: what the workers need, what the cluster has now,
and the last checkpoint, from which a rerun of the same command continues (docs/design.md section 7.7).
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

import ray
from ray.train.v2._internal.execution.callback import ControllerCallback

from rmd_ray.io import storage

if TYPE_CHECKING:  # the Train controller unpickles the watchdog: it need not import torch for a type
    from rmd_ray.distributed.training.config import TrainConfig

__all__ = ["PlacementTimeout", "PlacementWatchdog", "WorkerCapacityError", "capacity_error", "check_wait",
           "last_checkpoint"]

log = logging.getLogger("rmd_ray.training")

#: Ray Train's record of the registered checkpoints, in the run's folder; the latest is what a rerun resumes from.
SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"
#: How often Ray's autoscaling coordinator refreshes its view of the nodes, which elastic restarts size the group by.
COORDINATOR_TICK_S = 20.0
# Controller states in which no worker group runs and one is being (or waiting to be) placed.
_WAITING = frozenset({"InitializingState", "SchedulingState", "ReschedulingState", "RestartingState", "ResizingState"})


class PlacementTimeout(RuntimeError):
    """Raised on the Train controller: no worker group has run for ``waited_s`` seconds."""

    def __init__(self, waited_s: float, after_loss: bool) -> None:
        when = "after losing workers" if after_loss else "at the start"
        super().__init__(f"no worker group could be placed for {waited_s:.0f} s {when}")
        self.waited_s, self.after_loss = float(waited_s), bool(after_loss)

    def __reduce__(self):
        return (type(self), (self.waited_s, self.after_loss))


class WorkerCapacityError(RuntimeError):
    """Training stopped: the cluster could not place the worker group within ``placement_timeout_s``.

    ``checkpoint`` is the last registered checkpoint (a folder holding ``model.pt``, any URI), or None when
    the run stopped before its first one; rerunning the same command continues from it.
    """

    def __init__(self, message: str, checkpoint: str | None = None) -> None:
        super().__init__(message)
        self.checkpoint = checkpoint

    def __reduce__(self):
        return (type(self), (str(self), self.checkpoint))


class PlacementWatchdog(ControllerCallback):
    """Controller callback: raise :class:`PlacementTimeout` when no group has run for ``timeout_s`` seconds.

    The controller updates its state on every loop iteration (a few a second while it waits, once per start
    attempt while a placement group is pending), so the wait is checked between attempts: the run stops at
    most one start attempt after ``timeout_s``. Any error from a callback ends the run (Ray routes it to the
    failure policy as a controller error it does not retry).
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = float(timeout_s)
        self._since: float | None = None
        self._ran = False

    def after_controller_state_update(self, previous_state: Any, current_state: Any) -> None:
        name = type(current_state).__name__
        if name == "RunningState":
            self._since, self._ran = None, True
            return
        if name not in _WAITING:
            return
        now = time.monotonic()
        if self._since is None:
            self._since = now
        elif now - self._since > self.timeout_s:
            raise PlacementTimeout(now - self._since, self._ran)


def check_wait(cfg: TrainConfig) -> None:
    """Warn when an elastic run's ``placement_timeout_s`` may end a restart that would have succeeded.

    After a loss, Ray Train sizes the new group from its autoscaling coordinator's view of the nodes, which is
    refreshed every 20 s: until then it retries the old size, one start attempt at a time, and that counts
    as waiting for room.
    """
    attempt = float(os.environ.get("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", 60.0))
    if cfg.min_workers is not None and cfg.min_workers < cfg.num_workers and \
            cfg.placement_timeout_s < COORDINATOR_TICK_S + 2 * attempt:
        log.warning("placement_timeout_s=%g may stop an elastic restart that would succeed: Ray retries the old "
                    "group size for up to %g s first; use at least that", cfg.placement_timeout_s,
                    COORDINATOR_TICK_S + 2 * attempt)


def last_checkpoint(run_uri: str) -> tuple[str | None, int | None]:
    """(folder, finished epochs) of the latest checkpoint Ray Train registered under ``run_uri``; (None, None)
    when there is none or its record cannot be read."""
    try:
        latest = storage.read_json(storage.join(run_uri, SNAPSHOT_FILE)).get("latest_checkpoint_result") or {}
        name = latest["checkpoint_dir_name"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None, None
    epoch = (latest.get("metrics") or {}).get("epoch")
    return storage.join(run_uri, name), int(epoch) if isinstance(epoch, (int, float)) else None


def capacity_error(err: BaseException, cfg: TrainConfig, run_uri: str) -> WorkerCapacityError | None:
    """The one-line error for a run the watchdog stopped (None for any other failure)."""
    failure = getattr(err, "controller_failure", None)
    if not isinstance(failure, PlacementTimeout):
        return None
    least = cfg.min_workers or cfg.num_workers
    need = (f"{'at least ' if least < cfg.num_workers else ''}{least} worker{'s' if least > 1 else ''} x "
            f"{cfg.cpus_per_worker:g} CPUs")
    need += " + 1 GPU each" if cfg.use_gpu else ""
    checkpoint, epoch = last_checkpoint(run_uri)
    if checkpoint is None:
        last = "No checkpoint was written yet. Rerun the same command once the cluster has room"
    else:
        done = f"epoch {epoch} of {cfg.optim.epochs}" if epoch is not None else "epoch unknown"
        last = (f"Last checkpoint: {checkpoint} ({done}), intact. Rerun the same command once the cluster has room "
                "to continue from it")
    advice = "" if least < cfg.num_workers else ", or set min_workers (--min-workers) to go on with fewer workers"
    when = "after losing workers" if failure.after_loss else "at the start"
    return WorkerCapacityError(
        f"training stopped: {when}, the cluster could not place {need} for {failure.waited_s:.0f} s "
        f"(placement_timeout_s={cfg.placement_timeout_s:g}){_cluster_now(cfg.use_gpu)}. {last}{advice}.",
        checkpoint,
    )


def _cluster_now(gpus: bool) -> str:
    """``; it has N CPUs on M nodes now`` (GPUs too when asked for), or nothing when the cluster cannot say."""
    try:
        have = ray.cluster_resources()
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    except Exception:  # noqa: BLE001 - the cluster itself is gone: the rest of the message still holds
        return ""
    gpu = f" and {have.get('GPU', 0.0):g} GPUs" if gpus else ""
    return f"; it has {have.get('CPU', 0.0):g} CPUs{gpu} on {nodes} nodes now"

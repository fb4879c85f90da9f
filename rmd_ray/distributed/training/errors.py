"""Errors that cross the worker / driver boundary, and the one that reaches the caller of a failed fit."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import ray

__all__ = ["FatalErrors", "IngestError", "WorkerFailure", "fatal_record", "worker_error"]


class IngestError(ValueError):
    """Bad training input found inside a read task (an undecodable image, an id without a weight).

    Picklable by its message alone, so it crosses Ray's process boundaries intact.
    """

    def __reduce__(self):
        return (type(self), (str(self),))


class WorkerFailure(RuntimeError):
    """A deterministic worker error, carried to the driver as a plain record (picklable).

    ``NonFiniteLossError`` cannot cross a process boundary itself: its keyword-only ``__init__``
    breaks unpickling, and Ray then reports a health-check failure instead of the error.
    """

    def __init__(self, record: dict[str, Any]) -> None:
        super().__init__(record["message"])
        self.record = record

    def __reduce__(self):
        return (type(self), (self.record,))


@ray.remote(num_cpus=0)
class FatalErrors:
    """Holds the first deterministic worker error of a run, so that retries fail at once, and whether
    the run's first worker group has started (which may use the split made before ``fit()``)."""

    def __init__(self) -> None:
        self._record: dict[str, Any] | None = None
        self._started = False

    def first_start(self) -> bool:
        """True on the first call only: rank 0 of the run's first worker group asks it once."""
        first, self._started = not self._started, True
        return first

    def put(self, record: dict[str, Any]) -> None:
        if self._record is None:
            self._record = record

    def get(self) -> dict[str, Any] | None:
        return self._record


def fatal_record(err: BaseException) -> dict[str, Any] | None:
    """The record of a deterministic error anywhere in ``err``'s cause chain (Ray wraps task errors)."""
    # imported here: decode tasks import this module, and rmd_ray.nn.engine would load torch there
    from rmd_ray.nn.engine import NonFiniteLossError

    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, WorkerFailure):
            return err.record
        if isinstance(err, NonFiniteLossError):
            return {"kind": "nonfinite", "step": err.step, "ids": list(err.ids), "value": err.value,
                    "message": str(err)}
        if isinstance(err, IngestError):
            return {"kind": "value", "message": str(err)}
        if isinstance(err, ray.exceptions.RayTaskError) and "IngestError" in str(err):
            # Ray Data re-raises a task's error as a RayTaskError whose cause may not unpickle here
            message = str(err).strip().splitlines()[-1]
            return {"kind": "value", "message": message.split("IngestError: ", 1)[-1]}
        err = getattr(err, "cause", None) or err.__cause__ or err.__context__
    return None


def worker_error(
    err: BaseException, record: dict | None, ids_of: Callable[[Sequence[int]], list[str]]
) -> BaseException:
    """The error to show the caller for a failed ``fit()``; ``ids_of`` maps row indices to string ids."""
    if record is None:
        for failure in getattr(err, "worker_failures", {}).values():
            record = fatal_record(failure)
            if record is not None:
                break
    if record is not None and record["kind"] == "nonfinite":
        from rmd_ray.nn.engine import NonFiniteLossError

        return NonFiniteLossError(step=record["step"], ids=ids_of(record["ids"]), value=record["value"])
    if record is not None:
        return ValueError(record["message"])
    failures = getattr(err, "worker_failures", None)
    if failures:
        rank, failure = sorted(failures.items())[0]
        return RuntimeError(f"training failed on worker rank {rank}: {type(failure).__name__}: {failure}")
    return RuntimeError(f"training failed: {err}")

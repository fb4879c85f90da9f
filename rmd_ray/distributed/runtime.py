"""Starting or joining Ray, sized so that data tasks never starve (docs/design.md section 6)."""

from __future__ import annotations

import os
from typing import Any

import ray


def physical_cpus() -> int:
    """CPUs this process may use (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


def init_ray(address: str | None = None, *, num_cpus: int | None = None, **kwargs: Any) -> dict[str, float]:
    """Join ``address`` (a cluster, or ``"auto"``) or start a local instance; return the cluster resources.

    Locally we declare one logical CPU more than the machine has: a stage that holds every CPU
    (an actor pool, a training group) otherwise leaves the tasks that feed it no CPU and the
    pipeline hangs silently. ``ray.init`` is skipped when Ray is already up in this process.
    """
    if not ray.is_initialized():
        if address is None:
            kwargs.setdefault("include_dashboard", False)
            # address="local": always a new instance of our own, never a cluster that `ray start` left running
            ray.init(address="local", num_cpus=num_cpus or physical_cpus() + 1, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    return ray.cluster_resources()


def worker_setup(threads: int = 1) -> None:
    """Per-process setup for actors and tasks: one torch thread each (2 threads per process are 4-5x
    slower here once anything else runs, docs/design.md section 6)."""
    import torch

    torch.set_num_threads(threads)

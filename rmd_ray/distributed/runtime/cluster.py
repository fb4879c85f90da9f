"""Starting or joining Ray, sized so that data tasks never starve (docs/design.md section 6)."""

from __future__ import annotations

import os
from typing import Any

import ray

from rmd_ray.distributed.runtime.progress import route_ray_logs, route_worker_output

_context: dict[str, Any] = {}


#: Set to 1 to keep every actor and training worker on the CPU even when it was given (logical) GPUs:
#: how GPU placement is tested on machines without one (tests/distributed/test_logical_gpus.py).
FORCE_CPU_ENV = "RMD_RAY_FORCE_CPU"


def forced_cpu() -> bool:
    """True when ``RMD_RAY_FORCE_CPU=1`` in this process's environment (workers inherit the driver's)."""
    return os.environ.get(FORCE_CPU_ENV, "") == "1"


def worker_device() -> Any:
    """The torch device of an actor: CUDA when Ray gave it a GPU and CUDA works, unless forced to CPU."""
    import torch

    cuda = torch.cuda.is_available() and bool(ray.get_gpu_ids()) and not forced_cpu()
    return torch.device("cuda" if cuda else "cpu")


def physical_cpus() -> int:
    """CPUs this process may use (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


def init_ray(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    log_file: str | os.PathLike | None = None,
    dashboard: bool = False,
    **kwargs: Any,
) -> dict[str, float]:
    """Join ``address`` (a cluster, or ``"auto"``) or start a local instance; return the cluster resources.

    Locally we declare one logical CPU more than the machine has: a stage that holds every CPU
    (an actor pool, a training group) otherwise leaves the tasks that feed it no CPU and the
    pipeline hangs silently. ``ray.init`` is skipped when Ray is already up in this process.

    Parameters
    ----------
    log_file : path, optional
        Send Ray's own logs (driver loggers, Ray Data progress, every worker's output) to this file
        instead of the terminal (:mod:`rmd_ray.distributed.runtime.progress`); None leaves Ray's printing as is.
    dashboard : bool
        Start the Ray dashboard of a local instance, bound to 127.0.0.1 only (it has no
        authentication of its own); :func:`dashboard_url` gives its address. A cluster's dashboard
        is the cluster's business.
    """
    if not ray.is_initialized():
        if log_file is not None:
            route_ray_logs(log_file)
        if address is None:
            kwargs.setdefault("include_dashboard", dashboard)
            if dashboard:
                kwargs.setdefault("dashboard_host", "127.0.0.1")
            # address="local": always a new instance of our own, never a cluster that `ray start` left running
            context = ray.init(address="local", num_cpus=num_cpus or physical_cpus() + 1, **kwargs)
            _context["extra_cpus"] = 0 if num_cpus else 1
        else:
            context = ray.init(address=address, **kwargs)
        _context["dashboard_url"] = getattr(context, "dashboard_url", None) or None
        if log_file is not None:
            route_worker_output()
    return ray.cluster_resources()


def compute_cpus() -> float:
    """The cluster's CPUs that can do work: Ray's CPU total, less the extra logical CPU that
    :func:`init_ray` declares on a local instance (it keeps pipelines from hanging; it is no core)."""
    return ray.cluster_resources().get("CPU", 0.0) - _context.get("extra_cpus", 0)


def dashboard_url() -> str | None:
    """``http://host:port`` of the Ray dashboard that :func:`init_ray` started or joined, or None."""
    url = _context.get("dashboard_url")
    if url and "://" not in url:
        url = f"http://{url}"
    return url


def worker_setup(threads: int = 1) -> None:
    """Per-process setup for actors and tasks: one torch thread each (several processes share the
    cores, so more threads per process oversubscribe them and every process slows down; docs/design.md
    section 6, Too many threads).

    A process that has not imported torch is not made to (a decode task at the cifar geometry never
    needs it, and the import would be paid again in every fresh worker process); the thread count is
    left in the environment, which torch reads when it is imported later.
    """
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    else:
        os.environ["OMP_NUM_THREADS"] = str(threads)


def reclaim_orphaned_placement_groups() -> int:
    """Remove this job's placement groups whose creating actor has died; return how many were removed.

    A placement group made by an actor outlives it until the job ends (GCS removes it only when both
    creator actor and job are dead). Ray Train's controller makes its worker group's group; when Tune
    stops a trial, the trial actor and the controller it owns die, and the group keeps its CPUs for the
    rest of the job. Train's own ``PlacementGroupCleaner`` asks the state API whether the controller is
    alive, and that API needs the dashboard, which local instances here run without: the groups are
    never removed, and the next run that needs their CPUs waits for them forever (docs/design.md
    section 6, Silent hangs).

    Only groups of this job, not detached, made by an actor (never the driver's own) whose creator is
    dead are removed: no live code can use or remove them. Reads the GCS table through Ray's private
    state accessor because the public ``placement_group_table()`` drops the creator fields.
    """
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    removed = 0
    for group in _actor_made_placement_groups():
        if group.creator_actor_dead:
            remove_placement_group(PlacementGroup(PlacementGroupID(group.placement_group_id)))
            removed += 1
    return removed


def count_actor_made_placement_groups() -> int:
    """How many placement groups of this job, made by an actor (dead or alive), are not removed yet."""
    return sum(1 for _ in _actor_made_placement_groups())


def _actor_made_placement_groups():
    # Ray's private state accessor: the public placement_group_table() drops the creator fields
    from ray._private.state import state as global_state
    from ray.core.generated import gcs_pb2

    job = bytes.fromhex(ray.get_runtime_context().get_job_id())
    for raw in global_state._connect_and_get_accessor().get_placement_group_table():
        group = gcs_pb2.PlacementGroupTableData.FromString(raw)
        made_by_actor = group.creator_actor_id.strip(b"\xff") != b""  # the nil id (all 0xff): the driver
        if (
            group.state != gcs_pb2.PlacementGroupTableData.REMOVED
            and not group.is_detached
            and group.creator_job_id == job
            and made_by_actor
        ):
            yield group

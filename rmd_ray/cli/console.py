"""What each command prints: its progress lines and results on the console; Ray's logs in a file.

Commands that start Ray (score, train, tune, run) write Ray's and Ray Data's own output, and
rmd-ray's INFO messages, to ``<output>/logs/ray.log`` (:mod:`rmd_ray.distributed.runtime.progress`); with
``--verbose`` all of it is shown on the console instead, as Ray prints it.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def log_file_for(output: str | None) -> Path:
    """``<output>/logs/ray.log`` for a local output folder; a fresh local temporary folder for a URI
    (the log is written as it goes, which object stores do not allow)."""
    from rmd_ray.io.storage import is_remote

    if output and not is_remote(output):
        return Path(output) / "logs" / "ray.log"
    return Path(tempfile.mkdtemp(prefix="rmd-ray-logs-")) / "ray.log"


def setup_console(args: argparse.Namespace) -> None:
    """Logging for one command; sets ``args.log_file`` (None: Ray prints to the console as usual)."""
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format=_FORMAT)
    ours = logging.getLogger("rmd_ray")
    ours.setLevel(logging.INFO)
    args.log_file = None
    uses_ray = getattr(args, "uses_ray", False)
    if callable(uses_ray):  # commands that start Ray only for some options (evaluate)
        uses_ray = uses_ray(args)
    if args.verbose or not uses_ray:
        return
    from rmd_ray.distributed.runtime.progress import route_ray_logs

    args.log_file = route_ray_logs(log_file_for(getattr(args, "output", None)))
    # rmd-ray's INFO messages (timings, shard counts) go to the file; its warnings stay on the console
    to_file = logging.FileHandler(args.log_file)
    to_file.setFormatter(logging.Formatter(_FORMAT))
    to_console = logging.StreamHandler(sys.stderr)
    to_console.setLevel(logging.WARNING)
    to_console.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    ours.handlers[:] = [to_file, to_console]
    ours.propagate = False
    print(f"Ray's logs: {args.log_file} (--verbose shows them here)", flush=True)


def start_ray(args: argparse.Namespace) -> None:
    """``init_ray`` with the command's --address, --num-cpus, --dashboard and log file."""
    from rmd_ray.distributed.runtime.cluster import dashboard_url, init_ray

    started = _started(args)
    init_ray(args.address, num_cpus=args.num_cpus, log_file=args.log_file, dashboard=args.dashboard)
    if args.dashboard and not started:
        url = dashboard_url()
        print(f"Ray dashboard: {url}" if url else "Ray dashboard: none (install ray[default])", flush=True)


def _started(args: argparse.Namespace) -> bool:
    import ray

    return ray.is_initialized()

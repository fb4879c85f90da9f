"""What reaches the terminal: rmd-ray's own progress and results; Ray's and Ray Data's logs go to a file.

Left alone, one ``rmd-ray run`` floods a non-interactive terminal with Ray's internal logs, its own
results lost among them (Ray Data progress redraws, Ray Train controller messages, a "Failed to query
Ray Train Controller actor state" line every few seconds). :func:`route_ray_logs` sends all of that to
one log file instead (docs/benchmarks.md, Notes moved from code); ``rmd-ray --verbose`` skips it and
shows everything, as Ray would.

Three streams are routed:

- the driver's Python loggers (``ray``, ``ray.data``, ``ray.train``, ``ray.tune``) and the warnings
  Ray's own code raises (deprecations);
- Ray Data's progress bars and execution-start banners (switched off in the ``DataContext``, which
  datasets carry to the processes that execute them);
- every worker's and actor's stdout/stderr, which Ray forwards to the driver: they go to the file,
  except lines that start with :data:`PROGRESS_PREFIX`, which are rmd-ray's own progress lines
  printed by code running inside Ray (:mod:`rmd_ray.distributed.runtime.dashboards`) and reach the console.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any, TextIO

#: A worker or actor line that starts with this is rmd-ray's progress: shown on the console.
PROGRESS_PREFIX = "[rmd-ray] "

_RAY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "ray.air")
_state: dict[str, Any] = {}


def progress(text: str) -> None:
    """Print one progress line from inside Ray (an actor or task) so that the driver shows it."""
    print(PROGRESS_PREFIX + text, flush=True)


def route_ray_logs(log_file: str | os.PathLike) -> Path:
    """Send the driver's Ray loggers, Ray's warnings and Ray Data's progress output to ``log_file``.

    Call before ``ray.init``; call :func:`route_worker_output` after it. Calling again with
    another file moves the routing there. Returns the log file's path.
    """
    from ray.data import DataContext

    path = Path(log_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    stream = open(path, "a", buffering=1)  # noqa: SIM115 - kept open for the life of the process
    old = _state.get("stream")
    _state.update(stream=stream, path=path)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    for name in _RAY_LOGGERS:
        logger = logging.getLogger(name)
        for existing in list(logger.handlers):
            # Ray's console handlers (stderr) and our earlier file; Ray Data's own session file stays
            if type(existing) is logging.StreamHandler or type(existing).__name__ == "PlainRayHandler":
                logger.removeHandler(existing)
        logger.addHandler(handler)
        logger.propagate = False
    if old is not None:
        old.close()
    context = DataContext.get_current()
    # With no terminal Ray Data logs a progress summary every few seconds; with one it redraws bars.
    # Either way it is Ray's view, not ours: rmd-ray prints its own line per stage.
    context.enable_progress_bars = False
    context.enable_operator_progress_bars = False
    context.print_on_execution_start = False
    if "showwarning" not in _state:
        _state["showwarning"] = warnings.showwarning
        warnings.showwarning = _showwarning
    return path


def _showwarning(message, category, filename, lineno, file=None, line=None) -> None:
    """Ray's own warnings (its deprecations, raised from our call sites) go to the log file."""
    stream = _state.get("stream")
    if stream is not None and category.__module__.split(".")[0] == "ray":
        stream.write(warnings.formatwarning(message, category, filename, lineno, line))
        return
    _state["showwarning"](message, category, filename, lineno, file, line)


def route_worker_output(console: TextIO | None = None) -> bool:
    """After ``ray.init``: worker and actor output goes to the log file, progress lines to ``console``.

    Returns False (and changes nothing) when no log file is set or this Ray version does not have
    the dispatcher this relies on.
    """
    stream = _state.get("stream")
    if stream is None:
        return False
    try:  # private, but pinned: ray>=2.60,<2.61 (pyproject.toml)
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
        from ray._private.worker import print_worker_logs
    except ImportError:  # pragma: no cover - another Ray version: Ray keeps printing as it does
        return False

    def handle(data: dict) -> None:
        lines = data.get("lines") or []
        shown = [line.split(PROGRESS_PREFIX, 1)[1] for line in lines if PROGRESS_PREFIX in line]
        for line in shown:
            print(line, file=console or sys.stdout, flush=True)
        print_worker_logs(data, _state["stream"])

    dispatcher.remove_handler("ray_print_logs")
    dispatcher.remove_handler("rmd_ray_logs")
    dispatcher.add_handler("rmd_ray_logs", handle)
    return True


def unroute() -> None:
    """Undo :func:`route_ray_logs`' file and warning routing (for tests; loggers keep their handlers)."""
    if "showwarning" in _state:
        warnings.showwarning = _state.pop("showwarning")
    stream = _state.pop("stream", None)
    _state.pop("path", None)
    if stream is not None:
        stream.close()


def log_file() -> Path | None:
    """The file :func:`route_ray_logs` writes to, or None."""
    return _state.get("path")

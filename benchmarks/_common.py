"""Helpers shared by the benchmark scripts: timing, tables and atomic result files."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def best_time(fn: Callable[[], object], *, repeat: int = 3) -> float:
    """Best wall time of ``repeat`` runs: the least disturbed by other load on a shared machine."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_line() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def write_result(name: str, text: str) -> Path:
    """Write ``benchmarks/results/<name>`` atomically and return its path."""
    from rmd_ray.core.atomic import atomic_path

    path = RESULTS / name
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path

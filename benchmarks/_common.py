"""Helpers shared by the benchmark scripts: timing, tables, atomic result files and label noise."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
#: the real data the benchmarks read (layout: docs/benchmarks.md, "Data"); $RMD_RAY_DATA, else the
#: ``shared/data`` folder beside the checkout
DATA_ROOT = Path(os.environ.get("RMD_RAY_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")


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
    from rmd_ray.io.atomic import atomic_path

    path = RESULTS / name
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


# CIFAR-10 class order: airplane 0, automobile 1, bird 2, cat 3, deer 4, dog 5, frog 6, horse 7, ship 8, truck 9
ASYMMETRIC = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}


def flip_symmetric(labels: np.ndarray, *, rate: float, n_classes: int, seed: int) -> np.ndarray:
    """``rate`` of all samples get a label drawn uniformly from the other classes; returns noisy labels."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(labels), size=int(round(rate * len(labels))), replace=False)
    noisy = labels.copy()
    noisy[idx] = (labels[idx] + rng.integers(1, n_classes, size=idx.size)) % n_classes
    return noisy


def flip_asymmetric(labels: np.ndarray, *, rate: float, seed: int) -> np.ndarray:
    """Per source class in ASYMMETRIC, ``rate`` of its samples (rounded) move to the target class."""
    rng = np.random.default_rng(seed)
    noisy = labels.copy()
    for source, target in ASYMMETRIC.items():
        members = np.flatnonzero(labels == source)  # the clean labels: cat<->dog swaps both ways
        noisy[rng.choice(members, size=int(round(rate * members.size)), replace=False)] = target
    return noisy

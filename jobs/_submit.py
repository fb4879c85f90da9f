"""Shared by jobs/*.py: turn a `ray job submit` command line into an `rmd-ray` one.

Inside a submitted job the driver joins the running cluster (``--address auto`` unless given), and
``--smoke-test`` appends a small, fast configuration so a cluster can be checked in a minute.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def _has(argv: list[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def build_argv(command: str, argv: list[str], *, smoke: list[str], default_output: str | None) -> list[str]:
    """``rmd-ray <command>`` arguments for a job's command line ``argv``."""
    is_smoke = "--smoke-test" in argv
    argv = [a for a in argv if a != "--smoke-test"]
    if command != "evaluate" and not _has(argv, "--address"):
        argv = ["--address", "auto", *argv]
    if default_output and not _has(argv, "--output"):
        argv += ["--output", default_output]
    if is_smoke:
        argv += smoke
    return [command, *argv]


def run(command: str, *, smoke: list[str], default_output: str | None) -> int:
    from rmd_ray.cli import main

    return main(build_argv(command, sys.argv[1:], smoke=smoke, default_output=default_output))

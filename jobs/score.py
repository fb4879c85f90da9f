"""`ray job submit` entry point for difficulty scoring.

    ray job submit --working-dir . -- python jobs/score.py --source parquet:/data/train.parquet \
        --encoder clip_vit_b16 --checkpoint /models/clip_vit_b16.pt --image-size 224 --output /shared/scores

Inside a submitted job the driver joins the cluster with ``--address auto`` (the default here).
``--smoke-test`` scores 256 images with a small input size: a minute-long check that the cluster,
the encoder and the storage path work before the real run.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from rmd_ray.cli import main  # noqa: E402


def build_argv(argv: list[str]) -> list[str]:
    smoke = "--smoke-test" in argv
    argv = [a for a in argv if a != "--smoke-test"]
    if not any(a == "--address" or a.startswith("--address=") for a in argv):
        argv = ["--address", "auto", *argv]
    if not any(a == "--output" or a.startswith("--output=") for a in argv):
        argv += ["--output", "runs/score"]
    if smoke:
        argv += ["--limit", "256", "--image-size", "32"]
    return ["score", *argv]


if __name__ == "__main__":
    sys.exit(main(build_argv(sys.argv[1:])))

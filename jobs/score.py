"""`ray job submit` entry point for difficulty scoring.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/score.py \
        --source parquet:/data/train.parquet --encoder clip_vit_b16 --checkpoint /models/clip.pt \
        --image-size 224 --output /shared/scores

``--address`` defaults to ``auto`` (the cluster the job runs on); ``--smoke-test`` scores 256 images at
32 px: a minute-long check of the cluster, the encoder and the output path before the real run.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _submit import build_argv, run  # noqa: E402,F401

SMOKE = ["--limit", "256", "--image-size", "32"]

if __name__ == "__main__":
    sys.exit(run("score", smoke=SMOKE, default_output="runs/score"))

"""`ray job submit` entry point for training (Ray Train) with the difficulty-weighted loss or a baseline.

    ray job submit --working-dir . -- python jobs/train.py --train-source parquet:/data/train.parquet \
        --test-source parquet:/data/test.parquet --scores /shared/scores/scores.parquet --loss proposed \
        --loss-param alpha=0.3 --epochs 200 --num-workers 4 --use-gpu --output /shared/train

Validation is a seeded, stratified tenth of the training data (``--val-fraction``, ``--split-seed``; the ids
go to ``<output>/<run>/val_split.parquet``) unless ``--val-source`` names other data; the test source is
predicted once, after training. ``--smoke-test`` trains a width-1/8 ResNet-18 for 1 epoch on 512 images
(cross-entropy, no scores needed).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _submit import run  # noqa: E402

SMOKE = ["--limit", "512", "--test-limit", "256", "--epochs", "1", "--width", "0.125", "--loss", "ce"]

if __name__ == "__main__":
    sys.exit(run("train", smoke=SMOKE, default_output="runs/train"))

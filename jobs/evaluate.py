"""`ray job submit` entry point for evaluation: metrics of prediction files (deduplicated by id, so a
padded distributed evaluation never counts a sample twice), the difficulty proxy test, and accuracy and
ECE of trained checkpoints under the 19 ImageNet-C corruptions x 5 severities (or a published
ImageNet-C / CIFAR-10-C directory, --corruption-source imagenet-c:ROOT); written to metrics.json, proxy.json and
corruption.json for `rmd-ray report`.

    ray job submit --working-dir . -- python jobs/evaluate.py \
        --predictions proposed=/shared/train/proposed/predictions_test.parquet \
        --predictions ce=/shared/ce/ce/predictions_test.parquet \
        --proxy-scores /shared/test_scores/scores.parquet \
        --checkpoint proposed=/shared/train/<run>/<checkpoint> --checkpoint ce=/shared/ce/<run>/<checkpoint> \
        --corruption-source parquet:/shared/cifar10/test.parquet

The corruption pass runs in the job's driver (CPU work per image; the models are small next to it).
``--smoke-test`` corrupts only the first 256 images at severities 1 and 5.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _submit import run  # noqa: E402

if __name__ == "__main__":
    sys.exit(
        run("evaluate", smoke=["--corruption-limit", "256", "--severities", "1,5"], default_output="runs/evaluate")
    )

"""`ray job submit` entry point for Ray Tune over alpha, T, backbone, loss family and learning rate.

    ray job submit --working-dir . -- python jobs/tune.py --space tune_spaces/alpha_t.yaml \
        --scores efficientnet_lite0=/shared/scores/scores.parquet --train-source parquet:/data/train.parquet \
        --output /shared/tune

Trials are ranked on a seeded, stratified tenth of the training data (``--val-fraction``, ``--split-seed``;
ids in ``<output>/val_split.parquet``), never on the test split; ``--val-source`` names other validation data.
``--test-source`` is predicted once, after the search, by the Pareto-front trials.

Watch the trials in the Ray dashboard; `tensorboard --logdir <output>/tune/<name>` shows the curves.
``--smoke-test`` runs 2 trials of 1 epoch on 256 images with a width-1/8 model.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _submit import run  # noqa: E402

SMOKE = ["--limit", "256", "--test-limit", "128", "--epochs", "1", "--width", "0.125"]

if __name__ == "__main__":
    sys.exit(run("tune", smoke=SMOKE, default_output="runs/tune"))

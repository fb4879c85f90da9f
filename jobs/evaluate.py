"""`ray job submit` entry point for evaluation: metrics of prediction files (deduplicated by id, so a
padded distributed evaluation never counts a sample twice), printed and written to metrics.json.

    ray job submit --working-dir . -- python jobs/evaluate.py \
        --predictions proposed=/shared/train/predictions_test.parquet \
        --predictions ce=/shared/ce/predictions_test.parquet

``--smoke-test`` is accepted like in every job and changes nothing: evaluation reads prediction files
only, needs no GPU and finishes in seconds.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _submit import run  # noqa: E402

if __name__ == "__main__":
    sys.exit(run("evaluate", smoke=[], default_output="runs/evaluate"))

"""Where the suite finds the real data it reads (CIFAR-10 Parquet, the ImageNet sample): $RMD_RAY_DATA, else
the ``shared/data`` folder beside the checkout, as the benchmarks do (docs/benchmarks.md, "Data"). Tests that
need it skip with the path in the reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ROOT = Path(os.environ.get("RMD_RAY_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
IMAGENET_SAMPLE = DATA_ROOT / "imagenet-sample"
CIFAR10_TRAIN = DATA_ROOT / "cifar10" / "train.parquet"

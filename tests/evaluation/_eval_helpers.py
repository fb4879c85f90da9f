"""Shared builders for the evaluation tests: predictions files written the way training writes them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from rmd_ray.io.storage import write_parquet_atomic


def write_predictions(path: Path, ids, labels, logits, *, metadata: dict | None = None) -> Path:
    """``id`` (str), ``label`` (int64), ``logits`` (list<float32>) + provenance metadata."""
    logits = np.asarray(logits, dtype=np.float32)
    table = pa.table(
        {
            "id": pa.array([str(i) for i in ids], type=pa.string()),
            "label": pa.array(np.asarray(labels, dtype=np.int64)),
            "logits": pa.array(list(logits), type=pa.list_(pa.float32())),
        }
    )
    # the keys distributed/training.py writes (loss hyper-parameters under loss_hparams)
    meta = {"model": "tiny", "loss": "ce", "loss_hparams": {}, "epochs": 3, "seed": 0}
    return write_parquet_atomic(table, path, metadata=meta if metadata is None else metadata)


def synthetic_run(n: int, k: int, *, seed: int, sharpness: float = 3.0):
    """Ids, labels and logits of a plausible classifier (~70 % accurate, distinct confidences)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, size=n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), labels] += sharpness * rng.random(n) * 1.2
    ids = np.array([f"s{i:04d}" for i in range(n)], dtype=object)
    return ids, labels.astype(np.int64), logits.astype(np.float32)

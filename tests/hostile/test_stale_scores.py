"""Weights from other inputs are refused before training starts: ``--scores`` of another dataset, or of
the same file before its labels were fixed (the weights then belong to the old labels)."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pytest
from _parquet_images import random_images, write_parquet

from rmd_ray.distributed.training import TrainConfig, run_training
from rmd_ray.nn.engine import OptimConfig

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

CONFIG = TrainConfig(loss="proposed", width=0.125, batch_size=32, cpus_per_worker=0.5, max_failures=0,
                     optim=OptimConfig(lr=0.05, momentum=0.9, weight_decay=5e-4, epochs=1))


def _train(train, scores, out):
    return run_training(f"parquet:{train}", val=f"parquet:{train}", scores=scores, config=CONFIG,
                        output_dir=out, run_name="x", shard_rows=64)


def _scores(ids, labels):
    return pa.table({"id": ids, "label": pa.array(labels, pa.int64()), "weight": np.full(len(ids), 0.5)})


def test_scores_of_another_dataset_fail_in_seconds(ray_local, tmp_path):
    labels = np.tile(np.arange(3), 64)
    path = tmp_path / "train.parquet"
    write_parquet(path, labels, random_images(labels.size, seed=6), classes=["a", "b", "c"])
    other = _scores([f"x{i:03d}" for i in range(labels.size)], labels)  # another dataset's ids
    tic = time.perf_counter()
    with pytest.raises(ValueError, match=r"64 of 64 training ids have no weight in scores \(e.g. \['r000'"):
        _train(path, other, tmp_path / "out")
    assert time.perf_counter() - tic < 120  # planning only, no training step
    assert not any((tmp_path / "out").rglob("checkpoint*"))


def test_scores_made_before_labels_were_fixed_are_stale(ray_local, tmp_path):
    labels = np.tile(np.arange(3), 64)
    path = tmp_path / "train.parquet"
    ids = [f"r{i:03d}" for i in range(labels.size)]
    scores = _scores(ids, labels)
    fixed = labels.copy()
    fixed[-5:] = (labels[-5:] + 1) % 3  # labels fixed in the last row group after scoring
    write_parquet(path, fixed, random_images(labels.size, seed=7), classes=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"5 of 64 training rows have a label other than the one they were scored "
                       r"with \(e.g. id 'r187': scored 1, now 2\): the weights are stale; rescore"):
        _train(path, scores, tmp_path / "out")

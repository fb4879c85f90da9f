"""Labels are checked before the encoder runs: a stray label does not become a class, and a source whose
rows hold one class is refused with the reason (a --limit on a class-sorted source)."""

from __future__ import annotations

import numpy as np
import pytest
from _parquet_images import random_images, write_parquet

from rmd_ray.distributed.scoring.run import EncoderSpec, ExtractConfig, run_scoring
from rmd_ray.io.parts import read_table

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]


def _score(source, out, **kwargs):
    return run_scoring(source, output_dir=str(out), encoder=EncoderSpec("tiny_cnn"),
                       extract=ExtractConfig(batch_size=64, num_actors=1), shard_rows=64, **kwargs)


def test_a_stray_label_is_not_a_class_of_its_own(ray_local, tmp_path):
    labels = np.tile(np.arange(10), 12)
    labels[7] = 10  # one out-of-range label in a 10-class file without class names
    labels[9] = -1  # and one "unlabelled" marker
    path = tmp_path / "train.parquet"
    write_parquet(path, labels, random_images(labels.size, seed=2))
    with pytest.raises(ValueError, match=r"label 10 occurs in 1 row\(s\).*inferred as 11.*--num-classes K"):
        _score(f"parquet:{path}", tmp_path / "run")
    assert not (tmp_path / "run" / "features.parquet").exists()  # refused before any embedding

    result = _score(f"parquet:{path}", tmp_path / "run", n_classes=10)
    assert (result.rows_scored, result.rows_error) == (118, 2)
    errors = read_table(result.errors_path).sort_by("id")
    assert errors.column("id").to_pylist() == ["r007", "r009"]
    assert errors.column("reason").to_pylist() == ["label 10 outside 0..9", "label -1 outside 0..9"]
    assert errors.column("label").to_pylist() == [10, -1]  # the labels as given, -1 not turned into null


@pytest.mark.filterwarnings("ignore::rmd_ray.core.DegenerateClassWarning")  # 2 of 4 classes in 128 rows
def test_a_limit_that_keeps_one_class_is_refused_with_the_reason(ray_local, tmp_path):
    labels = np.repeat(np.arange(4), 64)  # sorted by class, as the shared CIFAR-10 Parquet is
    path = tmp_path / "sorted.parquet"
    write_parquet(path, labels, random_images(labels.size, seed=3), classes=["a", "b", "c", "d"])
    with pytest.raises(ValueError, match=r"only class 'a' has rows .*--limit 64 keeps the first rows"):
        _score(f"parquet:{path}", tmp_path / "run", limit=64)
    assert _score(f"parquet:{path}", tmp_path / "ok", limit=128).rows_scored == 128


def test_num_classes_added_on_resume_is_refused_with_the_fix(ray_local, tmp_path):
    labels = np.tile(np.arange(3), 40)
    path = tmp_path / "train.parquet"
    write_parquet(path, labels, random_images(labels.size, seed=8))  # no class names: K = 3 inferred
    assert _score(f"parquet:{path}", tmp_path / "run").rows_scored == 120
    with pytest.raises(ValueError, match=r"holds features of another run \(other classes: K = 3 there, 5 now, "
                                         r"e.g. a --num-classes added\); pass --fresh"):
        _score(f"parquet:{path}", tmp_path / "run", n_classes=5)
    assert _score(f"parquet:{path}", tmp_path / "run", n_classes=5, fresh=True).rows_scored == 120

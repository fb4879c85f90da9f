"""A source changed in place is embedded again on resume, never reused (issue: fixed labels came back stale).

The find-label-issues -> fix labels -> rescore loop: score a Parquet file, rewrite it with 32 labels
fixed and two images swapped (same row groups, same row count), run the same command again.
"""

from __future__ import annotations

import numpy as np
import pytest
from _parquet_images import random_images, write_parquet

from rmd_ray.distributed.scoring.run import EncoderSpec, ExtractConfig, run_scoring
from rmd_ray.io.parts import read_table

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]


def _write(path, labels, images):
    write_parquet(path, labels, images, classes=["a", "b", "c"])


def _score(source, out):
    return run_scoring(source, output_dir=str(out), encoder=EncoderSpec("tiny_cnn"),
                       extract=ExtractConfig(batch_size=64, num_actors=1), shard_rows=64)


def test_labels_fixed_in_place_are_rescored_not_reused(ray_local, tmp_path):
    rng = np.random.default_rng(0)
    n = 192
    labels = rng.integers(0, 3, n)
    images = random_images(n, seed=0)
    path = tmp_path / "train.parquet"
    _write(path, labels, images)
    out = tmp_path / "run"
    first = _score(f"parquet:{path}", out)
    assert first.shards_reused == 0 and first.rows_scored == n

    fixed = labels.copy()
    fixed[:32] = (labels[:32] + 1) % 3  # 32 labels corrected, all in the first row group
    images[100], images[101] = images[101], images[100]  # two images swapped in the second
    _write(path, fixed, images)
    stale = out / "_staging-killed"  # what a run killed between scoring and publishing leaves
    stale.mkdir()
    (stale / "scores-000000.parquet").write_bytes(b"half")
    second = _score(f"parquet:{path}", out)
    assert not stale.exists()
    scores = read_table(second.scores_path, columns=["id", "label"]).sort_by("id")
    assert scores.column("label").to_pylist() == fixed.tolist()
    assert second.shards_changed == 3 and second.shards_reused == 0  # the file was rewritten: every shard

    third = _score(f"parquet:{path}", out)  # unchanged since: everything reused
    assert third.shards_changed == 0 and third.shards_reused == 3


def test_a_features_cache_from_other_bytes_is_refused(ray_local, tmp_path):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 64)
    images = random_images(64, seed=1)
    path = tmp_path / "train.parquet"
    _write(path, labels, images)
    first = _score(f"parquet:{path}", tmp_path / "run")
    _write(path, (labels + 1) % 3, images)
    with pytest.raises(ValueError, match=r"features cache .* was made for other inputs \(content: .*1 shards"):
        run_scoring(f"parquet:{path}", output_dir=str(tmp_path / "rescore"), encoder=EncoderSpec("tiny_cnn"),
                    extract=ExtractConfig(batch_size=64, num_actors=1), shard_rows=64,
                    features_cache=first.features_path)


def test_an_image_folder_changed_in_place_is_embedded_again(ray_local, tmp_path):
    import os

    from PIL import Image

    rng = np.random.default_rng(4)
    root = tmp_path / "train"
    for name in ("a", "b", "c"):
        (root / name).mkdir(parents=True)
        for i in range(20):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / name / f"{i:02d}.png")
    out = tmp_path / "run"
    first = _score(f"folder:{root}", out)
    assert first.rows_scored == 60
    target = root / "b" / "07.png"
    stat = target.stat()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(target)  # a fixed image, written over the old one
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    second = _score(f"folder:{root}", out)
    assert (second.shards_changed, second.shards_reused) == (1, 0)  # the one shard holding b/ embedded again
    third = _score(f"folder:{root}", out)
    assert (third.shards_changed, third.shards_reused) == (0, 1)


def test_an_imagenet_val_label_fixed_in_place_is_embedded_again(ray_local, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(5)
    root = tmp_path / "val"
    root.mkdir()
    wnids = ["n01", "n02", "n03"]
    lines = []
    for i in range(48):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / f"v{i:03d}.png")
        lines.append(f"v{i:03d}.png {wnids[i % 3]}")
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (root / "val_labels.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    first = run_scoring(f"imagenet-val:{root}", output_dir=str(out), encoder=EncoderSpec("tiny_cnn"),
                        extract=ExtractConfig(batch_size=64, num_actors=1), shard_rows=16)
    assert (first.rows_scored, first.shards_reused) == (48, 0)
    lines[20] = "v020.png n01"  # one label fixed, in the second shard (rows 16-31)
    (root / "val_labels.txt").write_text("\n".join(lines) + "\n")
    second = run_scoring(f"imagenet-val:{root}", output_dir=str(out), encoder=EncoderSpec("tiny_cnn"),
                         extract=ExtractConfig(batch_size=64, num_actors=1), shard_rows=16)
    assert (second.shards_changed, second.shards_reused) == (1, 2)
    scores = read_table(second.scores_path, columns=["id", "label"]).to_pydict()
    assert dict(zip(scores["id"], scores["label"]))["v020.png"] == 0

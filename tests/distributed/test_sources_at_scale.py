"""Scoring from lazy sources: Parquet files/directories/globs/URIs, image folders, ImageNet's validation
layout, object storage (a real S3-compatible server on 127.0.0.1), 1,000 classes, and equality with
the in-memory path and with the core run in-process."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scoring_reference import jpeg, parquet_dir, reference_scores

from rmd_ray.cli import main
from rmd_ray.core import CovarianceConfig
from rmd_ray.data.locations import fetch_rows_by_id
from rmd_ray.data.readers import read_image_folder, read_parquet_images
from rmd_ray.distributed.scoring.run import EncoderSpec, ExtractConfig, run_scoring
from rmd_ray.distributed.sources.plan import open_source
from rmd_ray.io import storage
from rmd_ray.io.parts import read_table, read_table_metadata

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]
TINY = EncoderSpec("tiny_cnn", image_size=16)
EXTRACT = ExtractConfig(batch_size=16, num_actors=1, write_rows=32)


def _by_id(table: pa.Table) -> dict[str, dict]:
    return {row["id"]: row for row in table.to_pylist()}


def test_parquet_file_directory_and_glob_plan_the_same_rows(ray_local, tmp_path):
    root = parquet_dir(tmp_path / "pq")
    whole = open_source(f"parquet:{root}")
    globbed = open_source(f"parquet:{root}/train-*.parquet")
    single = open_source(f"parquet:{root}/train-1.parquet")
    assert whole.n_rows == globbed.n_rows == 120 and single.n_rows == 40
    assert whole.classes == ("a", "b", "c", "d")
    assert whole.plan_fingerprint() == globbed.plan_fingerprint() != single.plan_fingerprint()
    # row groups of 10 rows are grouped up to shard_rows; a larger row group is cut into row ranges
    assert [s.n_rows for s in open_source(f"parquet:{root}", shard_rows=25).shards] == [20, 20, 20, 20, 20, 20]
    assert [s.n_rows for s in open_source(f"parquet:{root}", shard_rows=4).shards][:4] == [4, 4, 2, 4]
    assert open_source(f"parquet:{root}", limit=55).n_rows == 55
    with pytest.raises(ValueError, match="no file matches"):
        open_source(f"parquet:{root}/nope-*.parquet")
    with pytest.raises(ValueError, match="not found"):
        open_source(f"parquet:{tmp_path / 'missing.parquet'}")
    with pytest.raises(ValueError, match="unknown data source 'tfrecord'; valid: cifar-pickle"):
        open_source("tfrecord:x")
    with pytest.raises(ValueError, match="limit must be None or an int >= 0"):
        open_source(f"parquet:{root}", limit=-1)


def test_streaming_scores_equal_the_in_memory_path_and_the_core(ray_local, tmp_path):
    root = parquet_dir(tmp_path / "pq")
    config = CovarianceConfig(shrinkage="oas")
    lazy = run_scoring(f"parquet:{root}", output_dir=tmp_path / "lazy", encoder=TINY, extract=EXTRACT,
                       covariance=config)
    memory = run_scoring(read_parquet_images(root), output_dir=tmp_path / "mem", encoder=TINY, extract=EXTRACT,
                         covariance=config)
    a, b = _by_id(read_table(lazy.scores_path)), _by_id(read_table(memory.scores_path))
    assert sorted(a) == sorted(b) and len(a) == 120 == lazy.rows_in == lazy.rows_scored
    for key in ("md", "md0", "rmd", "weight"):
        np.testing.assert_allclose([a[i][key] for i in a], [b[i][key] for i in a], rtol=1e-9, atol=1e-9)

    # the encoder and the core in this process give the features the actors wrote and the same scores
    rows, md, rmd = reference_scores(root, lazy.features_path, encoder="tiny_cnn", image_size=16, covariance=config)
    got = np.asarray([a[r["id"]]["rmd"] for r in rows])
    assert np.max(np.abs(got - rmd)) <= 1e-6 * np.abs(md).max()
    meta = read_table_metadata(lazy.scores_path)
    assert meta["rows_in"] == 120 and meta["classes"] == ["a", "b", "c", "d"] and meta["source"].startswith("parquet")


def _folder(root, *, classes, per_class, seed=0, size=20):
    rng = np.random.default_rng(seed)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / name / f"{name}_{i}.JPEG").write_bytes(jpeg(rng, k, size))
    return root


def test_folder_source_ids_match_the_image_folder_reader(ray_local, tmp_path):
    root = _folder(tmp_path / "train", classes=["cat", "dog", "emu"], per_class=7)
    (root / "dog" / "notes.txt").write_text("not an image")
    source = open_source(f"folder:{root}", shard_rows=10)
    assert source.classes == ("cat", "dog", "emu") and source.n_rows == 21
    assert [s.n_rows for s in source.shards] == [10, 10, 1]  # shard_rows files per shard, across classes
    result = run_scoring(f"folder:{root}", output_dir=tmp_path / "out", encoder=TINY, extract=EXTRACT,
                         covariance=CovarianceConfig(shrinkage="ridge"))
    scored = read_table(result.scores_path)
    reference = read_image_folder(root)
    assert sorted(scored.column("id").to_pylist()) == sorted(reference.column("id").to_pylist())
    assert dict(zip(scored.column("id").to_pylist(), scored.column("label").to_pylist())) == dict(
        zip(reference.column("id").to_pylist(), reference.column("label").to_pylist())
    )
    rows = fetch_rows_by_id(f"folder:{root}", ["dog/dog_3.JPEG", "dog/missing.JPEG"]).to_pylist()
    assert [(r["id"], r["label"]) for r in rows] == [("dog/dog_3.JPEG", 1)]


@pytest.mark.parametrize("layout", ["LOC_val_solution.csv", "val_labels.txt"])
def test_imagenet_validation_layout(ray_local, tmp_path, layout):
    rng = np.random.default_rng(3)
    root = tmp_path / "val"
    root.mkdir()
    wnids = ["n01440764", "n01443537", "n01484850"]
    truth = {}
    for i in range(18):
        name = f"ILSVRC2012_val_{i + 1:08d}"
        truth[name + ".JPEG"] = wnids[i % 3]
        (root / f"{name}.JPEG").write_bytes(jpeg(rng, i % 3))
    if layout.endswith(".csv"):  # Kaggle / devkit-derived: ImageId,PredictionString (wnid + boxes)
        lines = ["ImageId,PredictionString"] + [f"{n[:-5]},{w} 1 2 3 4 {w} 5 6 7 8" for n, w in truth.items()]
    else:
        lines = [f"{n} {w}" for n, w in truth.items()]
    (root / layout).write_text("\n".join(lines) + "\n")
    source = open_source(f"imagenet-val:{root}", shard_rows=5)
    assert source.classes == tuple(wnids) and source.n_rows == 18 and len(source.shards) == 4
    result = run_scoring(source, output_dir=tmp_path / "out", encoder=TINY, extract=EXTRACT,
                         covariance=CovarianceConfig(shrinkage="ridge"))
    scored = _by_id(read_table(result.scores_path))
    assert {i: wnids[r["label"]] for i, r in scored.items()} == truth
    (root / layout).unlink()
    with pytest.raises(ValueError, match="no label file in .*LOC_val_solution.csv"):
        open_source(f"imagenet-val:{root}")


def test_readme_s3_example_runs_against_a_loopback_s3_server(s3_server, ray_local, tmp_path):
    local = parquet_dir(tmp_path / "pq", files=2)
    bucket = s3_server.bucket("rmd-ray-e2e")
    assert "127.0.0.1" in s3_server.endpoint
    for f in sorted(local.iterdir()):
        storage.write_bytes_atomic(storage.join(bucket, "train", f.name), f.read_bytes())
    source = f"parquet:{storage.join(bucket, 'train')}"
    output = storage.join(bucket, "runs", "cifar")
    argv = ["score", "--source", source, "--encoder", "tiny_cnn", "--image-size", "16", "--num-actors", "1",
            "--batch-size", "16", "--output", output]
    assert main(argv) == 0
    remote = read_table(storage.join(output, "scores.parquet"))
    assert storage.is_file(storage.join(output, "scorer.npz"))
    assert storage.is_file(storage.join(output, "scores.parquet", "_manifest.json"))
    reference = run_scoring(f"parquet:{local}", output_dir=tmp_path / "local", encoder=TINY, extract=EXTRACT,
                            covariance=CovarianceConfig(shrinkage="ridge"))
    a, b = _by_id(remote), _by_id(read_table(reference.scores_path))
    assert sorted(a) == sorted(b) and len(a) == 80
    np.testing.assert_allclose([a[i]["rmd"] for i in a], [b[i]["rmd"] for i in a], rtol=1e-9, atol=1e-9)
    # rescoring from the features on S3 with another T, without re-embedding
    assert main(argv[:-1] + [storage.join(bucket, "runs", "t03"), "--temperature", "0.3",
                             "--features-cache", storage.join(output, "features.parquet")]) == 0
    rescored = _by_id(read_table(storage.join(bucket, "runs", "t03", "scores.parquet")))
    np.testing.assert_allclose([rescored[i]["rmd"] for i in a], [a[i]["rmd"] for i in a], rtol=1e-12)
    # the label-issue finder reads scores and images from the same store
    assert main(["find-label-issues", "--scores", storage.join(output, "scores.parquet"), "--source", source,
                 "--top", "5", "--score", "rmd", "--output", storage.join(bucket, "runs", "issues")]) == 0
    issues = storage.read_parquet(storage.join(bucket, "runs", "issues", "label_issues.parquet"))
    top_rmd = sorted((r["rmd"] for r in a.values()), reverse=True)[:5]
    np.testing.assert_allclose(issues.column("rmd").to_numpy(), top_rmd)
    assert storage.read_bytes(storage.join(bucket, "runs", "issues", "label_issues.png"))[:4] == b"\x89PNG"


def test_a_thousand_classes_end_to_end(ray_local, tmp_path):
    classes = [f"n{k:08d}" for k in range(1000)]
    root = _folder(tmp_path / "imagenet", classes=classes, per_class=2, size=12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 2 images per class in 32-d: singular, ridge handles it (and warns)
        result = run_scoring(f"folder:{root}", output_dir=tmp_path / "out", encoder=TINY,
                             extract=ExtractConfig(batch_size=64, num_actors=1, write_rows=512),
                             covariance=CovarianceConfig(shrinkage="ridge"))
    assert result.rows_scored == 2000 and result.rows_error == 0
    scores = read_table(result.scores_path)
    assert scores.column("nearest_class").to_numpy().max() < 1000
    assert np.isfinite(scores.column("rmd").to_numpy()).all()
    assert main(["find-label-issues", "--scores", result.scores_path, "--source", f"folder:{root}", "--top", "8",
                 "--output", str(tmp_path / "issues")]) == 0
    issues = pq.read_table(tmp_path / "issues" / "label_issues.parquet")
    assert issues.num_rows == 8 and set(issues.column("given_class").to_pylist()) <= set(classes)

    from rmd_ray.evaluation.report import build_report

    page = Path(build_report(runs={}, scores_path=result.scores_path, source=f"folder:{root}",
                             output_dir=tmp_path / "report", max_gallery_classes=6)).read_text()
    assert "Showing the 6 of 1000 classes with the highest mean RMD" in page
    from rmd_ray.evaluation.report.gallery import _gallery_picks

    ids = np.asarray(scores.column("id").to_pylist(), dtype=object)
    labels, rmd = scores.column("label").to_numpy(), scores.column("rmd").to_numpy()
    picks, _ = _gallery_picks(ids, labels, rmd, np.ones(len(ids), bool), per_class=1, max_classes=6)
    means = {k: rmd[labels == k].mean() for k in range(1000)}
    assert [k for k, _, _ in picks] == sorted(sorted(means, key=lambda k: (-means[k], k))[:6])
    print("timings", result.seconds)


def test_folder_source_on_object_storage(s3_server, ray_local, tmp_path):
    """Class folders listed by tasks on S3, image bytes read in the decode tasks, ids as locally."""
    local = _folder(tmp_path / "train", classes=["ant", "bee", "cow"], per_class=5)
    bucket = s3_server.bucket("rmd-ray-folder")
    for path in sorted(local.rglob("*.JPEG")):
        storage.write_bytes_atomic(storage.join(bucket, "train", *path.relative_to(local).parts), path.read_bytes())
    remote = open_source(f"folder:{storage.join(bucket, 'train')}")
    assert remote.classes == ("ant", "bee", "cow") and remote.n_rows == 15
    kwargs = dict(encoder=TINY, extract=EXTRACT, covariance=CovarianceConfig(shrinkage="ridge"))
    on_s3 = run_scoring(remote, output_dir=storage.join(bucket, "out"), **kwargs)
    here = run_scoring(f"folder:{local}", output_dir=tmp_path / "out", **kwargs)
    a, b = _by_id(read_table(on_s3.scores_path)), _by_id(read_table(here.scores_path))
    assert sorted(a) == sorted(b) and len(a) == 15
    np.testing.assert_allclose([a[i]["rmd"] for i in a], [b[i]["rmd"] for i in a], rtol=1e-9, atol=1e-9)

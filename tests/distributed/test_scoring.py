"""The Ray scoring pipeline: equality with the in-process core, bad images, labels, views, cache."""

from __future__ import annotations

import io
import time
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from rmd_ray.core import CovarianceConfig, DifficultyScorer, WeightConfig
from rmd_ray.core.label_ranking import mahalanobis_margin
from rmd_ray.data.readers import from_arrays, read_image_folder
from rmd_ray.distributed.scoring.run import (
    EncoderSpec,
    ExtractConfig,
    dataset_fingerprint,
    feature_column,
    feature_matrix,
    fit_and_score,
    run_scoring,
)
from rmd_ray.io.parts import read_table
from rmd_ray.io.parts import read_table_metadata as read_metadata

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]
TINY = EncoderSpec("tiny_cnn")


def features_table(seed=0, n=900, d=6, k=3):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    feats = (rng.normal(size=(k, d))[labels] * 2 + rng.normal(size=(n, d)) + 100.0).astype(np.float32)
    ids = [f"s{i:04d}" for i in range(n)]
    table = pa.table(
        {"id": ids, "view": pa.array(np.zeros(n, np.int32)), "label": labels, "features": feature_column(feats)}
    )
    return table, feats, labels


@pytest.mark.parametrize("blocks", [1, 2, 4])
@pytest.mark.parametrize("shrinkage", ["none", "ledoit_wolf"])
def test_ray_scores_equal_in_process_scores(ray_local, blocks, shrinkage):
    table, feats, labels = features_table()
    config = CovarianceConfig(shrinkage=shrinkage)
    # the pipeline accumulates in float64 (see _block_stats); so does the reference
    reference = DifficultyScorer(n_classes=3, covariance=config).fit(feats.astype(np.float64), labels)
    md_ref, rmd_ref = reference.score(feats, labels)
    for order_seed in (None, 3):
        scorer, per_row = fit_and_score(table, n_classes=3, covariance=config, blocks=blocks, shuffle_blocks=order_seed)
        assert per_row.column("id").to_pylist() == table.column("id").to_pylist()  # joined back by id
        md = per_row.column("md").to_numpy()
        rmd = md - per_row.column("md0").to_numpy()
        assert np.max(np.abs(md - md_ref) / np.abs(md_ref)) <= 1e-6
        assert np.max(np.abs(rmd - rmd_ref)) <= 1e-6 * np.abs(md_ref).max()
        np.testing.assert_allclose(scorer.covariance_, reference.covariance_, rtol=1e-9, atol=1e-12)
        # the label-issue margin: MD to the given class minus the nearest other, from the core's definition
        margin_ref = mahalanobis_margin(reference.class_distances(feats), labels)
        margin = per_row.column("margin").to_numpy()
        assert np.max(np.abs(margin - margin_ref)) <= 1e-6 * np.abs(md_ref).max()


def _jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


def test_real_world_image_folder_cases(ray_local, tmp_path):
    """Corrupt JPEG, truncated file, grayscale, CMYK, PNG-in-.JPEG and an empty class directory."""
    rng = np.random.default_rng(0)
    root = tmp_path / "train"
    for cls in ("a", "b", "empty"):
        (root / cls).mkdir(parents=True)
    for cls in ("a", "b"):
        for i in range(12):
            pixels = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"ok{i}.JPEG")
    Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8), "L").save(root / "a" / "gray.JPEG")
    Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).convert("CMYK").save(root / "a" / "cmyk.JPEG")
    Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(
        root / "b" / "png_inside.JPEG", format="PNG"
    )
    (root / "b" / "corrupt.JPEG").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg at all" * 3)
    whole = _jpeg_bytes(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    (root / "b" / "truncated.JPEG").write_bytes(whole[: len(whole) // 2])
    with pytest.warns(UserWarning, match="empty"):
        table = read_image_folder(root)
    assert table.num_rows == 29

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the empty class also warns at fit time (documented)
        result = run_scoring(
            table,
            output_dir=tmp_path / "out",
            encoder=TINY,
            extract=ExtractConfig(batch_size=8, num_actors=1),
            covariance=CovarianceConfig(shrinkage="ledoit_wolf"),
        )
    scores = pq.read_table(result.scores_path)
    errors = pq.read_table(result.errors_path).to_pylist()
    assert result.rows_in == 29 and result.rows_scored == 27 and result.rows_error == 2
    by_id = {e["id"].split("/")[-1]: e for e in errors}
    assert set(by_id) == {"corrupt.JPEG", "truncated.JPEG"}
    assert all(e["stage"] == "decode" and e["reason"] for e in errors)
    assert "truncated" in by_id["truncated.JPEG"]["reason"].lower()
    scored_names = {i.split("/")[-1] for i in scores.column("id").to_pylist()}
    assert {"gray.JPEG", "cmyk.JPEG", "png_inside.JPEG"} <= scored_names
    assert np.isfinite(scores.column("rmd").to_numpy()).all()
    w = scores.column("weight").to_numpy()
    assert ((w > 0) & (w < 1)).all()
    meta = read_metadata(result.scores_path)
    assert meta["rows_in"] == 29 and meta["classes"] == ["a", "b", "empty"] and meta["encoder"] == "tiny_cnn"


def test_out_of_range_labels_go_to_the_errors_table(ray_local, tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (60, 12, 12, 3), dtype=np.uint8)
    labels = rng.integers(0, 3, 60)
    labels[[5, 17]] = [7, -1]
    table = from_arrays(images, labels, classes=["x", "y", "z"])
    result = run_scoring(
        table,
        output_dir=tmp_path,
        encoder=TINY,
        extract=ExtractConfig(batch_size=16, num_actors=1),
        covariance=CovarianceConfig(shrinkage="oas"),
    )
    errors = pq.read_table(result.errors_path).to_pylist()
    assert sorted(e["id"] for e in errors) == ["17", "5"]
    assert {e["stage"] for e in errors} == {"label"}
    assert any("label 7 outside 0..2" in e["reason"] for e in errors)
    assert result.rows_scored == 58 and result.rows_in == result.rows_scored + result.rows_error


def test_views_cache_and_rescoring(ray_local, tmp_path):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 255, (80, 16, 16, 3), dtype=np.uint8)
    labels = np.arange(80) % 4
    images[labels == 1, :, :, 0] = 255  # make classes differ so the scorer has structure
    table = from_arrays(images, labels, classes=list("abcd"))
    extract = ExtractConfig(batch_size=16, num_actors=1, n_views=3)
    cov = CovarianceConfig(shrinkage="ledoit_wolf")
    first = run_scoring(table, output_dir=tmp_path / "v3", encoder=TINY, extract=extract, covariance=cov)
    scores = pq.read_table(first.scores_path).to_pylist()
    row = scores[0]
    assert len(row["rmd_views"]) == 3 and row["rmd"] == pytest.approx(np.mean(row["rmd_views"]))
    assert len(set(np.round(row["rmd_views"], 9))) == 3  # augmented views differ
    # the margin column of the scoring pass: positive exactly where another class mean is nearer
    margins = np.array([r["margin"] for r in scores])
    assert np.isfinite(margins).all()
    np.testing.assert_array_equal(margins > 0, [r["nearest_class"] != r["label"] for r in scores])
    cached = read_table(first.features_path)  # one row per image, its 3 views side by side
    assert cached.num_rows == 80 and cached.schema.field("features").type.list_size == 3 * 32

    # rescoring from the cache with another T: same RMD, other weights, no re-embedding
    again = run_scoring(
        table,
        output_dir=tmp_path / "rescored",
        encoder=TINY,
        extract=extract,
        covariance=cov,
        weights=WeightConfig(temperature=2.0),
        features_cache=first.features_path,
    )
    assert again.features_path is None
    rescored = pq.read_table(again.scores_path)
    np.testing.assert_allclose(rescored.column("rmd").to_numpy(), [r["rmd"] for r in scores], rtol=1e-12)
    assert not np.allclose(rescored.column("weight").to_numpy(), [r["weight"] for r in scores])

    with pytest.raises(ValueError, match="made for other inputs.*n_views: cache 3 vs now 1"):
        run_scoring(
            table,
            output_dir=tmp_path / "bad",
            encoder=TINY,
            extract=ExtractConfig(num_actors=1),
            features_cache=first.features_path,
        )
    with pytest.raises(ValueError, match="not found; run without --features-cache"):
        run_scoring(table, output_dir=tmp_path / "bad", encoder=TINY, features_cache=tmp_path / "nope.parquet")
    with pytest.raises(ValueError, match="rank normalisation is not available when scoring.*--normalization rank"):
        run_scoring(table, output_dir=tmp_path / "bad", encoder=TINY, weights=WeightConfig(normalization="rank"))


def test_a_fitted_scorer_scores_a_validation_set_without_refitting(ray_local, tmp_path):
    rng = np.random.default_rng(5)
    images = rng.integers(0, 255, (120, 16, 16, 3), dtype=np.uint8)
    labels = np.arange(120) % 3
    images[labels == 2, :, :, 1] = 255
    train = from_arrays(images[:80], labels[:80], classes=list("abc"))
    val = from_arrays(images[80:], labels[80:], classes=list("abc"))
    extract = ExtractConfig(batch_size=16, num_actors=1)
    fitted = run_scoring(train, output_dir=tmp_path / "train", encoder=TINY, extract=extract,
                         covariance=CovarianceConfig(shrinkage="oas"))
    scored = run_scoring(val, output_dir=tmp_path / "val", encoder=TINY, extract=extract,
                         covariance=CovarianceConfig(shrinkage="none"),  # ignored: the scorer's own is used
                         scorer=fitted.scorer_path)
    # reference: the training scorer applied in-process to the validation features
    scorer = DifficultyScorer.load(fitted.scorer_path)
    features = pq.read_table(scored.features_path).sort_by("id")
    md_ref, rmd_ref = scorer.score(feature_matrix(features), features.column("label").to_numpy())
    out = pq.read_table(scored.scores_path).sort_by("id")
    assert out.column("id").to_pylist() == features.column("id").to_pylist()
    np.testing.assert_allclose(out.column("md").to_numpy(), md_ref, rtol=1e-9)
    np.testing.assert_allclose(out.column("rmd").to_numpy(), rmd_ref, rtol=1e-9, atol=1e-9 * np.abs(md_ref).max())
    meta = read_metadata(scored.scores_path)
    train_fingerprint = read_metadata(fitted.scores_path)["dataset_fingerprint"]
    assert meta["shrinkage"] == "oas" and meta["scorer_fitted_on"] == train_fingerprint
    assert meta["dataset_fingerprint"] not in (train_fingerprint, "unknown")
    # the copy saved beside the validation scores still records the training data it was fitted on
    assert DifficultyScorer.load(scored.scorer_path).provenance_["dataset_fingerprint"] == train_fingerprint

    with pytest.raises(ValueError, match=r"fitted on other features \(resolution: scorer 32 vs now 24\)"):
        run_scoring(val, output_dir=tmp_path / "bad", encoder=EncoderSpec("tiny_cnn", image_size=24),
                    extract=extract, scorer=fitted.scorer_path)
    renamed = from_arrays(images[80:], labels[80:], classes=list("xyz"))
    with pytest.raises(ValueError, match=r"classes: scorer \['a', 'b', 'c'\] vs now \['x', 'y', 'z'\]"):
        run_scoring(renamed, output_dir=tmp_path / "bad", encoder=TINY, extract=extract, scorer=fitted.scorer_path)
    with pytest.raises(ValueError, match="scorer file .* not found; pass the scorer.npz"):
        run_scoring(val, output_dir=tmp_path / "bad", encoder=TINY, scorer=tmp_path / "nope.npz")


def test_fingerprint_depends_on_content_not_order():
    table = pa.table({"id": ["a", "b", "c"], "label": [0, 1, 2]})
    assert dataset_fingerprint(table) == dataset_fingerprint(table.take([2, 0, 1]))
    assert dataset_fingerprint(table) != dataset_fingerprint(pa.table({"id": ["a", "b", "c"], "label": [0, 1, 1]}))


def test_extract_config_validation():
    with pytest.raises(ValueError, match="n_views must be an int >= 1"):
        ExtractConfig(n_views=0)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        ExtractConfig(batch_size=0)
    with pytest.raises(ValueError, match="num_actors must be an int >= 1"):
        ExtractConfig(num_actors=0)
    with pytest.raises(ValueError, match="stall_seconds must be > 0"):
        ExtractConfig(stall_seconds=0)
    with pytest.raises(ValueError, match="startup_seconds must be > 0"):
        ExtractConfig(startup_seconds=-1.0)
    with pytest.raises(ValueError, match="unknown encoder 'nope'"):
        EncoderSpec("nope").build()


class _SlowDataset:
    """Stands in for a Dataset: yields after the given delays; records whether it was shut down."""

    def __init__(self, delays):
        self.delays = delays
        self.shut_down = False
        self._current_executor = self

    def shutdown(self, force):
        self.shut_down = force

    def iter_batches(self, **_):
        for i, delay in enumerate(self.delays):
            time.sleep(delay)
            yield {"i": np.asarray([i])}


def test_the_watchdog_gives_the_first_batch_the_startup_budget_and_later_ones_the_stall_budget():
    from rmd_ray.distributed.inference.resume import EmbeddingStalled, watched

    # a slow start (actors loading the encoder) is not a stall ...
    slow_start = _SlowDataset([0.6, 0.0, 0.1])
    got = [int(b["i"][0]) for b in watched(slow_start, stall_seconds=0.3, startup_seconds=2.0)]
    assert got == [0, 1, 2] and not slow_start.shut_down
    # ... but a gap after the first batch is, and the execution is shut down
    stalls_later = _SlowDataset([0.0, 0.8])
    with pytest.raises(EmbeddingStalled, match=r"no features written for 0\.3 s"):
        list(watched(stalls_later, stall_seconds=0.3, startup_seconds=2.0))
    assert stalls_later.shut_down is True
    # a start longer than the startup budget is a stall too; the longer of the two budgets applies
    never_starts = _SlowDataset([1.0])
    with pytest.raises(EmbeddingStalled, match=r"no features written for 0\.4 s"):
        list(watched(never_starts, stall_seconds=0.1, startup_seconds=0.4))
    assert never_starts.shut_down is True
    assert [int(b["i"][0]) for b in watched(_SlowDataset([0.3]), stall_seconds=0.6, startup_seconds=0.1)] == [0]


@pytest.mark.parametrize("num_actors", [1, 2])
def test_decoding_stays_in_its_own_tasks_beside_the_encoder_actors(ray_local, tmp_path, capsys, num_actors):
    """Ray Data fuses a task stage into the next actor stage with equal remote arguments; with CPU encoders
    that put decoding inside the encoder actors (no decode beside encoding, none on CPU-only nodes)."""
    from rmd_ray.distributed.inference.pipeline import embedding_pipeline
    from rmd_ray.distributed.sources.plan import source_from_table

    rng = np.random.default_rng(0)
    source = source_from_table(from_arrays(rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8), [0, 1] * 3),
                               shard_rows=2)
    # decode_cpus 1.0 is the CPU encoder actor's ask too: the two stages' remote arguments differ only by max_calls
    extract = ExtractConfig(batch_size=4, num_actors=num_actors, gpus_per_actor=0, decode_cpus=1.0)
    ds = embedding_pipeline(list(source.shards), classes=source.classes, features_dir=str(tmp_path / "f"),
                             encoder=EncoderSpec("tiny_cnn", image_size=8), extract=extract, attempt="a")
    ds.explain()
    optimized = capsys.readouterr().out.split("Physical Plan (Optimized)")[-1]
    assert "TaskPoolMapOperator[MapBatches(write_stage)]" in optimized
    assert "ActorPoolMapOperator[MapBatches(EmbedActor)]" in optimized
    assert "TaskPoolMapOperator[MapBatches(read_decode_stage)]" in optimized

"""Class statistics formed by the encoder actors (docs/design.md section 7.2): each features part's
ClassStats as a sidecar, equal to those of its features, and the fit from sidecars equal to the fit
from features. The DLPack hand-over runs here on CPU tensors; the CuPy side runs in gpu_check.py."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from rmd_ray.core.stats import ClassStats, batch_stats, stats_from_bytes, stats_to_bytes
from rmd_ray.data.readers import from_arrays
from rmd_ray.distributed.inference.resume import drop_unfinished_rows
from rmd_ray.distributed.inference.stages import merged_part_stats, part_stats
from rmd_ray.distributed.scoring.outputs import load_scorer
from rmd_ray.distributed.scoring.passes import fit_scorer
from rmd_ray.distributed.scoring.run import EncoderSpec, ExtractConfig, feature_matrix, run_scoring
from rmd_ray.io import storage
from rmd_ray.io.parts import part_uris, stats_sidecar


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def _assert_stats_close(a: ClassStats, b: ClassStats, rtol: float = 1e-10) -> None:
    np.testing.assert_array_equal(a.counts, b.counts)
    assert _rel(a.means, b.means) <= rtol
    assert _rel(a.scatter, b.scatter) <= rtol


def _features(seed: int, n: int, d: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    feats = (rng.normal(size=(k, d))[labels] * 3 + rng.normal(size=(n, d)) + 50.0).astype(np.float32)
    return feats, labels


def test_part_stats_from_a_tensor_equal_batch_stats_of_its_values():
    feats, labels = _features(0, 300, 7, 5)
    got = part_stats(torch.from_numpy(feats.copy()), labels, n_classes=5, dim=7)
    _assert_stats_close(got, batch_stats(feats.astype(np.float64), labels, n_classes=5), rtol=1e-12)
    empty = part_stats(None, np.zeros(0, np.int64), n_classes=5, dim=7)
    assert empty.n_samples == 0 and empty.scatter.shape == (7, 7) and not empty.means.any()


def test_stats_round_trip_bytes_and_refuse_garbage():
    feats, labels = _features(1, 50, 4, 3)
    stats = batch_stats(feats, labels, n_classes=3)
    back, extra = stats_from_bytes(stats_to_bytes(stats, rows=61))
    assert extra == {"rows": 61}
    np.testing.assert_array_equal(back.scatter, stats.scatter)
    np.testing.assert_array_equal(back.means, stats.means)
    with pytest.raises(ValueError, match="not serialised ClassStats"):
        stats_from_bytes(b"not an npz")


def _actor_batch(feats, labels, key: str) -> dict[str, np.ndarray]:
    n = len(labels)
    blob = stats_to_bytes(batch_stats(feats, labels, n_classes=4), rows=n)
    return {"stats": np.asarray([blob] + [b""] * (n - 1), dtype=object),
            "stats_key": np.asarray([key] * n, dtype=object)}


def test_a_writer_batch_merges_whole_actor_batches_and_refuses_split_ones():
    fa, ya = _features(2, 40, 5, 4)
    fb, yb = _features(3, 25, 5, 4)
    a, b = _actor_batch(fa, ya, "a"), _actor_batch(fb, yb, "b")
    whole = {k: np.concatenate([a[k], b[k]]) for k in a}
    merged = merged_part_stats(whole)
    reference = batch_stats(np.concatenate([fa, fb]).astype(np.float64), np.concatenate([ya, yb]), n_classes=4)
    _assert_stats_close(merged, reference)
    # b cut in two (its blob in the first piece): neither piece may claim statistics
    head = {k: np.concatenate([a[k], b[k][:10]]) for k in a}
    tail = {k: b[k][10:] for k in b}
    assert merged_part_stats(head) is None and merged_part_stats(tail) is None
    assert merged_part_stats({"id": np.arange(3)}) is None  # prediction: no statistics travel


@pytest.mark.ray
@pytest.mark.timeout(300)
@pytest.mark.parametrize("base", ["s3"], indirect=True)
def test_scoring_fits_from_actor_statistics_equal_to_the_features(ray_local, base):
    rng = np.random.default_rng(4)
    labels = np.arange(64) % 4
    images = rng.integers(0, 255, (64, 16, 16, 3), dtype=np.uint8)
    images[labels == 1, :, :, 0] = 255
    table = from_arrays(images, labels, classes=list("abcd"))
    extract = ExtractConfig(batch_size=8, write_rows=16, num_actors=1)
    result = run_scoring(table, output_dir=storage.join(base, "run"), encoder=EncoderSpec("tiny_cnn"),
                         extract=extract, shard_rows=32)
    parts = part_uris(result.features_path)
    # one part per actor task (Ray Data joins the outputs of a task's calls into one block)
    assert len(parts) >= 2 and sum(storage.read_parquet(p).num_rows for p in parts) == 64
    for part in parts:  # each sidecar holds exactly its part's statistics
        stats, _ = stats_from_bytes(storage.read_bytes(stats_sidecar(part)))
        rows = storage.read_parquet(part)
        expected = batch_stats(feature_matrix(rows).astype(np.float64), rows.column("label").to_numpy(), n_classes=4)
        _assert_stats_close(stats, expected)
    scorer = load_scorer(result.scorer_path)
    from_sidecars = fit_scorer(parts, n_classes=4, n_views=1, covariance=scorer.covariance)
    for part in parts:
        storage.delete(stats_sidecar(part))
    from_features = fit_scorer(parts, n_classes=4, n_views=1, covariance=scorer.covariance)
    assert _rel(from_sidecars.covariance_, from_features.covariance_) <= 1e-10
    assert _rel(from_sidecars.means_, from_features.means_) <= 1e-10
    assert _rel(from_sidecars.covariance_, scorer.covariance_) <= 1e-12  # the run itself used them


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_a_part_cut_down_on_resume_loses_its_sidecar(ray_local, tmp_path):
    features_dir = str(tmp_path / "features.parquet")
    feats, labels = _features(5, 6, 3, 2)
    table = pa.table({"id": [f"r{i}" for i in range(6)], "label": labels, "shard": [0, 0, 0, 1, 1, 1],
                      "features": pa.FixedSizeListArray.from_arrays(pa.array(feats.reshape(-1)), 3),
                      "error": [""] * 6, "stage": [""] * 6})
    old, new = storage.join(features_dir, "part-aaaa-1.parquet"), storage.join(features_dir, "part-bbbb-2.parquet")
    storage.write_parquet_atomic(table, old)
    storage.write_parquet_atomic(table.slice(3), new)
    for part in (old, new):
        storage.write_bytes_atomic(stats_sidecar(part), stats_to_bytes(batch_stats(feats, labels, n_classes=2)))
    # shard 0 finished by attempt aaaa, shard 1 by bbbb: the old part keeps shard 0's rows only
    kept = drop_unfinished_rows(features_dir, {0: {"attempt": "aaaa"}, 1: {"attempt": "bbbb"}})
    assert kept == ["part-aaaa-1.parquet", "part-bbbb-2.parquet"]
    assert storage.read_parquet(old).column("id").to_pylist() == ["r0", "r1", "r2"]
    assert not storage.exists(stats_sidecar(old))  # its statistics counted rows now gone
    assert storage.exists(stats_sidecar(new))

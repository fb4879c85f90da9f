"""Sufficient statistics: against naive float64 references, sklearn, and chunk/shard/permutation invariance."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.covariance import EmpiricalCovariance

from rmd_ray.core.stats import (
    batch_stats,
    batch_stats_unchecked,
    class_agnostic_covariance,
    class_agnostic_mean,
    empty_stats,
    merge_all,
    merge_stats,
    stream_stats,
    within_class_covariance,
)


def naive_covariances(features, labels, n_classes):
    """Textbook float64 definitions, one class at a time (docs/design.md 1.2)."""
    f = features.astype(np.float64)
    n, d = f.shape
    shared = np.zeros((d, d))
    for k in range(n_classes):
        rows = f[labels == k]
        if len(rows):
            centred = rows - rows.mean(axis=0)
            shared += centred.T @ centred
    mu0 = f.mean(axis=0)
    total = (f - mu0).T @ (f - mu0) / n
    return shared / n, mu0, total


def make_data(seed=0, n=3000, d=12, k=5, offset=0.0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    centres = rng.normal(scale=3.0, size=(k, d))
    mixing = rng.normal(size=(d, d)) / np.sqrt(d)
    features = centres[labels] + rng.normal(size=(n, d)) @ mixing + offset
    return features.astype(dtype), labels


def test_covariances_match_naive_reference_and_sklearn():
    features, labels = make_data()
    stats = batch_stats(features, labels, n_classes=5)
    shared, mu0, total = naive_covariances(features, labels, 5)
    np.testing.assert_allclose(within_class_covariance(stats), shared, rtol=0, atol=1e-10)
    np.testing.assert_allclose(class_agnostic_mean(stats), mu0, rtol=0, atol=1e-10)
    np.testing.assert_allclose(class_agnostic_covariance(stats), total, rtol=0, atol=1e-10)
    # scikit-learn's EmpiricalCovariance on the whole set and on class-centred residuals
    np.testing.assert_allclose(
        class_agnostic_covariance(stats), EmpiricalCovariance().fit(features).covariance_, rtol=0, atol=1e-10
    )
    residuals = features - stats.means[labels]
    np.testing.assert_allclose(
        within_class_covariance(stats),
        EmpiricalCovariance(assume_centered=True).fit(residuals).covariance_,
        rtol=0,
        atol=1e-10,
    )
    assert stats.counts.tolist() == np.bincount(labels, minlength=5).tolist()


def test_chunked_sharded_and_permuted_give_identical_statistics():
    features, labels = make_data(seed=1, n=2500)
    whole = batch_stats(features, labels, n_classes=5)
    rng = np.random.default_rng(7)
    perm = rng.permutation(len(labels))
    for chunk in (1, 7, 100, 2499):
        parts = [
            batch_stats(features[perm][i : i + chunk], labels[perm][i : i + chunk], n_classes=5)
            for i in range(0, len(labels), chunk)
        ]
        order = rng.permutation(len(parts))  # shard order must not matter either
        merged = merge_all(parts[j] for j in order)
        assert merged.counts.tolist() == whole.counts.tolist()
        np.testing.assert_allclose(merged.means, whole.means, rtol=0, atol=1e-12)
        np.testing.assert_allclose(merged.scatter, whole.scatter, rtol=1e-12, atol=1e-9)


def test_means_match_a_per_class_loop_in_float64():
    features, labels = make_data(seed=2, offset=1e4, dtype=np.float32)
    stats = batch_stats_unchecked(features, labels, 5)
    for k in range(5):
        expected = features[labels == k].astype(np.float64).mean(axis=0)
        np.testing.assert_allclose(stats.means[k], expected, rtol=1e-12)


def test_float32_features_far_from_origin_keep_the_covariance_exact():
    """Offset 1e4 in float32: the naive sum of outer products cancels catastrophically; we do not."""
    features, labels = make_data(seed=3, n=20000, d=8, offset=1e4, dtype=np.float32)
    reference_shared, _, reference_total = naive_covariances(features, labels, 5)
    chunks = [(features[i : i + 4096], labels[i : i + 4096]) for i in range(0, len(labels), 4096)]
    stats = stream_stats(chunks, n_classes=5)
    assert np.abs(within_class_covariance(stats) - reference_shared).max() / np.abs(reference_shared).max() < 1e-12
    assert np.abs(class_agnostic_covariance(stats) - reference_total).max() / np.abs(reference_total).max() < 1e-12

    # The textbook shortcut in float32: E[f f^T] - mu mu^T loses every significant digit at this offset.
    f32 = features
    naive = (f32.T @ f32) / np.float32(len(f32)) - np.outer(f32.mean(0), f32.mean(0))
    naive_error = np.abs(naive - reference_total).max() / np.abs(reference_total).max()
    assert naive_error > 1e-1, naive_error


def test_merge_with_empty_is_identity_and_rejects_mismatched_shapes():
    features, labels = make_data(seed=4)
    stats = batch_stats(features, labels, n_classes=5)
    merged = merge_stats(empty_stats(5, 12), stats)
    np.testing.assert_array_equal(merged.scatter, stats.scatter)
    np.testing.assert_array_equal(merged.means, stats.means)
    with pytest.raises(ValueError, match="same n_classes and encoder"):
        merge_stats(stats, empty_stats(6, 12))
    with pytest.raises(ValueError, match="every shard was empty"):
        merge_all([])


def test_missing_classes_in_a_shard_merge_correctly():
    features, labels = make_data(seed=5)
    only_low = labels < 2
    a = batch_stats(features[only_low], labels[only_low], n_classes=5)
    b = batch_stats(features[~only_low], labels[~only_low], n_classes=5)
    assert a.counts[2:].sum() == 0 and b.counts[:2].sum() == 0
    whole = batch_stats(features, labels, n_classes=5)
    np.testing.assert_allclose(merge_stats(a, b).scatter, whole.scatter, rtol=1e-12, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 60),
    d=st.integers(1, 5),
    k=st.integers(1, 4),
    split=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_property_any_split_equals_whole(n, d, k, split, seed):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, d)) * rng.uniform(0.1, 100)
    labels = rng.integers(0, k, n)
    cut = int(split * n)
    whole = batch_stats(features, labels, n_classes=k)
    parts = [p for p in (slice(0, cut), slice(cut, n)) if p.stop > p.start]
    merged = merge_all(batch_stats(features[p], labels[p], n_classes=k) for p in parts)
    np.testing.assert_allclose(
        merged.scatter, whole.scatter, rtol=1e-9, atol=1e-9 * np.abs(whole.scatter).max() + 1e-12
    )
    shared, _, total = naive_covariances(features, labels, k)
    np.testing.assert_allclose(
        within_class_covariance(merged), shared, rtol=1e-9, atol=1e-9 * (np.abs(shared).max() + 1)
    )
    np.testing.assert_allclose(
        class_agnostic_covariance(merged), total, rtol=1e-9, atol=1e-9 * (np.abs(total).max() + 1)
    )


# ------------------------------------------------------------------- dtype independence (issue 10, item 6a)
def assert_stats_equal(actual, expected, *, rtol=1e-12):
    assert actual.counts.tolist() == expected.counts.tolist()
    for name in ("means", "scatter"):
        a, e = getattr(actual, name), getattr(expected, name)
        assert a.dtype == np.float64
        assert np.abs(a - e).max() <= rtol * np.abs(e).max(), name


@pytest.mark.parametrize(("n", "d", "k", "offset"), [(3000, 12, 5, 0.0), (6000, 32, 6, 1e4), (500, 3, 40, -3e3)])
def test_float32_input_gives_the_statistics_of_its_float64_cast(n, d, k, offset):
    features, labels = make_data(seed=11, n=n, d=d, k=k, offset=offset, dtype=np.float32)
    from32 = batch_stats(features, labels, n_classes=k)
    from64 = batch_stats(features.astype(np.float64), labels, n_classes=k)
    assert_stats_equal(from32, from64)
    # and both equal the textbook float64 definitions
    shared, mu0, total = naive_covariances(features, labels, k)
    np.testing.assert_allclose(class_agnostic_mean(from32), mu0, rtol=1e-12)
    assert np.abs(within_class_covariance(from32) - shared).max() <= 1e-12 * np.abs(shared).max()
    assert np.abs(class_agnostic_covariance(from32) - total).max() <= 1e-12 * np.abs(total).max()


def test_one_large_class_far_from_the_origin_in_float32_is_exact():
    """200,000 float32 rows at offset 1e4 in one class: a float32 one-hot sum put the mean 11.7 off."""
    rng = np.random.default_rng(12)
    features = (rng.normal(size=(200_000, 8)) + 1e4).astype(np.float32)
    labels = np.zeros(len(features), dtype=np.int64)
    stats = batch_stats(features, labels, n_classes=1)
    exact = features.astype(np.float64)
    mean = exact.mean(axis=0)
    np.testing.assert_allclose(stats.means[0], mean, rtol=1e-12)
    reference = (exact - mean).T @ (exact - mean)
    assert np.abs(stats.scatter - reference).max() <= 1e-12 * np.abs(reference).max()
    assert_stats_equal(stats, batch_stats(exact, labels, n_classes=1))
    # chunked the same way a stream would see it
    streamed = stream_stats(((features[i : i + 30_000], labels[i : i + 30_000]) for i in range(0, 200_000, 30_000)),
                            n_classes=1)
    assert_stats_equal(streamed, stats)


def test_float32_values_near_1e20_do_not_overflow():
    rng = np.random.default_rng(13)
    small = rng.normal(size=(400, 6))
    labels = rng.integers(0, 3, 400)
    big = (small * 1e20).astype(np.float32)  # squares (1e40) overflow float32, not float64
    stats = batch_stats(big, labels, n_classes=3)
    assert np.isfinite(stats.scatter).all()
    shared, _, _ = naive_covariances(big, labels, 3)
    assert np.abs(within_class_covariance(stats) - shared).max() <= 1e-12 * np.abs(shared).max()


def test_float64_values_that_overflow_the_scatter_say_how_to_fix_it():
    rng = np.random.default_rng(14)
    features = rng.normal(size=(50, 3)) * 1e200
    with pytest.raises(ValueError, match="overflow float64 in the scatter.*divide the features by a common constant"):
        batch_stats(features, rng.integers(0, 2, 50), n_classes=2)

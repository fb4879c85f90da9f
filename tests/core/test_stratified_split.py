"""The stratified validation split: exact per-class counts, determinism, a partition, every error branch."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmd_ray.core import stratified_split, validation_counts


def test_counts_per_class_are_exact():
    # class sizes 10, 5, 2, 1, 3 at fraction 0.1: 1.0 -> 1; 0.5 -> 1 (half up); 0.2 -> 0, raised to 1 (at least
    # one); a singleton -> 0 (stays in training); 0.3 -> 0, raised to 1
    labels = np.repeat([0, 1, 2, 3, 4], [10, 5, 2, 1, 3])
    train, val = stratified_split(labels, fraction=0.1, seed=0)
    assert np.bincount(labels[val], minlength=5).tolist() == [1, 1, 1, 0, 1]
    assert np.bincount(labels[train], minlength=5).tolist() == [9, 4, 1, 1, 2]


def test_counts_round_half_up_and_keep_one_training_sample():
    assert validation_counts([10, 5, 2, 1, 0, 4], fraction=0.25).tolist() == [3, 1, 1, 0, 0, 1]
    # 0.5 * 5 = 2.5 -> 3 (half up, not Python's half-even 2); 0.5 * 3 = 1.5 -> 2
    assert validation_counts([5, 3], fraction=0.5).tolist() == [3, 2]
    # 0.9 * 2 = 1.8 -> 2 would leave class 0 without training samples: capped at n_c - 1
    assert validation_counts([2, 10], fraction=0.9).tolist() == [1, 9]


def test_larger_fraction_takes_exact_share_of_every_class():
    labels = np.repeat(np.arange(4), [100, 40, 60, 20])
    rng = np.random.default_rng(3)
    labels = labels[rng.permutation(labels.size)]  # classes interleaved, as in a real file
    train, val = stratified_split(labels, fraction=0.2, seed=11)
    assert np.bincount(labels[val]).tolist() == [20, 8, 12, 4]
    assert val.size == 44 and train.size == 176


def test_same_seed_same_split_other_seed_other_split():
    labels = np.tile(np.arange(5), 40)
    a_train, a_val = stratified_split(labels, fraction=0.3, seed=7)
    b_train, b_val = stratified_split(labels, fraction=0.3, seed=7)
    np.testing.assert_array_equal(a_val, b_val)
    np.testing.assert_array_equal(a_train, b_train)
    _, c_val = stratified_split(labels, fraction=0.3, seed=8)
    assert not np.array_equal(a_val, c_val)
    assert np.bincount(labels[c_val]).tolist() == np.bincount(labels[a_val]).tolist() == [12] * 5


def test_label_values_need_not_be_contiguous():
    labels = np.array([7, 7, 7, 7, 900, 900, 900, 900, 900, 900])
    train, val = stratified_split(labels, fraction=0.5, seed=0)
    assert sorted(labels[val].tolist()) == [7, 7, 900, 900, 900]
    assert train.dtype == val.dtype == np.int64


def test_empty_and_all_singletons_give_empty_validation():
    train, val = stratified_split(np.array([], dtype=np.int64), fraction=0.1, seed=0)
    assert train.size == 0 and val.size == 0
    train, val = stratified_split(np.array([0, 1, 2]), fraction=0.5, seed=0)
    assert train.tolist() == [0, 1, 2] and val.size == 0


@settings(max_examples=60, deadline=None)
@given(
    labels=st.lists(st.integers(0, 6), min_size=0, max_size=120),
    fraction=st.floats(0.01, 0.99),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_partition_sorted_and_stratified(labels, fraction, seed):
    labels = np.asarray(labels, dtype=np.int64)
    train, val = stratified_split(labels, fraction=fraction, seed=seed)
    # a partition of 0..N-1, each part sorted
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(labels.size))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    # per class: the documented count, and every class with >= 2 samples keeps >= 1 on each side
    sizes = np.bincount(labels, minlength=7)
    expected = [0 if n < 2 else min(max(int(np.floor(fraction * n + 0.5)), 1), n - 1) for n in sizes]
    assert np.bincount(labels[val], minlength=7).tolist() == expected
    # deterministic
    np.testing.assert_array_equal(stratified_split(labels, fraction=fraction, seed=seed)[1], val)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_fraction_outside_open_interval(fraction):
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\).*e\.g\. 0\.1"):
        stratified_split(np.array([0, 0, 1, 1]), fraction=fraction, seed=0)


@pytest.mark.parametrize("fraction", ["0.1", None, True])
def test_fraction_not_a_number(fraction):
    with pytest.raises(TypeError, match="fraction must be a float in"):
        stratified_split(np.array([0, 0, 1, 1]), fraction=fraction, seed=0)


def test_validation_counts_checks_fraction():
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\)"):
        validation_counts([3, 4], fraction=1.0)


@pytest.mark.parametrize("seed", [1.5, "0", None, False])
def test_seed_must_be_int(seed):
    with pytest.raises(TypeError, match="seed must be an int"):
        stratified_split(np.array([0, 0, 1, 1]), fraction=0.5, seed=seed)


def test_labels_must_be_one_dimensional():
    with pytest.raises(ValueError, match=r"labels must be 1-D \(N,\), got shape \(2, 2\)"):
        stratified_split(np.zeros((2, 2), dtype=np.int64), fraction=0.5, seed=0)


@pytest.mark.parametrize("labels", [np.array([0.0, 1.0]), np.array([True, False]), np.array(["a", "b"])])
def test_labels_must_be_integers(labels):
    with pytest.raises(TypeError, match=r"labels must be integers.*astype\(np\.int64\)"):
        stratified_split(labels, fraction=0.5, seed=0)


def test_negative_labels_name_the_position():
    with pytest.raises(ValueError, match="labels must be >= 0; position 2 is -1"):
        stratified_split(np.array([0, 1, -1, 1]), fraction=0.5, seed=0)

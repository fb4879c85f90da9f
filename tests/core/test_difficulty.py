"""Difficulty sources, rank normalisation, stratified folds and out-of-fold losses (rmd_ray.core.difficulty)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from rmd_ray.core import WeightConfig, difficulty_weights, normalize_scores
from rmd_ray.core.difficulty import (
    DIFFICULTY_COLUMNS,
    DIFFICULTY_SOURCES,
    out_of_fold_losses,
    source_column,
    source_weights,
    weights_from_columns,
)
from rmd_ray.core.splits import stratified_folds

# ---------------------------------------------------------------------------------- rank normalisation


@settings(max_examples=80, deadline=None)
@given(arrays(np.float64, st.integers(2, 60), elements=st.sampled_from([-3.0, 0.0, 0.5, 1.0, 7.0, 1e6])))
def test_rank_normalisation_equals_scipy_average_ranks_scaled_to_unit_interval(r):
    expected = (scipy.stats.rankdata(r, method="average") - 1) / (len(r) - 1)
    np.testing.assert_allclose(normalize_scores(r, method="rank"), expected, rtol=0, atol=1e-15)


def test_rank_normalisation_reference_values_and_single_sample():
    ranks = normalize_scores(np.array([3.0, 1.0, 1.0, 2.0]), method="rank")
    np.testing.assert_array_equal(ranks, [1, 1 / 6, 1 / 6, 2 / 3])
    np.testing.assert_array_equal(normalize_scores(np.array([5.0]), method="rank"), [0.0])


def test_rank_spreads_weights_that_minmax_compresses():
    # one extreme score squeezes min-max weights toward the bottom; ranks give a uniform spread
    r = np.concatenate([np.linspace(0, 1, 99), [1000.0]])
    minmax = normalize_scores(r, method="minmax")
    rank = normalize_scores(r, method="rank")
    assert minmax[:99].max() < 0.002
    np.testing.assert_allclose(rank, np.arange(100) / 99)


def test_rank_normalisation_refuses_a_reference_range():
    with pytest.raises(ValueError, match="rank normalisation places the training samples.*normalization='minmax'"):
        normalize_scores(np.array([1.0, 2.0]), method="rank", reference=(0.0, 3.0))
    with pytest.raises(ValueError, match="cannot place new samples"):
        difficulty_weights(np.array([1.0, 2.0]), config=WeightConfig(normalization="rank"), reference=(0.0, 3.0))


# ------------------------------------------------------------------------------------------- sources


def test_every_source_reads_a_column_and_the_controls_read_rmd():
    assert {n: source_column(n) for n in DIFFICULTY_SOURCES.names()} == {
        "kmeans": "kmeans", "loss": "loss", "md": "md", "rmd": "rmd", "shuffled_rmd": "rmd", "uniform": "rmd",
    }
    assert DIFFICULTY_COLUMNS == ("kmeans", "loss", "md", "rmd")


@pytest.mark.parametrize("source", ["rmd", "md", "kmeans", "loss"])
def test_per_sample_sources_are_the_weight_map_of_their_column(source):
    d = np.array([0.3, -2.0, 5.0, 1.0])
    config = WeightConfig(temperature=0.5)
    np.testing.assert_array_equal(source_weights(d, source=source, config=config), difficulty_weights(d, config=config))


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, st.integers(1, 40), elements=st.floats(-100, 100)), st.integers(0, 2**31 - 1))
def test_shuffled_rmd_keeps_the_distribution_and_uniform_the_mean(d, seed):
    reference = difficulty_weights(d)
    shuffled = source_weights(d, source="shuffled_rmd", seed=seed)
    np.testing.assert_array_equal(np.sort(shuffled), np.sort(reference))  # the same multiset of weights
    np.testing.assert_array_equal(shuffled, source_weights(d, source="shuffled_rmd", seed=seed))  # seeded
    uniform = source_weights(d, source="uniform")
    np.testing.assert_allclose(uniform, np.full(d.shape, reference.mean()), rtol=1e-15)


def test_shuffled_rmd_is_the_seeded_permutation():
    d = np.arange(10.0)
    expected = difficulty_weights(d)[np.random.default_rng(3).permutation(10)]
    np.testing.assert_array_equal(source_weights(d, source="shuffled_rmd", seed=3), expected)
    assert not np.array_equal(source_weights(d, source="shuffled_rmd", seed=3), difficulty_weights(d))


def test_weights_from_columns_picks_the_column_and_names_a_missing_one():
    columns = {"rmd": np.array([0.0, 1.0]), "md": np.array([1.0, 0.0])}
    np.testing.assert_array_equal(weights_from_columns(columns, source="md"), difficulty_weights(columns["md"]))
    np.testing.assert_array_equal(weights_from_columns(columns, source="uniform"),
                                  source_weights(columns["rmd"], source="uniform"))
    with pytest.raises(ValueError, match="source 'loss' reads the column 'loss'.*out_of_fold_losses"):
        weights_from_columns(columns, source="loss")
    with pytest.raises(ValueError, match="source 'kmeans' reads the column 'kmeans'.*rmd-ray score"):
        weights_from_columns(columns, source="kmeans")
    with pytest.raises(ValueError, match="unknown difficulty source 'entropy'; valid names: kmeans, loss, md, rmd"):
        source_weights(columns["rmd"], source="entropy")


# ------------------------------------------------------------------------------------------- folds


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=6, max_size=80), st.integers(2, 5), st.integers(0, 100))
def test_stratified_folds_balance_every_class_and_the_fold_sizes(labels, folds, seed):
    labels = np.array(labels)
    if folds > labels.size:
        return
    fold = stratified_folds(labels, folds=folds, seed=seed)
    assert fold.shape == labels.shape and set(np.unique(fold)) <= set(range(folds))
    sizes = np.bincount(fold, minlength=folds)
    assert sizes.max() - sizes.min() <= 1
    for c in np.unique(labels):
        per_fold = np.bincount(fold[labels == c], minlength=folds)
        assert per_fold.max() - per_fold.min() <= 1
    np.testing.assert_array_equal(fold, stratified_folds(labels, folds=folds, seed=seed))


def test_stratified_folds_validation():
    with pytest.raises(ValueError, match="folds must be an int >= 2"):
        stratified_folds([0, 1, 0], folds=1, seed=0)
    with pytest.raises(ValueError, match=r"folds \(4\) exceeds the samples \(3\)"):
        stratified_folds([0, 1, 0], folds=4, seed=0)
    with pytest.raises(TypeError, match="labels must be integers"):
        stratified_folds([0.0, 1.0], folds=2, seed=0)
    with pytest.raises(TypeError, match="seed must be an int"):
        stratified_folds([0, 1], folds=2, seed=0.5)


# ------------------------------------------------------------------------------------ out-of-fold loss


def test_out_of_fold_losses_never_score_a_sample_with_a_model_that_trained_on_it():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=30)
    logits = rng.normal(size=(30, 3))
    calls = []

    def fit_predict(train_idx, held_idx):
        assert not set(train_idx) & set(held_idx)
        assert len(train_idx) + len(held_idx) == 30
        calls.append(held_idx)
        return logits[held_idx]

    losses = out_of_fold_losses(labels, fit_predict=fit_predict, folds=3, seed=1)
    assert len(calls) == 3 and sorted(np.concatenate(calls).tolist()) == list(range(30))
    # naive reference: -log softmax(z)[y]
    naive = np.array([-np.log(np.exp(z[y]) / np.exp(z).sum()) for z, y in zip(logits, labels)])
    np.testing.assert_allclose(losses, naive, rtol=1e-12)


def test_out_of_fold_losses_check_what_fit_predict_returns():
    labels = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"logits of shape \(3,\) for 2 held-out samples"):
        out_of_fold_losses(labels, fit_predict=lambda tr, he: np.zeros(3), folds=2)
    with pytest.raises(ValueError, match="returned 1 classes; label 1 needs more"):
        out_of_fold_losses(labels, fit_predict=lambda tr, he: np.zeros((len(he), 1)), folds=2)

    def nan_logits(train_idx, held_idx):
        z = np.zeros((len(held_idx), 2))
        z[0, 0] = np.nan
        return z

    with pytest.raises(ValueError, match="non-finite logits for sample"):
        out_of_fold_losses(labels, fit_predict=nan_logits, folds=2)


def test_robust_normalisation_is_minmax_between_percentiles_clipped():
    r = np.concatenate([np.linspace(0, 1, 99), [1000.0]])
    lo, hi = np.quantile(r, [0.05, 0.95])
    robust = normalize_scores(r, method="robust")
    np.testing.assert_allclose(robust, np.clip((r - lo) / (hi - lo), 0, 1))
    # one extreme score no longer squeezes the rest: the central samples spread over [0, 1]
    assert robust[50] == pytest.approx((r[50] - lo) / (hi - lo))
    assert robust[:99].max() == 1.0
    with pytest.raises(ValueError, match="robust normalisation places the training samples"):
        normalize_scores(r, method="robust", reference=(0.0, 1.0))
    assert np.all(normalize_scores(np.full(5, 3.0), method="robust") == 0)

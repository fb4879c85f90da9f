"""Scores (MD, RMD, K-means distance) against naive references; weights' properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from rmd_ray.core import DifficultyScorer, WeightConfig, difficulty_weights, log_difficulty_weights, normalize_scores
from rmd_ray.core.scores import mahalanobis_sq


def gaussian_classes(seed=0, n=4000, d=10, k=4):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    centres = rng.normal(scale=2.5, size=(k, d))
    features = centres[labels] + rng.normal(size=(n, d)) @ (np.eye(d) + 0.3 * rng.normal(size=(d, d)))
    return features, labels


def test_md_and_rmd_equal_the_textbook_formula():
    features, labels = gaussian_classes()
    scorer = DifficultyScorer(n_classes=4).fit(features, labels)
    md, rmd = scorer.score(features[:50], labels[:50])
    precision = np.linalg.inv(scorer.covariance_)
    precision0 = np.linalg.inv(scorer.global_covariance_)
    for i in range(50):
        diff = features[i] - scorer.means_[labels[i]]
        diff0 = features[i] - scorer.global_mean_
        expected_md = diff @ precision @ diff
        assert md[i] == pytest.approx(expected_md, rel=1e-9)
        assert rmd[i] == pytest.approx(expected_md - diff0 @ precision0 @ diff0, rel=1e-7, abs=1e-8)
    assert (md >= 0).all()


def test_flipped_label_scores_higher_rmd_than_true_label():
    """docs/design.md 1.3: larger RMD = harder; a wrong label must look harder than the true one."""
    features, labels = gaussian_classes(seed=1)
    scorer = DifficultyScorer(n_classes=4).fit(features, labels)
    sample, true = features[:200], labels[:200]
    flipped = (true + 1) % 4
    _, rmd_true = scorer.score(sample, true)
    _, rmd_flipped = scorer.score(sample, flipped)
    assert (rmd_flipped > rmd_true).mean() > 0.97
    assert np.median(rmd_flipped - rmd_true) > 5.0


def test_kmeans_distance_is_squared_euclidean_to_own_class_mean():
    features, labels = gaussian_classes(seed=2)
    scorer = DifficultyScorer(n_classes=4).fit(features, labels)
    expected = ((features - scorer.means_[labels]) ** 2).sum(axis=1)
    np.testing.assert_allclose(scorer.kmeans_distance(features, labels), expected, rtol=1e-12)


def test_class_distances_match_direct_md_and_chunking():
    features, labels = gaussian_classes(seed=3)
    features = features + 1e3  # far from the origin: the nearest-class expansion must still be right
    scorer = DifficultyScorer(n_classes=4).fit(features, labels)
    distances = scorer.class_distances(features[:300])
    for k in range(4):
        direct = mahalanobis_sq(features[:300], scorer.means_[k], scorer.whitening_)
        np.testing.assert_allclose(distances[:, k], direct, rtol=1e-6, atol=1e-6)
    md, _ = scorer.score(features[:300], labels[:300])
    np.testing.assert_allclose(distances[np.arange(300), labels[:300]], md, rtol=1e-6, atol=1e-6)
    chunked = mahalanobis_sq(features, scorer.global_mean_, scorer.global_whitening_, chunk_size=17)
    whole = mahalanobis_sq(features, scorer.global_mean_, scorer.global_whitening_, chunk_size=10**6)
    np.testing.assert_allclose(chunked, whole, rtol=1e-13)  # BLAS blocking may move the last bit


# ------------------------------------------------------------------------------------------- weights
def test_weights_reference_values():
    r = np.array([0.0, 0.5, 1.0])
    s = difficulty_weights(r, config=WeightConfig(temperature=0.7, c=1e-3, normalization="none"))
    denominator = np.exp(1.0 / 0.7) + 1e-3
    np.testing.assert_allclose(s, np.exp(r / 0.7) / denominator, rtol=1e-14)
    # minmax maps [10, 20, 30] to [0, .5, 1]: same weights
    s_mm = difficulty_weights(np.array([10.0, 20.0, 30.0]))
    np.testing.assert_allclose(s_mm, s, rtol=1e-14)


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float64, st.integers(1, 50), elements=st.floats(-1e6, 1e6)),
    st.sampled_from(["minmax", "rank", "none"]),
    st.floats(0.05, 10.0),
)
def test_weights_lie_in_unit_interval_are_monotone_and_finite(r, normalization, temperature):
    config = WeightConfig(temperature=temperature, normalization=normalization)
    s = difficulty_weights(r, config=config)
    log_s = log_difficulty_weights(r, config=config)
    assert np.isfinite(s).all() and np.isfinite(log_s).all()
    if normalization in ("minmax", "rank"):
        # r in [0, 1]: exp(-1/T)/(1+c) <= s <= 1/(1 + c exp(-1/T)), both representable strictly inside (0, 1)
        assert (s > 0).all() and (s < 1).all()
    else:
        # raw RMD: s_max = 1/(1 + c exp(-r_max/T)) rounds to 1.0 once c exp(-r_max/T) < 2**-53, and the
        # easiest samples underflow to 0 -- finite, in [0, 1], documented in rmd_ray.core.weights.
        assert (s <= 1).all() and (s >= 0).all()
    order = np.argsort(r, kind="stable")
    assert (np.diff(s[order]) >= 0).all()


def test_weights_stay_finite_for_huge_rmd():
    r = np.array([-1e6, 0.0, 1e6])
    s = difficulty_weights(r, config=WeightConfig(normalization="none"))
    assert np.isfinite(s).all()
    assert s[0] == 0.0 and s[1] == 0.0 and s[2] == 1.0  # exp underflow / rounding, never inf or NaN
    s_minmax = difficulty_weights(r)
    np.testing.assert_allclose(s_minmax, np.exp(np.array([0.0, 0.5, 1.0]) / 0.7) / (np.exp(1 / 0.7) + 1e-3))


def test_equal_scores_give_equal_weights():
    s = difficulty_weights(np.full(5, 3.0))
    np.testing.assert_allclose(s, 1.0 / (1.0 + 1e-3))


def test_reference_range_weights_new_samples_and_clips_harder_ones():
    train = np.array([0.0, 10.0])
    s = difficulty_weights(np.array([5.0, 10.0, 50.0]), reference=(train.min(), train.max()))
    np.testing.assert_allclose(s[1], s[2])  # harder than any training sample: the top weight, still < 1
    assert s[2] < 1.0
    np.testing.assert_allclose(normalize_scores(np.array([5.0]), reference=(0.0, 10.0)), [0.5])


def test_weight_validation():
    with pytest.raises(ValueError, match="score 1 is NaN or inf"):
        difficulty_weights(np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="1-D array"):
        difficulty_weights(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="scores is empty"):
        difficulty_weights(np.zeros(0))
    with pytest.raises(ValueError, match="temperature must be finite and > 0"):
        WeightConfig(temperature=0.0)
    with pytest.raises(ValueError, match="c must be finite and > 0"):
        WeightConfig(c=-1.0)
    with pytest.raises(ValueError, match="unknown normalization 'zscore'; valid names: minmax, none, rank"):
        WeightConfig(normalization="zscore")

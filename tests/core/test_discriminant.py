"""The discriminant shortcut (rmd_ray.core.scores, docs/design.md 1.13): with one ridge for both covariances,
Sigma_0 = Sigma + Sigma_B, and RMD, the margin and MD_0 computed in O(N d K) equal the textbook formulas."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmd_ray.core import CovarianceConfig, DifficultyScorer, whitening_matrix
from rmd_ray.core.covariance import eigenvalue_floor
from rmd_ray.core.stats import batch_stats, between_class_covariance, within_class_covariance


def classes(seed: int, *, n: int, d: int, k: int, offset: float = 0.0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    centres = rng.normal(scale=2.0, size=(k, d))
    mixing = np.eye(d) + 0.4 * rng.normal(size=(d, d))
    return centres[labels] + rng.normal(size=(n, d)) @ mixing + offset, labels


def textbook(scorer: DifficultyScorer, features: np.ndarray, labels: np.ndarray):
    """MD to every class, MD_0 and RMD from np.linalg.solve on the fitted covariances, one class at a time."""
    def quadratic(diff, cov):
        return np.einsum("ij,ij->i", diff, np.linalg.solve(cov, diff.T).T)

    to_classes = np.stack([quadratic(features - mu, scorer.covariance_) for mu in scorer.means_], axis=1)
    md0 = quadratic(features - scorer.global_mean_, scorer.global_covariance_)
    md = to_classes[np.arange(len(labels)), labels]
    margin = np.array([md[i] - np.delete(to_classes[i], y).min() for i, y in enumerate(labels)])
    return to_classes, md, md0, md - md0, margin


@pytest.mark.parametrize("shrinkage", ["none", "ridge"])
def test_one_ridge_makes_the_class_agnostic_covariance_within_plus_between(shrinkage):
    features, labels = classes(0, n=600, d=12, k=3)
    scorer = DifficultyScorer(n_classes=3, covariance=CovarianceConfig(shrinkage=shrinkage, ridge_eps=0.05))
    scorer.fit(features, labels)
    stats = batch_stats(features, labels, n_classes=3)
    between = between_class_covariance(stats)
    np.testing.assert_allclose(scorer.global_covariance_ - scorer.covariance_, between, rtol=0, atol=1e-12)
    ridge = 0.05 * np.trace(within_class_covariance(stats)) / 12 if shrinkage == "ridge" else 0.0
    np.testing.assert_allclose(scorer.covariance_ - within_class_covariance(stats), ridge * np.eye(12), atol=1e-12)
    assert scorer.shrinkage_["global"] == scorer.shrinkage_["within"]
    assert scorer._factor is not None  # K = 3 <= d / 2: the shortcut is in use


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    k=st.integers(2, 6),
    extra=st.integers(0, 10),
    offset=st.sampled_from([0.0, 50.0]),
    shrinkage=st.sampled_from(["none", "ridge"]),
)
def test_shortcut_equals_the_textbook_formulas(seed, k, extra, offset, shrinkage):
    d = 2 * k + extra
    features, labels = classes(seed, n=40 * d, d=d, k=k, offset=offset)
    scorer = DifficultyScorer(n_classes=k, covariance=CovarianceConfig(shrinkage=shrinkage)).fit(features, labels)
    assert scorer._factor is not None
    query, given_labels = features[:60] + 0.5, labels[:60]
    to_classes, md, md0, rmd, margin = textbook(scorer, query, given_labels)
    scale = np.abs(to_classes).max()
    scores = scorer.label_scores(query, given_labels)
    np.testing.assert_allclose(scores.rmd, rmd, rtol=0, atol=1e-9 * scale)
    np.testing.assert_allclose(scores.margin, margin, rtol=0, atol=1e-9 * scale)
    np.testing.assert_array_equal(scores.nearest_class, to_classes.argmin(axis=1))
    parts = scorer.distances(query, given_labels)
    np.testing.assert_allclose(parts.md, md, rtol=1e-9)
    np.testing.assert_allclose(parts.md0, md0, rtol=0, atol=1e-9 * scale)
    np.testing.assert_allclose(parts.to_classes, to_classes, rtol=0, atol=1e-9 * scale)
    np.testing.assert_allclose(scorer.score_parts(query, given_labels)[1], md0, rtol=0, atol=1e-9 * scale)


@pytest.mark.parametrize("shrinkage,d", [("oas", 12), ("ledoit_wolf", 12), ("ridge", 5)])
def test_general_path_gives_the_same_label_scores(shrinkage, d):
    """OAS / Ledoit-Wolf shrink Sigma_0 on its own, and K > d / 2 makes the shortcut dearer: both take the
    whitening path, which must agree with the textbook formulas too."""
    features, labels = classes(1, n=500, d=d, k=4)
    scorer = DifficultyScorer(n_classes=4, covariance=CovarianceConfig(shrinkage=shrinkage)).fit(features, labels)
    assert scorer._factor is None
    to_classes, md, md0, rmd, margin = textbook(scorer, features[:40], labels[:40])
    scores = scorer.label_scores(features[:40], labels[:40])
    np.testing.assert_allclose(scores.rmd, rmd, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(scores.margin, margin, rtol=1e-7, atol=1e-8)
    parts = scorer.distances(features[:40], labels[:40])
    np.testing.assert_allclose(parts.md0, md0, rtol=1e-9)
    np.testing.assert_allclose(parts.to_classes, to_classes, rtol=1e-7, atol=1e-8)


def test_a_direction_the_data_never_spans_leaves_rmd_unchanged():
    """Fewer samples than dimensions: the ridge alone sets the variance off the data's span. With one ridge
    for both covariances a component there adds the same amount to MD and MD_0, so RMD (which is meant to
    cancel class-agnostic atypicality) does not move; separate ridges would turn it into difficulty."""
    rng = np.random.default_rng(4)
    span, d, k = 6, 40, 3
    features, labels = classes(4, n=30, d=span, k=k)
    features = np.hstack([features, np.zeros((30, d - span))])
    scorer = DifficultyScorer(n_classes=k, covariance=CovarianceConfig(shrinkage="ridge")).fit(features, labels)
    off_span = np.zeros(d)
    off_span[span:] = rng.normal(size=d - span)
    before = scorer.label_scores(features[:10], labels[:10])
    after = scorer.label_scores(features[:10] + 3.0 * off_span, labels[:10])
    np.testing.assert_allclose(after.rmd, before.rmd, rtol=0, atol=1e-9 * np.abs(before.rmd).max())
    md_before = scorer.score(features[:10], labels[:10])[0]
    md_after = scorer.score(features[:10] + 3.0 * off_span, labels[:10])[0]
    assert (md_after - md_before).min() > 1e3  # MD itself does see the component


def test_global_whitening_is_built_on_request_and_whitens_sigma_0():
    features, labels = classes(2, n=400, d=10, k=3)
    scorer = DifficultyScorer(n_classes=3, covariance=CovarianceConfig(shrinkage="ridge")).fit(features, labels)
    assert scorer._global_whitening is None
    a0 = scorer.global_whitening_
    np.testing.assert_allclose(a0.T @ a0, np.linalg.inv(scorer.global_covariance_), rtol=1e-8, atol=1e-12)
    assert scorer.singular_ == {"within": False, "global": False}


def test_whitening_skips_the_eigenvalue_test_when_the_floor_proves_it(monkeypatch):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 8))
    raw = x.T @ x / 50
    shrunk = raw + 1e-3 * np.trace(raw) / 8 * np.eye(8)
    expected = np.linalg.inv(np.linalg.cholesky(shrunk))

    def no_eigenvalues(*args, **kwargs):
        raise AssertionError("eigvalsh called although the floor proves the condition number")

    monkeypatch.setattr(np.linalg, "eigvalsh", no_eigenvalues)
    whitening, singular = whitening_matrix(shrunk, floor=eigenvalue_floor(raw, 1e-3))
    np.testing.assert_allclose(whitening, expected, rtol=1e-10)
    assert not singular
    # a floor that does not clear rcond * trace proves nothing: the eigenvalue test runs
    with pytest.raises(AssertionError, match="eigvalsh called"):
        whitening_matrix(shrunk, floor=eigenvalue_floor(raw, 1e-3), rcond=0.5)
    assert eigenvalue_floor(raw, 0.0) == 0.0


def test_an_empty_class_drops_out_of_the_between_class_term():
    features, labels = classes(5, n=300, d=10, k=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the empty class warns (DegenerateClassWarning)
        scorer = DifficultyScorer(n_classes=4, covariance=CovarianceConfig(shrinkage="ridge")).fit(features, labels)
    assert scorer._factor is not None
    to_classes, md, md0, rmd, margin = textbook(scorer, features[:30], labels[:30])
    scores = scorer.label_scores(features[:30], labels[:30])
    np.testing.assert_allclose(scores.rmd, rmd, rtol=0, atol=1e-9 * np.abs(to_classes).max())

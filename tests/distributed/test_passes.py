"""rmd_ray.distributed.passes.nearest_and_margin, the per-part margin of the scoring pass: chunked equals
whole, views are averaged before the margin, and it agrees with a naive loop over classes (no Ray started)."""

from __future__ import annotations

import numpy as np
import pytest

from rmd_ray.core import CovarianceConfig, DifficultyScorer
from rmd_ray.distributed.passes import nearest_and_margin


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    k, d = 7, 5
    means = rng.normal(scale=4, size=(k, d))
    labels = np.repeat(np.arange(k), 30)
    features = means[labels] + rng.normal(size=(len(labels), d))
    return DifficultyScorer(n_classes=k, covariance=CovarianceConfig()).fit(features, labels), rng


def _naive(scorer, features, labels):
    # MD to each class mean from the definition, (f - mu_k)^T Sigma^-1 (f - mu_k), one class at a time
    dist = np.stack([np.einsum("ij,ij->i", features - mu, np.linalg.solve(scorer.covariance_, (features - mu).T).T)
                     for mu in scorer.means_], axis=1)
    margin = [dist[i, y] - min(dist[i, k] for k in range(dist.shape[1]) if k != y) for i, y in enumerate(labels)]
    return dist.argmin(1), np.array(margin)


def test_chunked_equals_naive_one_view(fitted):
    scorer, rng = fitted
    features = rng.normal(scale=4, size=(23, 5))
    labels = rng.integers(0, 7, 23)
    nearest, margin = nearest_and_margin(scorer, features, labels, n_views=1, chunk=4)
    ref_nearest, ref_margin = _naive(scorer, features, labels)
    np.testing.assert_array_equal(nearest, ref_nearest)
    np.testing.assert_allclose(margin, ref_margin, rtol=1e-9, atol=1e-9)
    whole = nearest_and_margin(scorer, features, labels, n_views=1, chunk=10_000)
    np.testing.assert_array_equal(whole[0], nearest)
    np.testing.assert_allclose(whole[1], margin, rtol=1e-12)
    # the sign: margin > 0 exactly where the nearest class is not the given one
    np.testing.assert_array_equal(margin > 0, nearest != labels)


def test_views_are_averaged_before_the_margin(fitted):
    scorer, rng = fitted
    n, views = 9, 3
    features = rng.normal(scale=4, size=(n * views, 5))  # the views of a sample are consecutive rows
    labels = rng.integers(0, 7, n)
    nearest, margin = nearest_and_margin(scorer, features, labels, n_views=views, chunk=2)
    d = scorer.class_distances(features).reshape(n, views, -1).mean(1)
    np.testing.assert_array_equal(nearest, d.argmin(1))
    expected = [d[i, y] - np.delete(d[i], y).min() for i, y in enumerate(labels)]
    np.testing.assert_allclose(margin, expected, rtol=1e-12)

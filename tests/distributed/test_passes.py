"""rmd_ray.distributed.scoring.passes.view_mean_scores, the per-part distances of the scoring pass: chunked equals
whole, views are averaged before the margin, and it agrees with a naive loop over classes (no Ray started),
with the discriminant shortcut (d = 16 >= 2 K) and without it (d = 5 < 2 K)."""

from __future__ import annotations

import numpy as np
import pytest

from rmd_ray.core import CovarianceConfig, DifficultyScorer
from rmd_ray.distributed.scoring.passes import view_mean_scores


@pytest.fixture(scope="module", params=[5, 16], ids=["general", "shortcut"])
def fitted(request):
    rng = np.random.default_rng(0)
    k, d = 7, request.param
    means = rng.normal(scale=4, size=(k, d))
    labels = np.repeat(np.arange(k), 30)
    features = means[labels] + rng.normal(size=(len(labels), d))
    return DifficultyScorer(n_classes=k, covariance=CovarianceConfig()).fit(features, labels), rng


def _naive(scorer, features, labels):
    # MD to each class mean from the definition, (f - mu_k)^T Sigma^-1 (f - mu_k), one class at a time
    dist = np.stack([np.einsum("ij,ij->i", features - mu, np.linalg.solve(scorer.covariance_, (features - mu).T).T)
                     for mu in scorer.means_], axis=1)
    margin = [dist[i, y] - min(dist[i, k] for k in range(dist.shape[1]) if k != y) for i, y in enumerate(labels)]
    own = dist[np.arange(len(labels)), labels]
    centred = features - scorer.global_mean_
    md0 = np.einsum("ij,ij->i", centred, np.linalg.solve(scorer.global_covariance_, centred.T).T)
    return dist.argmin(1), np.array(margin), own, md0


def nearest_and_margin(scorer, features, labels, **kwargs):
    out = view_mean_scores(scorer, features, labels, **kwargs)
    return out["nearest"], out["margin"]


def test_chunked_equals_naive_one_view(fitted):
    scorer, rng = fitted
    assert (scorer._factor is not None) == (scorer.means_.shape[1] >= 14)
    features = rng.normal(scale=4, size=(23, scorer.means_.shape[1]))
    labels = rng.integers(0, 7, 23)
    out = view_mean_scores(scorer, features, labels, n_views=1, chunk=4)
    nearest, margin = out["nearest"], out["margin"]
    ref_nearest, ref_margin, ref_md, ref_md0 = _naive(scorer, features, labels)
    np.testing.assert_array_equal(nearest, ref_nearest)
    np.testing.assert_allclose(margin, ref_margin, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(out["md"][:, 0], ref_md, rtol=1e-9)
    np.testing.assert_allclose(out["md0"][:, 0], ref_md0, rtol=1e-9)
    whole = nearest_and_margin(scorer, features, labels, n_views=1, chunk=10_000)
    np.testing.assert_array_equal(whole[0], nearest)
    np.testing.assert_allclose(whole[1], margin, rtol=1e-12)
    # the sign: margin > 0 exactly where the nearest class is not the given one
    np.testing.assert_array_equal(margin > 0, nearest != labels)


def test_views_are_averaged_before_the_margin(fitted):
    scorer, rng = fitted
    n, views = 9, 3
    # the views of a sample are consecutive rows
    features = rng.normal(scale=4, size=(n * views, scorer.means_.shape[1]))
    labels = rng.integers(0, 7, n)
    nearest, margin = nearest_and_margin(scorer, features, labels, n_views=views, chunk=2)
    d = scorer.class_distances(features).reshape(n, views, -1).mean(1)
    np.testing.assert_array_equal(nearest, d.argmin(1))
    expected = [d[i, y] - np.delete(d[i], y).min() for i, y in enumerate(labels)]
    np.testing.assert_allclose(margin, expected, rtol=1e-12)

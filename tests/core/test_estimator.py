"""DifficultyScorer: fit / partial_fit / merge / save / load, and every validation branch."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from sklearn.covariance import OAS, LedoitWolf

from rmd_ray import __version__
from rmd_ray.core import (
    CovarianceConfig,
    DegenerateClassWarning,
    DifficultyScorer,
    NotFittedError,
    SingularCovarianceWarning,
    batch_stats,
)


def data(seed=0, n=1500, d=8, k=3):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    features = rng.normal(size=(k, d))[labels] * 3 + rng.normal(size=(n, d))
    return features, labels


@pytest.mark.parametrize("shrinkage", ["none", "ridge", "oas", "ledoit_wolf"])
def test_partial_fit_equals_fit(shrinkage):
    features, labels = data()
    config = CovarianceConfig(shrinkage=shrinkage)
    whole = DifficultyScorer(n_classes=3, covariance=config).fit(features, labels)
    streamed = DifficultyScorer(n_classes=3, covariance=config)
    for i in range(0, 1500, 256):
        streamed.partial_fit(features[i : i + 256], labels[i : i + 256])
    fourth = None
    if shrinkage == "ledoit_wolf":
        parts = [streamed.fourth_moments(features[i : i + 256], labels[i : i + 256]) for i in range(0, 1500, 256)]
        fourth = tuple(np.sum(parts, axis=0))
    streamed.finalize(fourth_moments=fourth)
    np.testing.assert_allclose(streamed.score(features, labels)[1], whole.score(features, labels)[1], rtol=1e-9)
    np.testing.assert_allclose(streamed.covariance_, whole.covariance_, rtol=1e-12, atol=1e-14)


def test_shrunk_within_covariance_matches_sklearn_on_residuals():
    features, labels = data(seed=1, n=300, d=20)
    residuals = features - batch_stats(features, labels, n_classes=3).means[labels]
    for name, reference in (("oas", OAS), ("ledoit_wolf", LedoitWolf)):
        scorer = DifficultyScorer(n_classes=3, covariance=CovarianceConfig(shrinkage=name)).fit(features, labels)
        expected = reference(assume_centered=True).fit(residuals)
        np.testing.assert_allclose(scorer.covariance_, expected.covariance_, rtol=0, atol=1e-10)
        assert scorer.shrinkage_["within"] == pytest.approx(expected.shrinkage_, abs=1e-12)
        total = reference().fit(features)
        np.testing.assert_allclose(scorer.global_covariance_, total.covariance_, rtol=0, atol=1e-10)


def test_streamed_ledoit_wolf_without_second_pass_explains():
    features, labels = data()
    scorer = DifficultyScorer(n_classes=3, covariance=CovarianceConfig(shrinkage="ledoit_wolf"))
    scorer.partial_fit(features, labels)
    with pytest.raises(ValueError, match="needs the fourth-moment sum"):
        scorer.finalize()


def test_save_load_round_trip_keeps_scores_and_provenance(tmp_path):
    features, labels = data()
    scorer = DifficultyScorer(n_classes=3, covariance=CovarianceConfig(shrinkage="ledoit_wolf")).fit(features, labels)
    path = scorer.save(tmp_path / "sub" / "scorer.npz", provenance={"encoder": "tiny_cnn"})
    assert [p.name for p in path.parent.iterdir()] == ["scorer.npz"]  # no temp file left behind
    loaded = DifficultyScorer.load(path)
    np.testing.assert_array_equal(loaded.score(features, labels)[1], scorer.score(features, labels)[1])
    meta = loaded.provenance_
    assert meta["feature_dim"] == 8 and meta["n_classes"] == 3 and meta["encoder"] == "tiny_cnn"
    assert meta["covariance"]["shrinkage"] == "ledoit_wolf" and meta["package_version"] == __version__
    with np.load(path, allow_pickle=False) as raw:
        assert json.loads(bytes(raw["meta"]))["n_samples"] == 1500
    # the stored statistics merge with more data exactly
    more_f, more_y = data(seed=9, n=400)
    both = DifficultyScorer(n_classes=3).fit(np.vstack([features, more_f]), np.concatenate([labels, more_y]))
    merged = DifficultyScorer(n_classes=3)
    merged.merge(DifficultyScorer.load(path).stats_).merge(batch_stats(more_f, more_y, n_classes=3)).finalize()
    np.testing.assert_allclose(merged.covariance_, both.covariance_, rtol=1e-12, atol=1e-14)


def test_save_rejects_wrong_suffix(tmp_path):
    features, labels = data()
    scorer = DifficultyScorer(n_classes=3).fit(features, labels)
    with pytest.raises(ValueError, match=r"must end in \.npz"):
        scorer.save(tmp_path / "scorer.pkl")


def test_degenerate_classes_warn_and_stay_finite():
    features, labels = data(k=3)
    labels = labels.copy()
    labels[labels == 2] = 0
    labels[0] = 2  # class 2: one sample; class 3: none
    with pytest.warns(DegenerateClassWarning) as record:
        scorer = DifficultyScorer(n_classes=4).fit(features, labels)
    messages = " ".join(str(w.message) for w in record)
    assert "have no samples (first: [3])" in messages and "single sample (first: [2])" in messages
    md, rmd = scorer.score(features[:1], labels[:1])
    assert md[0] == pytest.approx(0.0, abs=1e-12)  # the single sample is its own class mean
    np.testing.assert_allclose(scorer.means_[3], scorer.global_mean_)
    md3, _ = scorer.score(features[:5], np.full(5, 3))
    assert np.isfinite(md3).all()


def test_singular_features_warn_not_nan():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(500, 4))
    features = np.hstack([features, features[:, :1]])  # a duplicated column: singular covariances
    labels = rng.integers(0, 2, 500)
    with pytest.warns(SingularCovarianceWarning, match="shrinkage='ledoit_wolf'"):
        scorer = DifficultyScorer(n_classes=2).fit(features, labels)
    md, rmd = scorer.score(features, labels)
    assert np.isfinite(md).all() and np.isfinite(rmd).all()
    assert scorer.singular_ == {"within": True, "global": True}
    fixed = DifficultyScorer(n_classes=2, covariance=CovarianceConfig(shrinkage="ledoit_wolf")).fit(features, labels)
    assert fixed.singular_ == {"within": False, "global": False}


# ----------------------------------------------------------------------------------- validation
def test_feature_validation_branches():
    scorer = DifficultyScorer(n_classes=3)
    labels = np.zeros(4, dtype=np.int64)
    with pytest.raises(TypeError, match="numpy \\(or cupy\\) array of shape"):
        scorer.fit([[1.0]], labels)
    with pytest.raises(TypeError, match="cast to float32 or float64"):
        scorer.fit(np.zeros((4, 2), dtype=np.int32), labels)
    with pytest.raises(ValueError, match="must be 2-D"):
        scorer.fit(np.zeros(4), labels)
    with pytest.raises(ValueError, match="is empty"):
        scorer.fit(np.zeros((0, 2)), labels[:0])
    bad = np.zeros((4, 2))
    bad[2, 1] = np.nan
    bad[3, 0] = np.inf
    with pytest.raises(ValueError, match="row 2 holds NaN or inf \\(2 bad rows"):
        scorer.fit(bad, labels)


def test_label_validation_branches():
    scorer = DifficultyScorer(n_classes=3)
    features = np.zeros((4, 2))
    with pytest.raises(TypeError, match="integer array"):
        scorer.fit(features, [0, 1, 2, 0])
    with pytest.raises(TypeError, match="pass integer class indices"):
        scorer.fit(features, np.array([0.0, 1.0, 2.0, 0.0]))
    with pytest.raises(ValueError, match="labels must be 1-D"):
        scorer.fit(features, np.zeros((4, 1), dtype=int))
    with pytest.raises(ValueError, match="features have 4 rows but labels have 3"):
        scorer.fit(features, np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="label 3 outside 0..2"):
        scorer.fit(features, np.array([0, 1, 3, 0]))
    with pytest.raises(ValueError, match="label -1 outside 0..2"):
        scorer.fit(features, np.array([0, -1, 2, 0]))


def test_configuration_and_state_validation():
    with pytest.raises(ValueError, match="n_classes must be a positive integer"):
        DifficultyScorer(n_classes=0)
    with pytest.raises(TypeError, match="CovarianceConfig"):
        DifficultyScorer(n_classes=2, covariance="oas")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        DifficultyScorer(n_classes=2, device="tpu")
    from rmd_ray.core.array_api import cupy_available

    if not cupy_available():
        with pytest.raises(ValueError, match="device='cuda' needs CuPy and a visible GPU"):
            DifficultyScorer(n_classes=2, device="cuda")
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="10 samples for 20 feature dimensions.*shrinkage='ledoit_wolf'"):
        DifficultyScorer(n_classes=2).fit(rng.normal(size=(10, 20)), np.arange(10) % 2)
    # with shrinkage, d > N is allowed and finite
    shrunk = DifficultyScorer(n_classes=2, covariance=CovarianceConfig(shrinkage="ledoit_wolf"))
    md, _ = shrunk.fit(rng.normal(size=(10, 20)), np.arange(10) % 2).score(rng.normal(size=(3, 20)), np.zeros(3, int))
    assert np.isfinite(md).all()
    with pytest.raises(NotFittedError, match="not fitted"):
        DifficultyScorer(n_classes=2).score(np.zeros((1, 2)), np.zeros(1, int))
    with pytest.raises(NotFittedError, match="no data seen"):
        DifficultyScorer(n_classes=2).finalize()
    fitted = DifficultyScorer(n_classes=3).fit(*data())
    with pytest.raises(ValueError, match="features have 5 dimensions but the scorer was fitted on 8"):
        fitted.score(np.zeros((2, 5)), np.zeros(2, int))
    with pytest.raises(TypeError, match="merge takes a ClassStats"):
        fitted.merge(np.zeros(3))
    with pytest.raises(ValueError, match="statistics have 4 classes, this scorer 3"):
        fitted.merge(batch_stats(np.zeros((2, 8)), np.array([0, 3]), n_classes=4))


# ------------------------------------------------------------------- issue 10, item 6 (a) and (c)
def test_partial_fit_on_float32_chunks_scores_as_float64():
    """6,000 float32 rows (d = 32, K = 6, offset 1e4) in 7 shuffled chunks: RMD equals that from the
    same values cast to float64 (it was 2.6e-5 relative off), and the fit equals a naive float64 one."""
    rng = np.random.default_rng(21)
    labels = rng.integers(0, 6, 6000)
    features = (rng.normal(size=(6, 32))[labels] * 3 + rng.normal(size=(6000, 32)) + 1e4).astype(np.float32)
    chunks = np.array_split(rng.permutation(6000), 7)

    def streamed(x):
        scorer = DifficultyScorer(n_classes=6)
        for rows in chunks:
            scorer.partial_fit(x[rows], labels[rows])
        return scorer.finalize()

    exact = features.astype(np.float64)
    from32, from64 = streamed(features), streamed(exact)
    _, rmd32 = from32.score(features, labels)
    _, rmd64 = from64.score(exact, labels)
    assert np.abs(rmd32 - rmd64).max() <= 1e-12 * np.abs(rmd64).max()
    # naive float64 reference: per-class means, pooled scatter / N, then RMD through np.linalg.inv
    means = np.stack([exact[labels == k].mean(axis=0) for k in range(6)])
    within = sum((exact[labels == k] - means[k]).T @ (exact[labels == k] - means[k]) for k in range(6)) / 6000
    mu0 = exact.mean(axis=0)
    total = (exact - mu0).T @ (exact - mu0) / 6000
    np.testing.assert_allclose(from32.covariance_, within, rtol=1e-10, atol=1e-12 * np.abs(within).max())
    np.testing.assert_allclose(from32.global_covariance_, total, rtol=1e-10, atol=1e-12 * np.abs(total).max())
    r = exact - means[labels]
    g = exact - mu0
    md = np.einsum("ij,jk,ik->i", r, np.linalg.inv(within), r)
    md0 = np.einsum("ij,jk,ik->i", g, np.linalg.inv(total), g)
    np.testing.assert_allclose(rmd32, md - md0, rtol=0, atol=1e-7 * np.abs(md).max())


def test_float32_features_near_1e20_fit_and_score_like_rescaled_ones():
    """Squares of 1e20 overflow float32 (this raised LinAlgError); distances are scale-invariant."""
    rng = np.random.default_rng(22)
    labels = rng.integers(0, 3, 600)
    big = ((rng.normal(size=(3, 5))[labels] + rng.normal(size=(600, 5))) * 1e20).astype(np.float32)
    scorer = DifficultyScorer(n_classes=3).fit(big, labels)
    md, rmd = scorer.score(big, labels)
    rescaled = big.astype(np.float64) / 1e20
    md_ref, rmd_ref = DifficultyScorer(n_classes=3).fit(rescaled, labels).score(rescaled, labels)
    np.testing.assert_allclose(md, md_ref, rtol=1e-9)
    np.testing.assert_allclose(rmd, rmd_ref, rtol=0, atol=1e-9 * np.abs(md_ref).max())


def test_rank_condition_counts_the_fitted_class_means():
    """N = 12 > d = 10 passed the old n <= d check, but the pooled within-class scatter has rank
    N - K = 8 < 10: every sample got MD = 8.0 with no error."""
    rng = np.random.default_rng(23)
    features = rng.normal(size=(12, 10))
    labels = np.arange(12) % 4
    with pytest.raises(ValueError, match="rank at most N - classes = 8 < d.*shrinkage='ledoit_wolf'.*14 samples"):
        DifficultyScorer(n_classes=4).fit(features, labels)
    with pytest.raises(ValueError, match="class-agnostic covariance has rank at most N - 1 = 9 < d"):
        DifficultyScorer(n_classes=1).fit(features[:10], np.zeros(10, dtype=np.int64))
    # Streaming cannot refuse up front: finalize warns, naming the fix, and inverts only the 8
    # directions the scatter can have, even with an rcond that would let rounding noise through.
    for rcond in (1e-10, 1e-300):
        scorer = DifficultyScorer(n_classes=4, covariance=CovarianceConfig(rcond=rcond))
        scorer.partial_fit(features[:5], labels[:5]).partial_fit(features[5:], labels[5:])
        with pytest.warns(SingularCovarianceWarning, match="rank at most 8 by construction.*shrinkage='ledoit_wolf'"):
            scorer.finalize()
        assert scorer.singular_ == {"within": True, "global": False}
        assert np.linalg.matrix_rank(scorer.whitening_) == 8
    # the named fix works: no warning, full rank, distances that vary with the data
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fixed = DifficultyScorer(n_classes=4, covariance=CovarianceConfig(shrinkage="ledoit_wolf"))
        fixed.fit(features, labels)
    md, _ = fixed.score(features, labels)
    assert fixed.singular_ == {"within": False, "global": False} and np.ptp(md) > 0.1

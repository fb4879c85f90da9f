"""Shrinkage against scikit-learn to 1e-10; whitening; singular covariances warn and never give NaN."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.covariance import OAS, LedoitWolf

from rmd_ray.core.covariance import CovarianceConfig, SingularCovarianceWarning, apply_shrinkage, whitening_matrix


@pytest.fixture
def centred():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 20)) @ rng.normal(size=(20, 20))
    return x - x.mean(axis=0)


def test_oas_matches_sklearn(centred):
    cov = centred.T @ centred / len(centred)
    shrunk, coefficient = apply_shrinkage(cov, method="oas", n_samples=len(centred))
    reference = OAS(assume_centered=True).fit(centred)
    assert coefficient == pytest.approx(reference.shrinkage_, abs=1e-12)
    np.testing.assert_allclose(shrunk, reference.covariance_, rtol=0, atol=1e-10)


def test_ledoit_wolf_matches_sklearn(centred):
    cov = centred.T @ centred / len(centred)
    fourth = float(((centred**2).sum(axis=1) ** 2).sum())
    shrunk, coefficient = apply_shrinkage(cov, method="ledoit_wolf", n_samples=len(centred), fourth_moment=fourth)
    reference = LedoitWolf(assume_centered=True).fit(centred)
    assert coefficient == pytest.approx(reference.shrinkage_, abs=1e-12)
    np.testing.assert_allclose(shrunk, reference.covariance_, rtol=0, atol=1e-10)


def test_ledoit_wolf_without_fourth_moment_says_what_to_do(centred):
    cov = centred.T @ centred / len(centred)
    with pytest.raises(ValueError, match="fourth-moment.*shrinkage='oas'"):
        apply_shrinkage(cov, method="ledoit_wolf", n_samples=len(centred))


def test_ridge_is_scale_aware(centred):
    cov = centred.T @ centred / len(centred)
    for scale in (1e-6, 1.0, 1e6):
        shrunk, eps = apply_shrinkage(cov * scale, method="ridge", n_samples=60, ridge_eps=1e-2)
        added = np.diag(shrunk - cov * scale)
        np.testing.assert_allclose(added, 1e-2 * np.trace(cov * scale) / 20, rtol=1e-12)
        assert eps == 1e-2


def test_none_returns_input_unchanged(centred):
    cov = centred.T @ centred / len(centred)
    shrunk, coefficient = apply_shrinkage(cov, method="none", n_samples=60)
    assert shrunk is cov and coefficient == 0.0


def test_unknown_shrinkage_lists_valid_names():
    with pytest.raises(ValueError, match="unknown shrinkage 'lw'; valid names: ledoit_wolf, none, oas, ridge"):
        CovarianceConfig(shrinkage="lw")
    with pytest.raises(ValueError, match="ridge_eps must be finite and > 0"):
        CovarianceConfig(ridge_eps=-1.0)
    with pytest.raises(ValueError, match="rcond must be < 1"):
        CovarianceConfig(rcond=2.0)


def test_whitening_inverts_the_covariance(centred):
    cov = centred.T @ centred / len(centred)
    whitening, singular = whitening_matrix(cov)
    assert not singular
    np.testing.assert_allclose(whitening.T @ whitening, np.linalg.inv(cov), rtol=1e-8, atol=1e-10)
    assert np.allclose(np.triu(whitening, 1), 0)  # L^-1 is lower triangular: it came from Cholesky


def test_singular_covariance_warns_names_the_fix_and_stays_finite():
    rng = np.random.default_rng(1)
    basis = rng.normal(size=(3, 6))
    x = rng.normal(size=(100, 3)) @ basis  # rank 3 in 6 dimensions
    cov = np.cov(x.T, bias=True)
    with pytest.warns(SingularCovarianceWarning, match="shrinkage='ledoit_wolf'"):
        whitening, singular = whitening_matrix(cov, what="test covariance")
    assert singular and np.isfinite(whitening).all()
    # The pseudo-inverse: distances inside the span agree with the inverse restricted to it.
    pinv = np.linalg.pinv(cov, rcond=1e-10, hermitian=True)
    np.testing.assert_allclose(whitening.T @ whitening, pinv, rtol=1e-6, atol=1e-8)


def test_zero_covariance_is_finite():
    with pytest.warns(SingularCovarianceWarning):
        whitening, singular = whitening_matrix(np.zeros((4, 4)))
    assert singular and np.array_equal(whitening, np.zeros((4, 4)))


@pytest.mark.parametrize(("d", "c"), [(7, 0.7), (7, 1.3), (10, 0.1), (3, 0.5)])
def test_oas_coefficient_is_clamped_for_an_isotropic_covariance(d, c):
    """Rows +-c e_j: the scatter is exactly 2 c^2 I, and the OAS denominator a rounding residue that
    gave coefficients like -3e15 (scikit-learn's OAS has the same flaw)."""
    x = np.vstack([np.eye(d) * c, -np.eye(d) * c])
    cov = x.T @ x / len(x)
    assert np.array_equal(cov, np.diag(np.diag(cov))) and np.ptp(np.diag(cov)) == 0  # exactly isotropic
    shrunk, coefficient = apply_shrinkage(cov, method="oas", n_samples=len(x))
    assert 0.0 <= coefficient <= 1.0
    assert np.isfinite(shrunk).all()
    # an isotropic covariance is its own shrinkage target: any coefficient in [0, 1] leaves it unchanged
    np.testing.assert_allclose(shrunk, cov, rtol=1e-14, atol=0)


@pytest.mark.parametrize("scale", [0.1, 1 / 3, 1.1, 2.3, 1e-3, 1e4])
def test_oas_coefficient_stays_in_unit_interval_for_scaled_identities(scale):
    for d in (3, 5, 7, 10, 20, 64):
        shrunk, coefficient = apply_shrinkage(np.eye(d) * scale, method="oas", n_samples=100)
        assert 0.0 <= coefficient <= 1.0, (d, coefficient)
        np.testing.assert_allclose(shrunk, np.eye(d) * scale, rtol=1e-14)


def test_whitening_with_a_structural_rank_bound_warns_and_keeps_that_many_directions(centred):
    cov = centred.T @ centred / len(centred)  # full rank numerically
    with pytest.warns(SingularCovarianceWarning, match="rank at most 15 by construction.*shrinkage='ledoit_wolf'"):
        whitening, singular = whitening_matrix(cov, max_rank=15)
    assert singular and np.linalg.matrix_rank(whitening) == 15
    values, vectors = np.linalg.eigh(cov)
    top = vectors[:, 5:]
    np.testing.assert_allclose(whitening.T @ whitening, top @ np.diag(1 / values[5:]) @ top.T, rtol=1e-8, atol=1e-12)
    # a bound of d (full rank possible) changes nothing: the Cholesky path, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        full, singular = whitening_matrix(cov, max_rank=20)
    assert not singular and np.array_equal(full, whitening_matrix(cov)[0])

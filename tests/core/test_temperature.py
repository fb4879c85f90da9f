"""Temperature scaling: the fitted T against a brute-force grid, recovery of a known scale, validation."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmd_ray.core.metrics import apply_temperature, evaluate_predictions, fit_temperature
from rmd_ray.core.metrics.temperature import temperature_nll


def _sample(n, k, scale, seed):
    """Labels drawn from softmax(z) of logits z, returned with the logits multiplied by ``scale``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * 2.0
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = (rng.random((n, 1)) > np.cumsum(p, 1)).sum(1)
    return z * scale, np.minimum(y, k - 1)


def test_fit_matches_a_brute_force_grid():
    z, y = _sample(3000, 10, 2.5, 0)
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 20001))
    brute = grid[np.argmin([temperature_nll(z, y, t) for t in grid])]
    assert fit_temperature(z, y) == pytest.approx(brute, rel=1e-3)


@settings(max_examples=15, deadline=None)
@given(scale=st.floats(0.3, 5.0), seed=st.integers(0, 1000))
def test_recovers_the_scale_of_overconfident_logits(scale, seed):
    # labels drawn from softmax(z): logits scaled by `scale` are calibrated again at T = scale
    z, y = _sample(20000, 5, scale, seed)
    assert fit_temperature(z, y) == pytest.approx(scale, rel=0.08)


def test_scaling_keeps_accuracy_and_lowers_nll():
    z, y = _sample(4000, 10, 4.0, 1)
    t = fit_temperature(z, y)
    before, after = evaluate_predictions(z, y), evaluate_predictions(apply_temperature(z, t), y)
    assert after["acc"] == before["acc"]
    assert after["nll"] < before["nll"]
    assert after["ece_mass"] < before["ece_mass"]


def test_validation_names_the_fix():
    z, y = _sample(50, 3, 1.0, 2)
    with pytest.raises(ValueError, match="0 < low < high"):
        fit_temperature(z, y, bounds=(2.0, 1.0))
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        apply_temperature(z, 0.0)
    with pytest.raises(ValueError, match="label"):
        fit_temperature(z, np.full(50, 7))
    with pytest.raises(ValueError):
        fit_temperature(np.full((50, 3), np.nan), y)

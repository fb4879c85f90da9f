"""Post-hoc temperature scaling (Guo et al., ICML 2017): the baseline a practitioner reaches for instead
of a calibration-aware training loss.

One scalar T > 0 divides every logit; it is fitted on held-out data by minimising the NLL,

    T* = argmin_T  -(1/N) sum_i log softmax(z_i / T)[y_i],

which is convex in 1/T. Dividing by T never changes the argmax, so accuracy is unchanged.

Not netcal's or torch-uncertainty's scaler: both fit T with a torch optimiser on tensors (netcal needs
its own dependency chain); the one-dimensional problem is solved here exactly (to ``xatol``) with
SciPy's bounded Brent search on log T, in float64 NumPy, so the core layer stays free of torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from rmd_ray.core.metrics.checks import check_logits, check_metric_labels

__all__ = ["apply_temperature", "fit_temperature", "temperature_nll"]


def temperature_nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean NLL of ``softmax(logits / temperature)`` at the labels; float64 logits (N, K), int labels (N,)."""
    log_p = log_softmax(logits / temperature, axis=1)
    return float(-log_p[np.arange(logits.shape[0]), labels].mean())


def fit_temperature(logits: Any, labels: Any, *, bounds: tuple[float, float] = (0.05, 20.0),
                    xatol: float = 1e-6) -> float:
    """The temperature T in ``bounds`` that minimises the NLL of ``softmax(logits / T)`` at ``labels``.

    Parameters
    ----------
    logits : array-like, shape (N, K)
        Held-out (validation) logits; never the test set's.
    labels : array-like of int, shape (N,)
    bounds : (low, high), 0 < low < high
        Search interval for T. A T at a bound means the NLL still falls beyond it (e.g. logits that
        are all correct and can only get sharper); widen the bounds if that matters.
    xatol : float
        Absolute tolerance on log T.

    Returns
    -------
    float
        T > 1 softens an overconfident model, T < 1 sharpens an underconfident one.

    Raises
    ------
    ValueError
        Logits not a finite (N, K) array, labels out of range, or bounds not 0 < low < high.
    """
    z = check_logits(logits, "logits")
    y = check_metric_labels(labels, z.shape[0], z.shape[1])
    low, high = (float(b) for b in bounds)
    if not 0 < low < high:
        raise ValueError(f"bounds must satisfy 0 < low < high, got {bounds!r}; e.g. bounds=(0.05, 20.0)")
    result = minimize_scalar(
        lambda log_t: temperature_nll(z, y, float(np.exp(log_t))),
        bounds=(np.log(low), np.log(high)), method="bounded", options={"xatol": xatol},
    )
    return float(np.exp(result.x))


def apply_temperature(logits: Any, temperature: float) -> np.ndarray:
    """``logits / temperature`` as float64 (N, K); the argmax is unchanged for any T > 0."""
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}; fit it with fit_temperature")
    return check_logits(logits, "logits") / float(temperature)

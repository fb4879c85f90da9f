"""Noise corruptions: gaussian, shot, impulse and speckle noise."""

from __future__ import annotations

import numpy as np

from rmd_ray.data.corruptions.registry import register, to_unit

# ---------------------------------------------------------------------------------------------
# noise
# ---------------------------------------------------------------------------------------------


@register("gaussian_noise", imagenet=(0.08, 0.12, 0.18, 0.26, 0.38), cifar=(0.04, 0.06, 0.08, 0.09, 0.10),
           random=True)
def _gaussian_noise(image: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Add N(0, scale^2) noise to every value on the [0, 1] scale."""
    x = to_unit(image)
    return x + rng.normal(scale=scale, size=x.shape)


@register("shot_noise", imagenet=(60, 25, 12, 5, 3), cifar=(500, 250, 100, 75, 50), random=True)
def _shot_noise(image: np.ndarray, photons: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson noise: ``Poisson(x * photons) / photons`` (fewer photons = stronger)."""
    return rng.poisson(to_unit(image) * photons) / photons


@register("impulse_noise", imagenet=(0.03, 0.06, 0.09, 0.17, 0.27), cifar=(0.01, 0.02, 0.03, 0.05, 0.07),
           random=True)
def _impulse_noise(image: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Salt-and-pepper noise as scikit-image's ``random_noise(mode="s&p", amount)``: each value
    (per channel) is replaced with probability ``amount``, by 1 or 0 with equal odds."""
    x = to_unit(image)
    flipped = rng.random(x.shape) < amount
    salted = rng.random(x.shape) < 0.5
    x[flipped & salted] = 1.0
    x[flipped & ~salted] = 0.0
    return x


@register("speckle_noise", imagenet=(0.15, 0.2, 0.35, 0.45, 0.6), cifar=(0.06, 0.1, 0.12, 0.16, 0.2),
           random=True)
def _speckle_noise(image: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Multiplicative noise: ``x + x * N(0, scale^2)`` on the [0, 1] scale."""
    x = to_unit(image)
    return x + x * rng.normal(scale=scale, size=x.shape)

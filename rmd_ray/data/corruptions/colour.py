"""Colour corruptions: contrast, brightness and saturate (with RGB <-> HSV conversion)."""

from __future__ import annotations

import numpy as np

from rmd_ray.data.corruptions.registry import register, to_unit

# ---------------------------------------------------------------------------------------------
# colour
# ---------------------------------------------------------------------------------------------


@register("contrast", imagenet=(0.4, 0.3, 0.2, 0.1, 0.05), cifar=(0.75, 0.5, 0.4, 0.3, 0.15), random=False)
def _contrast(image: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """Shrink each channel toward its mean: ``(x - mean_c) * factor + mean_c``."""
    x = to_unit(image)
    mean = x.mean(axis=(0, 1), keepdims=True)
    return (x - mean) * factor + mean


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    # scikit-image's rgb2hsv conventions: S = 0 and H = 0 where max == min (greys and black).
    v = rgb.max(axis=-1)
    delta = v - rgb.min(axis=-1)
    grey = delta == 0
    safe = np.where(grey, 1.0, delta)
    s = np.where(grey, 0.0, delta / np.where(v == 0, 1.0, v))
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    h = np.where(r == v, (g - b) / safe, 0.0)
    h = np.where(g == v, 2.0 + (b - r) / safe, h)  # later cases win ties, as in scikit-image
    h = np.where(b == v, 4.0 + (r - g) / safe, h)
    h = np.where(grey, 0.0, (h / 6.0) % 1.0)
    return np.stack([h, s, v], axis=-1)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    hi = np.floor(h * 6)
    f = h * 6 - hi
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    sector = hi.astype(np.int64) % 6
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    return np.stack([np.choose(sector, [c[k] for c in choices]) for k in range(3)], axis=-1)


@register("brightness", imagenet=(0.1, 0.2, 0.3, 0.4, 0.5), cifar=(0.05, 0.1, 0.15, 0.2, 0.3), random=False)
def _brightness(image: np.ndarray, shift: float, rng: np.random.Generator) -> np.ndarray:
    """Add ``shift`` to the HSV value channel (clipped to 1), keeping hue and saturation.

    Equivalently in RGB: ``x * min(V + shift, 1) / V`` with ``V = max(R, G, B)``; black becomes grey.
    """
    hsv = rgb_to_hsv(to_unit(image))
    hsv[..., 2] = np.clip(hsv[..., 2] + shift, 0, 1)
    return hsv_to_rgb(hsv)


@register("saturate", imagenet=((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)),
           cifar=((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)), random=False)
def _saturate(image: np.ndarray, param: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """HSV saturation ``S -> clip(S * a + b, 0, 1)`` for ``(a, b)``: severities 1-2 desaturate,
    3-5 oversaturate (grey pixels, hue 0, turn red when ``b > 0``, as in the reference)."""
    a, b = param
    hsv = rgb_to_hsv(to_unit(image))
    hsv[..., 1] = np.clip(hsv[..., 1] * a + b, 0, 1)
    return hsv_to_rgb(hsv)

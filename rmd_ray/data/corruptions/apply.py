"""The public entry point :func:`corrupt`: checks the image and generator, looks up the corruption and
its severity parameters, and applies it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rmd_ray.data.corruptions.registry import CORRUPTIONS, PRESETS, SEVERITIES

# ---------------------------------------------------------------------------------------------
# public entry
# ---------------------------------------------------------------------------------------------


def _check_image(image: Any) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array (H, W, 3) of uint8, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(
            f"image has dtype {image.dtype}; pass uint8 RGB in 0..255 "
            "(e.g. np.asarray(pil_image.convert('RGB')))"
        )
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must have shape (H, W, 3), got {image.shape}; convert greyscale/RGBA to RGB")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image is empty (shape {image.shape})")
    return np.ascontiguousarray(image)


def _check_rng(rng: Any) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool) and rng >= 0:
        return np.random.default_rng(int(rng))
    raise TypeError(
        f"rng must be a numpy Generator or a non-negative int seed, got {rng!r}; "
        "pass e.g. rng=np.random.default_rng(0) so the corruption is reproducible"
    )


def corrupt(
    image: np.ndarray, name: str, *, severity: int, rng: np.random.Generator | int, preset: str = "imagenet"
) -> np.ndarray:
    """Apply one ImageNet-C corruption at a severity from 1 (mild) to 5 (strong).

    Parameters
    ----------
    image : ndarray of shape (H, W, 3), uint8
        RGB image; not modified.
    name : str
        One of ``CORRUPTIONS.names()``, the 19 of ImageNet-C: the 15 standard ones (gaussian_noise,
        shot_noise, impulse_noise, defocus_blur, glass_blur, motion_blur, zoom_blur, snow, frost, fog,
        brightness, contrast, elastic_transform, pixelate, jpeg_compression) and the 4 extra ones
        (speckle_noise, gaussian_blur, spatter, saturate).
    severity : int in 1..5
    rng : numpy.random.Generator or int
        Source of randomness (noise, elastic); an int is a seed. The same seed gives the same output.
    preset : {"imagenet", "cifar"}, default "imagenet"
        Which parameter table: ImageNet-C (224 px images) or CIFAR-10-C (32 px images).

    Returns
    -------
    ndarray of shape (H, W, 3), uint8
        ``rint(clip(out, 0, 1) * 255)`` of the corrupted image.

    Raises
    ------
    TypeError
        ``image`` not a uint8 array, ``name`` not a string, or ``rng`` neither Generator nor int seed.
    ValueError
        Wrong image shape, unknown name or preset (the message lists the valid ones), severity not in 1..5.
    """
    image = _check_image(image)
    corruption = CORRUPTIONS.get(name)
    PRESETS.get(preset)
    is_int = isinstance(severity, (int, np.integer)) and not isinstance(severity, bool)
    if not is_int or severity not in SEVERITIES:
        raise ValueError(f"severity must be an integer in 1..5, got {severity!r}")
    generator = _check_rng(rng)
    out = corruption.fn(image, corruption.params[preset][int(severity) - 1], generator)
    if out.dtype == np.uint8:
        return out
    return np.rint(np.clip(out, 0.0, 1.0) * 255.0).astype(np.uint8)

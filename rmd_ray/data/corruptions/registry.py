"""Corruption presets and severities, the :class:`Corruption` record and the :data:`CORRUPTIONS` registry."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rmd_ray.core.registry import Registry

#: Preset name -> the image side (pixels) its severity parameters were written for.
PRESETS: Registry[int] = Registry("corruption preset")
PRESETS.add("imagenet", 224)
PRESETS.add("cifar", 32)

SEVERITIES = (1, 2, 3, 4, 5)
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")

Fn = Callable[[np.ndarray, Any, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Corruption:
    """One corruption type.

    Attributes
    ----------
    fn : callable ``(image_uint8, parameter, rng) -> array``
        Returns floats on the [0, 1] scale (clipped and rounded by :func:`corrupt`) or a uint8 image.
    params : dict
        Preset name -> the five severity parameters (severity 1 first).
    random : bool
        Whether the output depends on ``rng``.
    """

    fn: Fn
    params: dict[str, tuple[Any, ...]]
    random: bool


CORRUPTIONS: Registry[Corruption] = Registry("corruption")


def register(name: str, *, imagenet: Sequence[Any], cifar: Sequence[Any], random: bool):
    def decorator(fn: Fn) -> Fn:
        if not len(imagenet) == len(cifar) == len(SEVERITIES):
            raise ValueError(f"corruption {name!r} needs one parameter per severity")
        CORRUPTIONS.add(name, Corruption(fn, {"imagenet": tuple(imagenet), "cifar": tuple(cifar)}, random))
        return fn

    return decorator


def to_unit(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float64) / 255.0

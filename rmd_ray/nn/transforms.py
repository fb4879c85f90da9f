"""Image geometry presets for training and evaluation, and the one uint8 -> float normalisation.

Pipelines cut preprocessing in two (docs/design.md section 7.7): the *geometry* (decode, resize,
crop, and for ImageNet the random resized crop) runs where the image is decoded and yields uint8
``(H, W, 3)`` pixels, 4x fewer bytes in the object store than float; :func:`normalize_uint8` runs
where the model runs, on its device. Every path (scoring actors, training workers, prediction
actors) normalises with this one function, so a model sees the same numbers in training and in
evaluation.

Presets
-------
``cifar``
    Train and eval: resize to ``S x S`` (PIL bilinear) when ``image_size`` is set, else the native
    size. Training adds pad-4 random crop + horizontal flip on the worker
    (:func:`rmd_ray.nn.engine.random_crop_flip`, seeded per epoch and rank).
``imagenet``
    Train: ``RandomResizedCrop(S)`` (scale 0.08-1, ratio 3/4-4/3, bilinear) + horizontal flip, in
    the decode task. Eval: resize the short side to ``round(S / 0.875)`` (256 for 224), center crop
    ``S``. The channel statistics are ImageNet's published ones unless the data's are asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # imported where used: a decode task at the cifar geometry never loads torch
    import torch

__all__ = [
    "CIFAR_MAX_SIDE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PRESETS",
    "channel_moments",
    "eval_geometry",
    "eval_resize",
    "moments_to_mean_std",
    "normalize_uint8",
    "resolve_preset",
    "train_geometry",
]

PRESETS = ("cifar", "imagenet")
#: ``preset="auto"`` picks ``cifar`` for inputs up to this many pixels a side, ``imagenet`` above.
CIFAR_MAX_SIDE = 64
#: torchvision's ImageNet statistics, in [0, 1] units.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_EVAL_CROP_FRACTION = 0.875  # 224 / 256


def resolve_preset(preset: str, *, image_size: int | None, native_side: int) -> tuple[str, int | None]:
    """Resolve ``"auto"`` and the input side.

    Parameters
    ----------
    preset : {"auto", "cifar", "imagenet"}
    image_size : int or None
        The requested model input side; None: native for ``cifar``, 224 for ``imagenet``.
    native_side : int
        The larger side of the first training image (what ``"auto"`` decides on without a size).

    Returns
    -------
    preset : {"cifar", "imagenet"}
    image_size : int or None
        None only for ``cifar`` at the native size.
    """
    if preset not in ("auto", *PRESETS):
        raise ValueError(f"preset must be 'auto', 'cifar' or 'imagenet', got {preset!r}")
    if preset == "auto":
        preset = "cifar" if (image_size or native_side) <= CIFAR_MAX_SIDE else "imagenet"
    if preset == "imagenet" and image_size is None:
        image_size = 224
    return preset, image_size


def eval_resize(preset: str, image_size: int) -> int | None:
    """The shorter side :func:`eval_geometry` resizes to before its centre crop; None: no crop (``cifar``)."""
    if preset == "cifar":
        return None
    if preset == "imagenet":
        return int(round(image_size / _EVAL_CROP_FRACTION))
    raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")


def eval_geometry(preset: str, image_size: int | None) -> Callable[[Any], Any]:
    """PIL RGB -> PIL RGB, deterministic (validation, test, prediction, channel statistics)."""
    if preset == "cifar":
        # PIL directly, not torchvision's Resize: on a PIL image that is the same call
        # (Image.resize, bilinear), and importing torchvision (with torch and torch._dynamo) would be
        # paid in every fresh decode process, again at each epoch's first batch (docs/benchmarks.md,
        # Notes moved from code)
        return _identity if image_size is None else _PilResize(image_size)
    from torchvision.transforms import v2 as T

    if preset == "imagenet":
        resize = eval_resize(preset, image_size)
        return T.Compose(
            [T.Resize(resize, interpolation=T.InterpolationMode.BILINEAR), T.CenterCrop(image_size)]
        )
    raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")


def _identity(image: Any) -> Any:
    return image


class _PilResize:
    """``image.resize((S, S), BILINEAR)``: what torchvision's ``Resize((S, S))`` does to a PIL image."""

    def __init__(self, side: int) -> None:
        self.side = side

    def __call__(self, image: Any) -> Any:
        from PIL import Image

        return image.resize((self.side, self.side), Image.Resampling.BILINEAR)


def train_geometry(preset: str, image_size: int | None) -> Callable[[Any], Any]:
    """PIL RGB -> PIL RGB for training rows (random for ``imagenet``; the ``cifar`` crop runs on the worker)."""
    if preset == "imagenet":
        from torchvision.transforms import v2 as T

        return T.Compose(
            [
                T.RandomResizedCrop(image_size, interpolation=T.InterpolationMode.BILINEAR),
                T.RandomHorizontalFlip(),
            ]
        )
    return eval_geometry(preset, image_size)


def normalize_uint8(batch: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, H, W, C)`` -> float32 ``(B, C, H, W)``: ``(x / 255 - mean) / std`` per channel.

    ``mean`` and ``std`` are ``(C,)`` tensors in [0, 1] units (on any device: moved to the batch's).
    ``x / 255`` first, as torchvision's ``ToTensor`` then ``Normalize`` compute it, so a pipeline that
    normalises here and one that runs the full torchvision preprocessing give the same floats.
    """
    import torch

    x = batch.permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
    mean = mean.to(device=x.device, dtype=torch.float32).view(1, -1, 1, 1)
    std = std.to(device=x.device, dtype=torch.float32).view(1, -1, 1, 1)
    return x.sub_(mean).div_(std)


def channel_moments(images: np.ndarray) -> np.ndarray:
    """Per-channel sums of ``x`` and ``x^2`` (x = pixel / 255) and the pixel count, in float64.

    Parameters
    ----------
    images : ndarray (B, H, W, C) uint8

    Returns
    -------
    ndarray (2 * C + 1,) float64
        ``[sum_c x, sum_c x^2, B * H * W]``: mergeable by addition across shards.
    """
    x = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    return np.concatenate([x.sum(axis=0), np.square(x).sum(axis=0), [float(x.shape[0])]])


def moments_to_mean_std(moments: np.ndarray) -> tuple[list[float], list[float]]:
    """Mean and (population) std per channel from summed :func:`channel_moments`.

    A constant channel (std below 1e-6) gets std 1: it carries no information and dividing by 1
    keeps it at 0 instead of making NaN.
    """
    c = (len(moments) - 1) // 2
    count = moments[-1]
    if count <= 0:
        raise ValueError("channel statistics need at least one pixel")
    mean = moments[:c] / count
    std = np.sqrt(np.maximum(moments[c : 2 * c] / count - mean**2, 0.0))
    std = np.where(std > 1e-6, std, 1.0)
    return mean.tolist(), std.tolist()

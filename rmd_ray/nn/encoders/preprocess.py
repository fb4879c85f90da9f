"""What an encoder's weights expect of an image (:class:`Preprocessing`, known from the registry without
building the model), and splitting a preprocess for pipelines: geometry on the decode side,
normalisation on the encoder side (:func:`split_preprocess`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rmd_ray.nn.resize import ResizeCrop

# --------------------------------------------------------------------------------------------
# the preprocessing an encoder's weights expect, as data


@dataclass(frozen=True)
class Preprocessing:
    """An encoder's input rule: resize, centre crop, scale to [0, 1], ``(x - mean) / std`` per channel.

    Every registry entry says it without building its model
    (:func:`rmd_ray.nn.encoders.encoder_preprocessing`), so decode processes learn it for free, and every
    builder makes its ``Encoder.preprocess`` from it, so the two never disagree.

    Attributes
    ----------
    image_size : int
        ``S``: the square input side.
    resize : int or None
        Shorter side before the centre crop; ``None``: the whole image is resized to ``S x S``.
    interpolation : {"bilinear", "bicubic"}
    mean, std : tuple of 3 floats
        In [0, 1] units.
    note : str
        Where the rule comes from, for :meth:`describe`.
    engine : {"auto", "torch", "pil"}
        The resampler of :class:`rmd_ray.nn.resize.ResizeCrop`.
    """

    image_size: int
    resize: int | None
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    note: str = ""
    engine: str = "auto"

    @property
    def min_side(self) -> int:
        """The shorter side the resize needs (what reduced-size JPEG decoding may go down to)."""
        return self.geometry().min_side

    def geometry(self) -> ResizeCrop:
        """RGB ``PIL.Image`` -> uint8 ``(S, S, 3)``."""
        return ResizeCrop(self.image_size, self.resize, self.interpolation, self.engine)

    def transform(self) -> Callable[..., torch.Tensor]:
        """RGB ``PIL.Image`` -> float32 ``(3, S, S)``: ``Compose([geometry, ToTensor, Normalize])``."""
        from torchvision import transforms as T

        return T.Compose([self.geometry(), T.ToTensor(), T.Normalize(self.mean, self.std)])

    def describe(self) -> str:
        """One line for ``Encoder.normalisation``."""
        mean = tuple(round(float(m), 4) for m in self.mean)
        std = tuple(round(float(s), 4) for s in self.std)
        s = self.image_size
        if self.resize is None:
            text = f"resize whole image to {s}x{s} ({self.interpolation}, no crop)"
        else:
            text = f"resize shorter side to {self.resize} ({self.interpolation}), center crop {s}"
        text += f", x in [0, 1], (x - mean) / std with mean={mean}, std={std}"
        return f"{text}; {self.note}" if self.note else text


# --------------------------------------------------------------------------------------------
# preprocessing split for pipelines: geometry on the decode side, normalisation on the encoder side


@dataclass(frozen=True)
class SplitPreprocess:
    """An encoder's preprocessing cut after the geometry: PIL -> uint8 (S, S, 3), then uint8 -> float.

    Pipelines run ``geometry`` where images are decoded and ``normalize`` where the encoder runs, so
    what crosses the object store is uint8 pixels, 4x smaller than the float tensor the full
    preprocessing makes (and the same numbers: ``ToTensor`` is x / 255, then ``Normalize``).
    """

    geometry: Callable[..., Any]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_uint8(self, image: Any) -> np.ndarray:
        """RGB ``PIL.Image`` -> uint8 array ``(S, S, 3)``."""
        return np.asarray(self.geometry(image), dtype=np.uint8)

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, S, S, 3)`` -> float32 ``(B, 3, S, S)``: ``(x / 255 - mean) / std`` per channel."""
        from rmd_ray.nn.transforms import normalize_uint8

        return normalize_uint8(batch, torch.tensor(self.mean), torch.tensor(self.std))


def split_preprocess(preprocess: Callable[..., torch.Tensor]) -> SplitPreprocess | None:
    """Split a ``Compose([..geometry.., ToTensor(), Normalize(mean, std)])``; ``None`` for any other shape.

    The geometry steps must map a PIL image to a PIL image (resize, crop, colour conversion); a
    preprocessing of another shape (torchvision's weight transforms, custom callables) is used whole.
    """
    from torchvision import transforms as T

    steps = getattr(preprocess, "transforms", None)
    if not isinstance(preprocess, T.Compose) or not steps or len(steps) < 2:
        return None
    to_tensor, normalize = steps[-2], steps[-1]
    if not isinstance(to_tensor, T.ToTensor) or not isinstance(normalize, T.Normalize) or normalize.inplace:
        return None
    mean = tuple(float(m) for m in normalize.mean)
    std = tuple(float(s) for s in normalize.std)
    if len(mean) == 1:
        mean, std = mean * 3, std * 3
    return SplitPreprocess(T.Compose(list(steps[:-2])), mean, std)

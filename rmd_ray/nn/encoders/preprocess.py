"""Splitting an encoder's preprocess for pipelines: geometry on the decode side, normalisation on
the encoder side (:func:`split_preprocess`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

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

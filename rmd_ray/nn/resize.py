"""The eval geometry of encoders and classifiers as one callable: RGB image -> uint8 ``(S, S, 3)``.

:class:`ResizeCrop` is torchvision's ``Resize(R)`` + ``CenterCrop(S)`` (or ``Resize((S, S))``), computed
either by torch's uint8 resampling kernels (``engine="torch"``: antialiased, vectorised, on the HWC pixels
without a float copy; torchvision's tensor ``Resize`` runs the same kernels) or by PIL
(``engine="pil"``: the numbers torchvision's ``Resize`` gives on a PIL image, which is what training's
eval geometry computes). Downscaling, the two agree to a grey level or two on a few pixels; upscaling by a
non-integer factor they differ more. ``engine="auto"`` (the default) takes torch where the image
shrinks on both sides, the expensive case of photo-sized inputs, and PIL otherwise, so a small image
(CIFAR's 32 x 32) gets exactly the pixels it always had.

:attr:`ResizeCrop.min_side` is what a decoder may reduce a large JPEG to without losing anything the
resize keeps (:func:`rmd_ray.data.decode.decode_image`'s ``min_side``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ENGINES", "INTERPOLATIONS", "ResizeCrop", "resized_size"]

INTERPOLATIONS = ("bilinear", "bicubic")
ENGINES = ("auto", "torch", "pil")


def resized_size(width: int, height: int, short: int) -> tuple[int, int]:
    """(width, height) with the shorter side ``short`` and the longer one truncated, as torchvision's ``Resize``."""
    if width <= height:
        return short, int(short * height / width)
    return int(short * width / height), short


@dataclass(frozen=True)
class ResizeCrop:
    """RGB ``PIL.Image`` -> uint8 ndarray ``(size, size, 3)``.

    Parameters
    ----------
    size : int
        ``S``, the output side.
    resize : int, optional
        The shorter side is resized to ``resize`` (the longer one keeps the aspect ratio, truncated),
        then the centre ``S x S`` is cropped (offsets rounded as torchvision's ``CenterCrop``). ``None``:
        the whole image is resized to ``S x S`` (no crop).
    interpolation : {"bilinear", "bicubic"}
    engine : {"auto", "torch", "pil"}
        Which resampler computes it (module docstring); ``"auto"``: torch when both sides shrink.
    """

    size: int
    resize: int | None = None
    interpolation: str = "bilinear"
    engine: str = "auto"

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"size must be an int >= 1, got {self.size!r}")
        if self.resize is not None and (
            isinstance(self.resize, bool) or not isinstance(self.resize, int) or self.resize < self.size
        ):
            raise ValueError(f"resize must be None or an int >= size ({self.size}), got {self.resize!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")

    @property
    def min_side(self) -> int:
        """The shorter side the resize needs: a decoder may reduce an image as long as it keeps this."""
        return self.resize or self.size

    def __call__(self, image: Any) -> np.ndarray:
        """RGB ``PIL.Image`` -> writable, contiguous uint8 ``(size, size, 3)``."""
        width, height = image.size
        if self.resize is None:
            target = (self.size, self.size)
        else:
            target = resized_size(width, height, self.resize)
        engine = self.engine
        if engine == "auto":
            engine = "torch" if target[0] < width and target[1] < height else "pil"
        if engine == "pil":
            out = np.asarray(self._pil(image, target))
        else:
            out = self._torch(image, target)
        if self.resize is not None:
            top = int(round((target[1] - self.size) / 2.0))
            left = int(round((target[0] - self.size) / 2.0))
            out = out[top : top + self.size, left : left + self.size]
        out = np.ascontiguousarray(out)
        return out if out.flags.writeable else out.copy()  # PIL's arrays are read-only; callers may own it

    def _pil(self, image: Any, target: tuple[int, int]) -> Any:
        from PIL import Image

        if image.size == target:  # torchvision returns the image unchanged at its own size
            return image
        resample = Image.Resampling.BICUBIC if self.interpolation == "bicubic" else Image.Resampling.BILINEAR
        return image.resize(target, resample)

    def _torch(self, image: Any, target: tuple[int, int]) -> np.ndarray:
        import torch
        from torchvision.transforms.v2 import functional as F

        pixels = np.asarray(image)
        if (pixels.shape[1], pixels.shape[0]) == target:
            return pixels
        with warnings.catch_warnings():
            # PIL's array is read-only; torch warns about that, but the resize only reads it
            warnings.simplefilter("ignore", UserWarning)
            x = torch.from_numpy(pixels).permute(2, 0, 1)  # CHW over HWC memory: channels-last, no copy
        mode = F.InterpolationMode.BICUBIC if self.interpolation == "bicubic" else F.InterpolationMode.BILINEAR
        y = F.resize(x, [target[1], target[0]], interpolation=mode, antialias=True)
        return y.permute(1, 2, 0).numpy()

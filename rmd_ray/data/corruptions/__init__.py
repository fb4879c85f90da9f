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
  (:func:`motion_blur_angle`, after imagecorruptions' re-implementation) instead of ImageMagick.
- ``spatter`` (water, severities 1-3) replaces OpenCV's Canny and 5x5 distance transform by SciPy
  stand-ins (:func:`canny`, ``distance_transform_edt``); see :func:`spatter`.
- ``frost`` reads the original frost photos from the ``imagecorruptions`` package (PyPI, Apache-2.0;
  not imported, only its files are read); the CIFAR preset's 0.2x shrink uses Pillow's bilinear
  resize, which antialiases where OpenCV's does not.
- All randomness comes from the ``rng`` argument, so a seed reproduces the output exactly.
- ``elastic_transform`` uses (x, y) = (column, row) for its affine control points; the reference
  mixes the two, which only matters for non-square images.

Not applied here: the published ImageNet-C files were also saved as JPEG (quality 85) after
corruption; :func:`corrupt` returns the array before any such encoding.

Submodules: :mod:`~rmd_ray.data.corruptions.registry` (presets, the :class:`Corruption` record and the
:data:`CORRUPTIONS` registry), :mod:`~rmd_ray.data.corruptions.noise`, :mod:`~rmd_ray.data.corruptions.blur`,
:mod:`~rmd_ray.data.corruptions.colour`, :mod:`~rmd_ray.data.corruptions.digital`,
:mod:`~rmd_ray.data.corruptions.weather` (the corruptions by family), :mod:`~rmd_ray.data.corruptions.apply`
(:func:`corrupt`) and :mod:`~rmd_ray.data.corruptions.imagenet_c` (reading published ImageNet-C folders).
"""

from __future__ import annotations

# Every family module is imported here, in the original file's order, so that its corruptions register.
# isort: off
from rmd_ray.data.corruptions.registry import (
    CORRUPTIONS as CORRUPTIONS,
    Corruption as Corruption,
    Fn as Fn,
    IMAGE_EXTENSIONS as IMAGE_EXTENSIONS,
    PRESETS as PRESETS,
    SEVERITIES as SEVERITIES,
)
from rmd_ray.data.corruptions import noise as noise  # registers the noise corruptions
from rmd_ray.data.corruptions.blur import (
    disk as disk,
    motion_blur as motion_blur,
    motion_blur_angle as motion_blur_angle,
    motion_taps as motion_taps,
)
from rmd_ray.data.corruptions.colour import (
    hsv_to_rgb as hsv_to_rgb,
    rgb_to_hsv as rgb_to_hsv,
)
from rmd_ray.data.corruptions.digital import (
    elastic_transform as elastic_transform,
)
from rmd_ray.data.corruptions.weather import (
    FROST_FILES as FROST_FILES,
    FROST_MISSING as FROST_MISSING,
    canny as canny,
    equalize_hist as equalize_hist,
    frost_folder as frost_folder,
    frost_texture as frost_texture,
    plasma_fractal as plasma_fractal,
    snow as snow,
    snow_layer as snow_layer,
    spatter as spatter,
    available_corruptions as available_corruptions,
)
from rmd_ray.data.corruptions.apply import (
    corrupt as corrupt,
)
from rmd_ray.data.corruptions.imagenet_c import (
    ImageNetCSample as ImageNetCSample,
    read_imagenet_c as read_imagenet_c,
)
# isort: on

__all__ = [
    "CORRUPTIONS",
    "PRESETS",
    "Corruption",
    "ImageNetCSample",
    "available_corruptions",
    "corrupt",
    "read_imagenet_c",
]

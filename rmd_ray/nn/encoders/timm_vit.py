"""timm ViT encoders (weights from a local checkpoint only)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from rmd_ray.nn.encoders.helpers import (
    check_multiple,
    describe_transform,
    load_state_dict,
    load_strict,
    need_checkpoint,
)
from rmd_ray.nn.encoders.registry import ENCODERS, Encoder

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
        raise need_checkpoint(name, spec.how)
    s = image_size or 224
    check_multiple(name, s, spec.patch)
    import timm
    from timm.data import create_transform, resolve_data_config
    from timm.models.vision_transformer import checkpoint_filter_fn

    # pretrained=False always: timm must not touch the hub. num_classes=0 -> pooled features.
    model = timm.create_model(spec.timm_name, pretrained=False, num_classes=0, img_size=s)
    if checkpoint is not None:
        state = load_state_dict(checkpoint)
        # timm's own converter: Meta's DINOv2 / MAE layouts, patch-embed and pos-embed resampling.
        state = checkpoint_filter_fn(state, model)
        own = set(model.state_dict())
        state = {k: v for k, v in state.items() if k in own or not k.startswith(_TIMM_IGNORABLE_PREFIXES)}
        load_strict(model, state, path=checkpoint, name=name)
    cfg = resolve_data_config({"input_size": (3, s, s)}, model=model)
    preprocess = create_transform(**cfg, is_training=False)
    resize = int(s / cfg["crop_pct"])
    desc = describe_transform(
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

"""open_clip encoders (weights from a local checkpoint only)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from rmd_ray.nn.encoders.helpers import check_multiple, describe_transform, need_checkpoint
from rmd_ray.nn.encoders.registry import ENCODERS, Encoder

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
        raise need_checkpoint(
            name,
            f"Download the {spec.arch} 'openai' weights elsewhere (e.g. "
            f"open_clip.create_model({spec.arch!r}, pretrained='openai') on a machine with internet, "
            f"then torch.save(model.state_dict(), 'file.pt'); OpenAI's own {spec.arch.replace('-', '/', 1)} "
            f".pt or an open_clip .safetensors also load).",
        )
    s = image_size or 224
    check_multiple(name, s, spec.step)
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
    desc = describe_transform(
        cfg.mean, cfg.std, resize=s, crop=s, interpolation=cfg.interpolation, note="open_clip eval transform"
    )
    return Encoder(name, visual, spec.feature_dim, s, preprocess, desc)


for _name in _CLIP_SPECS:
    ENCODERS.add(_name, functools.partial(_build_open_clip, name=_name))

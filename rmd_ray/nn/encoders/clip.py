"""open_clip encoders (weights from a local checkpoint only)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from rmd_ray.nn.encoders.helpers import check_multiple, need_checkpoint
from rmd_ray.nn.encoders.preprocess import Preprocessing
from rmd_ray.nn.encoders.registry import ENCODERS, Encoder, EncoderEntry

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


def _open_clip_preprocessing(*, image_size, name: str) -> Preprocessing:
    s = image_size or 224
    check_multiple(name, s, _CLIP_SPECS[name].step)
    from open_clip.transform import PreprocessCfg

    # open_clip's own defaults for a built-in architecture loaded from a file (no pretrained tag): resize
    # the shorter side to S, centre crop S, OpenAI's statistics
    cfg = PreprocessCfg(size=s)
    if cfg.resize_mode != "shortest":  # pragma: no cover - a future open_clip default
        raise ValueError(f"open_clip's default resize_mode is {cfg.resize_mode!r}; only 'shortest' is supported")
    return Preprocessing(s, s, cfg.interpolation, tuple(cfg.mean), tuple(cfg.std), note="open_clip eval transform")


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
    prep = _open_clip_preprocessing(image_size=image_size, name=name)
    s = prep.image_size
    import open_clip

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
    return Encoder(name, visual, spec.feature_dim, s, prep.transform(), prep.describe())


for _name in _CLIP_SPECS:
    ENCODERS.add(_name, EncoderEntry(functools.partial(_build_open_clip, name=_name),
                                     functools.partial(_open_clip_preprocessing, name=_name)))

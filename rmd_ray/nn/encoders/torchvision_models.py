"""The parametric ``torchvision:<arch>`` encoder family."""

from __future__ import annotations

import torch
from torch import nn

from rmd_ray.nn.encoders.helpers import load_state_dict, load_strict, need_checkpoint
from rmd_ray.nn.encoders.preprocess import Preprocessing
from rmd_ray.nn.encoders.registry import ENCODERS, Encoder, EncoderEntry

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


def _torchvision_preprocessing(arch: str, *, image_size) -> Preprocessing:
    from torchvision.models import get_model_weights

    valid = _torchvision_names()
    if arch not in valid:
        raise ValueError(f"unknown torchvision classifier {arch!r}; valid names: {', '.join(valid)}")
    default = get_model_weights(arch).DEFAULT
    # the weights' own eval transform (ImageClassification), read from its arguments: resize, crop, statistics
    kw = dict(default.transforms.keywords)
    crop, resize = int(kw["crop_size"]), int(kw.get("resize_size", 256))
    s = image_size or crop
    preset = default.transforms(crop_size=s, resize_size=int(round(s * resize / crop)))
    interpolation = getattr(preset.interpolation, "value", str(preset.interpolation))
    return Preprocessing(s, preset.resize_size[0], interpolation, tuple(preset.mean), tuple(preset.std),
                         note=f"torchvision {default!s} transform")


def _build_torchvision(arch: str, *, checkpoint, image_size, pretrained) -> Encoder:
    import torchvision.models

    prep = _torchvision_preprocessing(arch, image_size=image_size)
    name = f"torchvision:{arch}"
    default = torchvision.models.get_model_weights(arch).DEFAULT
    if pretrained and checkpoint is None:
        raise need_checkpoint(name, f"Download {default.url} elsewhere (torchvision weights {default!s}).")
    s = prep.image_size
    extra = {"image_size": s} if arch.startswith("vit_") else {}
    model = torchvision.models.get_model(arch, weights=None, **extra)
    if checkpoint is not None:
        load_strict(model, load_state_dict(checkpoint), path=checkpoint, name=name)
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
    return Encoder(name, model, int(out.shape[1]), s, prep.transform(), prep.describe())


ENCODERS.add("torchvision:<name>", EncoderEntry(_build_torchvision, _torchvision_preprocessing))

"""The parametric ``torchvision:<arch>`` encoder family."""

from __future__ import annotations

import torch
from torch import nn

from rmd_ray.nn.encoders.helpers import describe_transform, load_state_dict, load_strict, need_checkpoint
from rmd_ray.nn.encoders.registry import ENCODERS, Encoder

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
        raise need_checkpoint(name, f"Download {default.url} elsewhere (torchvision weights {default!s}).")
    kw = dict(default.transforms.keywords)
    crop, resize = int(kw["crop_size"]), int(kw.get("resize_size", 256))
    s = image_size or crop
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
    resize_s = int(round(s * resize / crop))
    preprocess = default.transforms(crop_size=s, resize_size=resize_s)
    interp = getattr(preprocess.interpolation, "value", str(preprocess.interpolation))
    desc = describe_transform(
        preprocess.mean,
        preprocess.std,
        resize=resize_s,
        crop=s,
        interpolation=interp,
        note=f"torchvision {default!s} transform",
    )
    return Encoder(name, model, int(out.shape[1]), s, preprocess, desc)

"""Helpers shared by the encoder builders: offline hub, freezing, checkpoint loading, size checks."""

from __future__ import annotations

import os

import torch
from torch import nn

from rmd_ray.nn.safe_load import read_state_dict

# --------------------------------------------------------------------------------------------
# shared helpers


def force_offline() -> None:
    # Belt and braces: nothing below passes a hub tag, but a library reading these at import time
    # must never try the network either.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def freeze(model: nn.Module) -> None:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)


def load_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Tensor dict from a .safetensors or torch file, unwrapping ``state_dict`` / ``model`` / ``module.``."""
    return read_state_dict(path)


def load_strict(model: nn.Module, state: dict, *, path: str, name: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"checkpoint {path!r} does not fit encoder {name!r}: {err}") from err


def need_checkpoint(name: str, how: str) -> ValueError:
    return ValueError(
        f"encoder {name!r}: pretrained weights requested but no checkpoint given, and there is no "
        f"network here. {how} Then pass checkpoint='/path/to/file', or pretrained=False for random weights."
    )


def check_multiple(name: str, image_size: int, step: int) -> None:
    if image_size % step:
        raise ValueError(f"encoder {name!r} needs image_size to be a multiple of {step}, got {image_size}")

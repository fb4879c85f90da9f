"""Initial weights of a classifier from a local state dict (``--model-weights``), its head fitted to K classes.

``build_model`` builds every model randomly initialised; a library model (``timm:<name>``,
``torchvision:<name>``) can start instead from weights saved elsewhere, e.g. ImageNet weights
downloaded once on a machine with network access and saved with ``torch.save(model.state_dict(), PATH)``
(or as ``.safetensors``). Such a checkpoint usually ends in a head for another number of classes (1000
for ImageNet): :func:`fit_initial_weights` then drops the head's tensors, which keep their random
initialisation, and names them. Every other key must match the model exactly (name and shape), so a
checkpoint of another architecture fails in one line naming the keys that differ.
"""

from __future__ import annotations

import os

import torch
from torch import nn

__all__ = ["classifier_head", "fit_initial_weights", "load_initial_weights"]

_SHOWN_KEYS = 5  # keys named in a message; the rest are counted


def classifier_head(model: nn.Module) -> str:
    """The dotted name of ``model``'s classifier head (the module that maps features to K logits).

    timm models name it (``get_classifier()``); otherwise it is the last ``nn.Linear`` registered,
    which is torchvision's ``fc`` / ``classifier[-1]`` / ``heads.head`` and the built-in models' ``fc``
    / ``classifier``. ``""`` when there is none.
    """
    getter = getattr(model, "get_classifier", None)
    if callable(getter):
        head = getter()
        for name, module in model.named_modules():
            if module is head and name:
                return name
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    return linears[-1] if linears else ""


def _shown(keys: list[str]) -> str:
    more = len(keys) - _SHOWN_KEYS
    return ", ".join(keys[:_SHOWN_KEYS]) + (f" and {more} more" if more > 0 else "")


def _shape(tensor: torch.Tensor) -> str:
    return "x".join(map(str, tensor.shape)) or "scalar"


def fit_initial_weights(
    model: nn.Module, state: dict[str, torch.Tensor], *, source: str | os.PathLike[str]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``state`` made to fit ``model``: the classifier head's tensors dropped where they differ from it.

    Parameters
    ----------
    model : torch.nn.Module
        The freshly built classifier (K outputs).
    state : dict
        The checkpoint's tensors (:func:`rmd_ray.nn.safe_load.read_state_dict`).
    source : str or path
        Where ``state`` came from, for the messages.

    Returns
    -------
    state : dict
        The tensors to load with ``strict=False``: ``state`` without the dropped keys.
    dropped : list of str
        One ``"name (checkpoint shape -> model shape)"`` per head tensor left at its random
        initialisation (a head for another K, or a checkpoint saved without its head); empty when
        every tensor fits.

    Raises
    ------
    ValueError
        A key the model lacks or lacks in the checkpoint, or a shape that differs, outside the head:
        the checkpoint is of another architecture (the message names the keys).
    """
    shown = os.fspath(source)
    own = model.state_dict()
    head = classifier_head(model)
    in_head = [k for k in own if head and k.startswith(head + ".")]
    missing = [k for k in own if k not in state and k not in in_head]
    unexpected = [k for k in state if k not in own]
    differ = [k for k in state if k in own and k not in in_head and state[k].shape != own[k].shape]
    if missing or unexpected or differ:
        parts = [f"{what}: {_shown(keys)}" for what, keys in (
            ("missing from the checkpoint", missing), ("not in the model", unexpected),
            ("of other shapes", [f"{k} ({_shape(state[k])} vs {_shape(own[k])})" for k in differ]),
        ) if keys]
        spec = getattr(model, "rmd_spec", None)
        raise ValueError(
            f"--model-weights {shown!r} does not fit model {spec.name if spec else type(model).__name__!r}: "
            f"keys {'; '.join(parts)}; save the state_dict of the same architecture"
        )
    head_fits = all(k in state and state[k].shape == own[k].shape for k in in_head)
    if head_fits:
        return dict(state), []
    dropped = [f"{k} ({_shape(state[k]) if k in state else 'absent'} -> {_shape(own[k])})" for k in in_head]
    return {k: v for k, v in state.items() if k not in in_head}, dropped


def load_initial_weights(
    model: nn.Module, state: dict[str, torch.Tensor], *, source: str | os.PathLike[str]
) -> list[str]:
    """Load ``state`` into ``model`` in place (see :func:`fit_initial_weights`); returns the dropped head keys."""
    fitted, dropped = fit_initial_weights(model, state, source=source)
    model.load_state_dict(fitted, strict=not dropped)
    return dropped

"""Checkpoints: :func:`model_signature`, :func:`save_checkpoint`, :func:`load_checkpoint` and
:func:`model_from_checkpoint`.
"""

from __future__ import annotations

import hashlib
import numbers
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LRScheduler

from rmd_ray.io.atomic import atomic_path
from rmd_ray.nn.safe_load import load_weights_only

_CKPT_FORMAT = "rmd-ray-checkpoint"
_CKPT_VERSION = 1


# ----------------------------------------------------------------------------------------------------
# checkpoints


def _unwrap(model: nn.Module) -> nn.Module:
    # DDP (Ray Train's prepare_model) / DataParallel prefix every key with "module."
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return model.module
    return model


def model_signature(model: nn.Module) -> dict[str, object]:
    """Identify an architecture: name, num_classes, width, cifar_stem, hash of state_dict keys+shapes.

    Models from ``rmd_ray.nn.models.build_model`` carry these in ``model.rmd_spec``; for any other
    module the name is its class name and the other three are None. DDP / DataParallel wrappers
    are looked through.
    """
    m = _unwrap(model)
    spec = getattr(m, "rmd_spec", None)
    layout = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in sorted(m.state_dict().items()))
    return {
        "model": spec.name if spec is not None else type(m).__name__,
        "num_classes": spec.num_classes if spec is not None else None,
        "width": spec.width if spec is not None else None,
        "cifar_stem": spec.cifar_stem if spec is not None else None,
        "layout_sha256": hashlib.sha256(layout.encode()).hexdigest(),
    }


def _describe(sig: Mapping[str, object]) -> str:
    return (
        f"{sig.get('model')} (num_classes={sig.get('num_classes')}, width={sig.get('width')}, "
        f"cifar_stem={sig.get('cifar_stem')}, layout {str(sig.get('layout_sha256'))[:12]})"
    )


_SAFE_SCALARS = (str, int, float, bool, type(None))


def _check_extra(value: object, where: str) -> None:
    # what torch.load(weights_only=True) can read back; anything else would save fine and then
    # make the checkpoint unloadable, so refuse it at save time
    if isinstance(value, _SAFE_SCALARS) or isinstance(value, Tensor):
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where} has a key of type {type(k).__name__}; use str or int keys")
            _check_extra(v, f"{where}[{k!r}]")
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_extra(v, f"{where}[{i}]")
        return
    raise TypeError(
        f"{where} has type {type(value).__name__}, which torch.load(weights_only=True) cannot read; "
        "convert it to a tensor, list, dict or Python scalar"
    )


def _state(obj: object | None) -> dict | None:
    return obj.state_dict() if obj is not None else None


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: LRScheduler | None,
    epoch: int,
    extra: dict | None = None,
    loss_fn: nn.Module | None = None,
    grad_scaler: torch.amp.GradScaler | None = None,
) -> Path:
    """Write a checkpoint atomically (temporary file in the same folder + ``os.replace``).

    Stores the model's state_dict (DDP unwrapped) and :func:`model_signature`, the optimiser,
    scheduler, loss (e.g. CRL's history buffers) and grad-scaler states when given, ``epoch``
    (number of finished epochs) and ``extra`` (tensors, lists, dicts, Python scalars only: e.g.
    ``{"rng": generator.get_state()}``). Missing parent folders are created.

    Returns the path written.
    """
    if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
        raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
    extra = {} if extra is None else extra
    if not isinstance(extra, dict):
        raise TypeError(f"extra must be a dict, got {type(extra).__name__}")
    _check_extra(extra, "extra")
    m = _unwrap(model)
    payload = {
        "format": _CKPT_FORMAT,
        "version": _CKPT_VERSION,
        "signature": model_signature(m),
        "epoch": int(epoch),
        "model": m.state_dict(),
        "optimizer": _state(optimizer),
        "scheduler": _state(scheduler),
        "loss_fn": _state(loss_fn),
        "grad_scaler": _state(grad_scaler),
        "extra": extra,
    }
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    return path


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: LRScheduler | None = None,
    expected_signature: Mapping[str, object] | None = None,
    loss_fn: nn.Module | None = None,
    grad_scaler: torch.amp.GradScaler | None = None,
    map_location: str | torch.device = "cpu",
) -> dict[str, object]:
    """Restore a checkpoint written by :func:`save_checkpoint` into the given objects, in place.

    Loaded with ``torch.load(..., weights_only=True)``. The stored signature must equal
    ``expected_signature`` (default: ``model_signature(model)``); otherwise a ValueError says which
    model the checkpoint came from and which was expected. Each of optimizer / scheduler / loss_fn /
    grad_scaler given must have state in the checkpoint.

    Returns
    -------
    dict
        ``epoch`` (finished epochs), ``extra`` and ``signature`` as stored.
    """
    return _restore(
        _read_payload(path, map_location),
        path,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        expected_signature=expected_signature,
        loss_fn=loss_fn,
        grad_scaler=grad_scaler,
    )


def _read_payload(path: str | os.PathLike, map_location: str | torch.device) -> dict:
    payload = load_weights_only(path, map_location=map_location)  # one-line ValueError if refused
    if not isinstance(payload, dict) or payload.get("format") != _CKPT_FORMAT:
        raise ValueError(f"{os.fspath(path)} is not an rmd-ray checkpoint (write it with save_checkpoint)")
    if payload.get("version") != _CKPT_VERSION:
        raise ValueError(
            f"{os.fspath(path)} has checkpoint version {payload.get('version')!r}; "
            f"this code reads version {_CKPT_VERSION}"
        )
    return payload


def _restore(payload: dict, path, *, model, optimizer, scheduler, expected_signature, loss_fn, grad_scaler) -> dict:
    m = _unwrap(model)
    saved = payload["signature"]
    expected = dict(expected_signature) if expected_signature is not None else model_signature(m)
    if saved != expected:
        hint = ""
        if {k: v for k, v in saved.items() if k != "layout_sha256"} == {
            k: v for k, v in expected.items() if k != "layout_sha256"
        }:
            hint = " (same name and settings, but the parameter layout differs)"
        raise ValueError(
            f"checkpoint {os.fspath(path)} was saved from model {_describe(saved)}, but the expected "
            f"model is {_describe(expected)}{hint}"
        )
    m.load_state_dict(payload["model"])
    for name, obj in (
        ("optimizer", optimizer),
        ("scheduler", scheduler),
        ("loss_fn", loss_fn),
        ("grad_scaler", grad_scaler),
    ):
        if obj is None:
            continue
        if payload.get(name) is None:
            raise ValueError(f"checkpoint {os.fspath(path)} holds no {name} state; pass {name}=None")
        obj.load_state_dict(payload[name])
    return {"epoch": payload["epoch"], "extra": payload["extra"], "signature": saved}


def model_from_checkpoint(
    path: str | os.PathLike, *, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, object]]:
    """Rebuild the model a checkpoint was saved from and load its weights (eval mode).

    The architecture comes from the stored :func:`model_signature` (name, num_classes, width,
    cifar_stem), so only models made by :func:`rmd_ray.nn.models.build_model` can be rebuilt;
    :func:`load_checkpoint` then checks the parameter layout. ``path`` may be the ``model.pt`` file or
    a Ray checkpoint folder holding it.

    Returns
    -------
    model : torch.nn.Module
    info : dict
        ``epoch``, ``extra`` and ``signature`` as stored (``extra`` of a Ray Train checkpoint holds the
        normalisation ``mean`` / ``std`` and ``image_size``).

    Raises
    ------
    ValueError
        Not a checkpoint, or one saved from a model :func:`build_model` cannot rebuild.
    """
    from rmd_ray.nn.models import EXTERNAL_PREFIXES, MODELS, build_model

    file = Path(path)
    if file.is_dir():
        file = file / "model.pt"
    if not file.is_file():
        raise ValueError(f"{os.fspath(path)!r} is not a checkpoint file or a folder with model.pt")
    payload = _read_payload(file, map_location)  # read once: weights can be hundreds of MB
    signature = payload.get("signature")
    if not isinstance(signature, dict):
        raise ValueError(f"{os.fspath(file)} is not an rmd-ray checkpoint (write it with save_checkpoint)")
    name = str(signature.get("model"))
    if (name not in MODELS.names() and not name.startswith(EXTERNAL_PREFIXES)) or signature.get("num_classes") is None:
        raise ValueError(
            f"checkpoint {os.fspath(file)} was saved from {_describe(signature)}, which build_model cannot "
            f"rebuild (known: {MODELS.names()}); build the model yourself and call load_checkpoint"
        )
    model = build_model(
        str(signature["model"]),
        num_classes=int(signature["num_classes"]),
        cifar_stem=bool(signature["cifar_stem"]),
        width=float(signature["width"]),
    )
    info = _restore(
        payload,
        file,
        model=model,
        optimizer=None,
        scheduler=None,
        expected_signature=None,
        loss_fn=None,
        grad_scaler=None,
    )
    return model.eval(), info

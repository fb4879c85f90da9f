"""Plain training / evaluation loop, optimiser and schedule, checkpoints and CIFAR augmentation.

Nothing here knows about Ray: a Ray Train ``train_loop_per_worker`` builds the model, loss and
optimiser, then calls :func:`train_one_epoch` / :func:`predict` on its shard's batches and
:func:`save_checkpoint` / :func:`load_checkpoint` for fault tolerance.

Batches are any iterable of mappings with keys

- ``"image"``: (B, C, H, W) floating (already normalised),
- ``"label"``: (B,) integer class indices,
- ``"id"``: (B,) integer sample ids (carried end to end; Ray Data does not keep order),
- ``"weight"``: (B,) per-sample difficulty weights in [0, 1], optional (needed by ``proposed``),

as torch tensors or NumPy arrays (e.g. ``Dataset.iter_torch_batches`` / ``iter_batches``). The loss
is called as ``loss_fn(logits, labels, weights=weights, ids=ids)`` (see ``rmd_ray.nn.losses``).
"""

from __future__ import annotations

import hashlib
import math
import numbers
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, MultiStepLR

from rmd_ray.core.atomic import atomic_path
from rmd_ray.core.registry import Registry

__all__ = [
    "NonFiniteLossError",
    "OptimConfig",
    "SCHEDULES",
    "build_optimizer",
    "build_scheduler",
    "train_one_epoch",
    "predict",
    "random_crop_flip",
    "model_signature",
    "save_checkpoint",
    "load_checkpoint",
    "model_from_checkpoint",
]

_CKPT_FORMAT = "rmd-ray-checkpoint"
_CKPT_VERSION = 1


class NonFiniteLossError(ValueError):
    """The training loss became NaN or infinite; raised before the optimiser step.

    Attributes
    ----------
    step : int
        Global step count (number of optimiser steps taken before this batch).
    ids : list[int]
        Sample ids of the offending batch.
    value : float
        The loss value (nan, inf or -inf).
    """

    def __init__(self, *, step: int, ids: list[int], value: float) -> None:
        self.step, self.ids, self.value = step, ids, value
        shown = ids if len(ids) <= 64 else [*ids[:64], "..."]
        super().__init__(
            f"non-finite training loss ({value}) at step {step}; sample ids in that batch: {shown}. "
            "Check those samples' images/weights, lower the learning rate, or use a GradScaler with AMP."
        )


# ----------------------------------------------------------------------------------------------------
# optimiser and schedule

SCHEDULES: Registry[Callable[..., LRScheduler]] = Registry("schedule")


@dataclass(frozen=True)
class OptimConfig:
    """SGD + learning-rate schedule (defaults: the paper's 200-epoch CIFAR recipe, wd aside).

    Parameters
    ----------
    lr : float
        Peak learning rate, > 0.
    momentum : float
        SGD momentum in [0, 1).
    weight_decay : float
        L2 weight decay, >= 0 (applied to every parameter, as in the usual CIFAR recipes).
    epochs : int
        Length of the schedule in epochs, >= 1.
    schedule : str
        ``"cosine"`` (to 0 over ``epochs``) or ``"multistep"`` (multiply by ``gamma`` at each
        milestone); names from ``SCHEDULES``.
    milestones : tuple of int
        Epochs at which ``multistep`` decays; strictly increasing, each in [1, epochs).
        Ignored by ``cosine``.
    gamma : float
        ``multistep`` decay factor in (0, 1].
    nesterov : bool
        Nesterov momentum (needs momentum > 0).
    """

    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    epochs: int = 200
    schedule: str = "cosine"
    milestones: tuple[int, ...] = (100, 150)
    gamma: float = 0.1
    nesterov: bool = False

    def __post_init__(self) -> None:
        def real(name: str, value: object) -> float:
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"OptimConfig.{name} must be a finite number, got {value!r}")
            return float(value)

        if real("lr", self.lr) <= 0:
            raise ValueError(f"OptimConfig.lr must be > 0, got {self.lr!r}")
        if not 0 <= real("momentum", self.momentum) < 1:
            raise ValueError(f"OptimConfig.momentum must be in [0, 1), got {self.momentum!r}")
        if real("weight_decay", self.weight_decay) < 0:
            raise ValueError(f"OptimConfig.weight_decay must be >= 0, got {self.weight_decay!r}")
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, numbers.Integral) or self.epochs < 1:
            raise ValueError(f"OptimConfig.epochs must be an int >= 1, got {self.epochs!r}")
        SCHEDULES.get(self.schedule)  # ValueError listing the valid schedules
        if not 0 < real("gamma", self.gamma) <= 1:
            raise ValueError(f"OptimConfig.gamma must be in (0, 1], got {self.gamma!r}")
        if not isinstance(self.nesterov, bool):
            raise ValueError(f"OptimConfig.nesterov must be a bool, got {self.nesterov!r}")
        if self.nesterov and self.momentum == 0:
            raise ValueError("OptimConfig.nesterov=True needs momentum > 0")
        ms = self.milestones
        if not isinstance(ms, tuple) or not all(
            isinstance(m, numbers.Integral) and not isinstance(m, bool) for m in ms
        ):
            raise ValueError(f"OptimConfig.milestones must be a tuple of ints, got {ms!r}")
        if any(b <= a for a, b in zip(ms, ms[1:])):
            raise ValueError(f"OptimConfig.milestones must be strictly increasing, got {ms!r}")
        if self.schedule == "multistep" and (not ms or ms[0] < 1 or ms[-1] >= self.epochs):
            raise ValueError(
                f"OptimConfig.milestones must be non-empty epochs in [1, epochs={self.epochs}) "
                f"for schedule 'multistep', got {ms!r}"
            )


@SCHEDULES.register("cosine")
def _cosine(optimizer, config: OptimConfig, total_steps: int, steps_per_epoch: int) -> LRScheduler:
    return CosineAnnealingLR(optimizer, T_max=total_steps, eta_min=0.0)


@SCHEDULES.register("multistep")
def _multistep(optimizer, config: OptimConfig, total_steps: int, steps_per_epoch: int) -> LRScheduler:
    return MultiStepLR(optimizer, milestones=[m * steps_per_epoch for m in config.milestones], gamma=config.gamma)


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.SGD:
    """SGD over the model's trainable parameters with ``config``'s lr, momentum, decay, nesterov."""
    if not isinstance(config, OptimConfig):
        raise TypeError(f"config must be an OptimConfig, got {type(config).__name__}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    return torch.optim.SGD(
        params,
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        nesterov=config.nesterov,
    )


def build_scheduler(optimizer: torch.optim.Optimizer, config: OptimConfig, *, steps_per_epoch: int) -> LRScheduler:
    """Learning-rate scheduler stepped once per optimiser step (not per epoch).

    ``cosine``: lr_t = lr/2 (1 + cos(pi t / T)), T = epochs * steps_per_epoch. ``multistep``: lr
    times gamma at steps m * steps_per_epoch for each milestone m. ``train_one_epoch`` calls
    ``scheduler.step()`` after every batch, so ``scheduler.last_epoch`` is the global step count.
    """
    if isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, numbers.Integral) or steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be an int >= 1, got {steps_per_epoch!r}")
    if not isinstance(config, OptimConfig):
        raise TypeError(f"config must be an OptimConfig, got {type(config).__name__}")
    builder = SCHEDULES.get(config.schedule)
    return builder(optimizer, config, config.epochs * int(steps_per_epoch), int(steps_per_epoch))


# ----------------------------------------------------------------------------------------------------
# augmentation


def random_crop_flip(images: Tensor, *, padding: int = 4, generator: torch.Generator | None = None) -> Tensor:
    """Standard CIFAR augmentation on a batch: zero-pad, random crop back to H x W, random h-flip.

    Each image gets its own crop offset (dy, dx) uniform in {0, ..., 2 * padding} and is flipped
    left-right with probability 1/2. Draws, in this order from ``generator`` (or the global RNG):
    ``offsets = torch.randint(0, 2p + 1, (2, B))`` (row 0: dy, row 1: dx), then
    ``flip = torch.rand(B) < 0.5``. Pads with 0 in whatever space ``images`` are in.

    torchvision.transforms.v2.RandomCrop / RandomHorizontalFlip are not used: on a (B, C, H, W)
    tensor they draw ONE crop and one flip for the whole batch, and per-sample draws would need a
    Python loop over images. This is one gather on the tensor's device.

    Parameters
    ----------
    images : Tensor, shape (B, C, H, W), floating
    padding : int, default 4
        Pixels of zero padding on each side, >= 0.
    generator : torch.Generator, optional
        For reproducibility (save ``generator.get_state()`` in a checkpoint to resume exactly);
        may live on another device than ``images``.

    Returns
    -------
    Tensor, shape (B, C, H, W)
    """
    if not isinstance(images, Tensor) or images.ndim != 4 or not images.is_floating_point():
        raise ValueError("images must be a floating-point tensor of shape (B, C, H, W)")
    if isinstance(padding, bool) or not isinstance(padding, numbers.Integral) or padding < 0:
        raise ValueError(f"padding must be an int >= 0, got {padding!r}")
    b, _, h, w = images.shape
    p = int(padding)
    draw_device = generator.device if generator is not None else images.device
    offsets = torch.randint(0, 2 * p + 1, (2, b), generator=generator, device=draw_device).to(images.device)
    flip = (torch.rand(b, generator=generator, device=draw_device) < 0.5).to(images.device)
    padded = F.pad(images, (p, p, p, p))
    rows = offsets[0][:, None] + torch.arange(h, device=images.device)  # (B, H)
    cols = offsets[1][:, None] + torch.arange(w, device=images.device)  # (B, W)
    batch = torch.arange(b, device=images.device)[:, None, None]
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # (B, C, H, W)
    return torch.where(flip[:, None, None, None], out.flip(-1), out).contiguous()


# ----------------------------------------------------------------------------------------------------
# loops


def _as_tensor(x: object, device: torch.device) -> Tensor:
    if isinstance(x, Tensor):
        return x.to(device, non_blocking=True)
    arr = np.asarray(x)
    if not arr.flags.writeable:
        # Ray Data hands out read-only arrays; torch warns on (and must not write to) them
        arr = arr.copy()
    return torch.from_numpy(arr).to(device, non_blocking=True)


def _unpack(batch: object, device: torch.device, *, need_label: bool = True):
    if not isinstance(batch, Mapping):
        raise TypeError(
            f"each batch must be a mapping with keys image, label, id (weight optional), got {type(batch).__name__}"
        )
    required = ("image", "label", "id") if need_label else ("image", "id")
    missing = [k for k in required if k not in batch]
    if missing:
        raise ValueError(f"batch is missing key(s) {missing}; it has {sorted(batch)}")
    images = _as_tensor(batch["image"], device)
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"batch['image'] must be floating (B, C, H, W), got {images.dtype} {tuple(images.shape)}")
    b = images.shape[0]
    ids = _as_tensor(batch["id"], device)
    labels = _as_tensor(batch["label"], device) if "label" in batch else None
    weights = _as_tensor(batch["weight"], device) if batch.get("weight") is not None else None
    for key, t in (("id", ids), ("label", labels), ("weight", weights)):
        if t is not None and t.shape != (b,):
            raise ValueError(f"batch[{key!r}] must have shape ({b},) like the images, got {tuple(t.shape)}")
    for key, t in (("id", ids), ("label", labels)):
        if t is not None and (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool):
            raise ValueError(f"batch[{key!r}] must hold integers, got {t.dtype}")
    if weights is not None and not weights.is_floating_point():
        raise ValueError(f"batch['weight'] must be floating, got {weights.dtype}")
    return images, (labels.long() if labels is not None else None), weights, ids.long()


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[Mapping[str, object]],
    loss_fn: Callable[..., Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    scheduler: LRScheduler | None = None,
    device: torch.device | str,
    amp: bool = False,
    grad_scaler: torch.amp.GradScaler | None = None,
    augment: Callable[[Tensor], Tensor] | None = None,
    start_step: int | None = None,
) -> dict[str, float | int]:
    """One pass over ``batches``: forward, loss, check, backward, step (and scheduler step).

    Parameters
    ----------
    model, optimizer
        The model (already on ``device``) and its optimiser.
    batches : iterable of mappings
        See the module docstring. Consumed once.
    loss_fn : callable
        ``loss_fn(logits, labels, weights=..., ids=...) -> scalar``; a module is put in train mode.
    scheduler : LRScheduler, optional
        Stepped after every optimiser step (see :func:`build_scheduler`).
    device : torch.device or str
    amp : bool, default False
        Mixed precision on CUDA via ``torch.autocast``: float16 with loss scaling when a
        ``grad_scaler`` is given, else bfloat16 (same exponent range as float32, no scaler
        needed). Ignored (full precision) on any other device.
    grad_scaler : torch.amp.GradScaler, optional
        Only used when ``amp`` is active.
    augment : callable, optional
        Applied to the image batch on ``device`` before the forward pass (e.g.
        ``functools.partial(random_crop_flip, generator=g)``).
    start_step : int, optional
        Global step count at the start of the epoch, used in error messages. Default:
        ``scheduler.last_epoch`` (the number of steps taken so far), or 0 without a scheduler.

    Returns
    -------
    dict
        ``loss``: mean training loss per sample, ``acc``: training accuracy in [0, 1], ``n``:
        samples seen, ``steps``: optimiser steps taken.

    Raises
    ------
    NonFiniteLossError
        If a batch's loss is NaN or infinite (before its optimiser step; parameters untouched by it).
    """
    device = torch.device(device)
    use_amp = bool(amp) and device.type == "cuda"
    scaler = grad_scaler if use_amp else None
    amp_dtype = torch.float16 if scaler is not None else torch.bfloat16
    if start_step is None:
        start_step = int(scheduler.last_epoch) if scheduler is not None else 0
    model.train()
    if isinstance(loss_fn, nn.Module):
        loss_fn.train()
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    n = steps = 0
    for batch in batches:
        images, labels, weights, ids = _unpack(batch, device)
        if augment is not None:
            images = augment(images)
        with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=use_amp):
            logits = model(images)
            loss = loss_fn(logits, labels, weights=weights, ids=ids)
        # one host sync per step; a NaN caught after optimizer.step() would already be in the weights
        if not bool(torch.isfinite(loss)):
            raise NonFiniteLossError(step=start_step + steps, ids=ids.cpu().tolist(), value=float(loss.detach()))
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        b = labels.shape[0]
        total_loss += loss.detach().double() * b
        correct += (logits.detach().argmax(dim=1) == labels).sum()
        n += b
        steps += 1
    if n == 0:
        raise ValueError("batches was empty: nothing to train on")
    return {"loss": total_loss.item() / n, "acc": correct.item() / n, "n": n, "steps": steps}


def predict(
    model: nn.Module,
    batches: Iterable[Mapping[str, object]],
    *,
    device: torch.device | str,
    amp: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits for every sample, in the order the batches arrive (eval mode, no autograd).

    ``"label"`` may be absent (unlabelled / OOD data): labels are then -1. The model's previous
    train/eval mode is restored afterwards. ``amp`` as in :func:`train_one_epoch` (bfloat16
    autocast on CUDA only); logits come back as float32.

    Returns
    -------
    ids : ndarray (N,) int64
    labels : ndarray (N,) int64
    logits : ndarray (N, K) float32
    """
    device = torch.device(device)
    use_amp = bool(amp) and device.type == "cuda"
    was_training = model.training
    model.eval()
    out_ids, out_labels, out_logits = [], [], []
    try:
        with torch.inference_mode():
            for batch in batches:
                images, labels, _, ids = _unpack(batch, device, need_label=False)
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                    logits = model(images)
                if labels is None:
                    labels = torch.full_like(ids, -1)
                out_ids.append(ids.cpu())
                out_labels.append(labels.cpu())
                out_logits.append(logits.float().cpu())
    finally:
        model.train(was_training)
    if not out_ids:
        raise ValueError("batches was empty: nothing to predict")
    return (
        torch.cat(out_ids).numpy(),
        torch.cat(out_labels).numpy(),
        torch.cat(out_logits).numpy(),
    )


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
    payload = torch.load(path, map_location=map_location, weights_only=True)
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
    from rmd_ray.nn.models import MODELS, build_model

    file = Path(path)
    if file.is_dir():
        file = file / "model.pt"
    if not file.is_file():
        raise ValueError(f"{os.fspath(path)!r} is not a checkpoint file or a folder with model.pt")
    payload = _read_payload(file, map_location)  # read once: weights can be hundreds of MB
    signature = payload.get("signature")
    if not isinstance(signature, dict):
        raise ValueError(f"{os.fspath(file)} is not an rmd-ray checkpoint (write it with save_checkpoint)")
    if signature.get("model") not in MODELS.names() or signature.get("num_classes") is None:
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

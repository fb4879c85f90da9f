"""The training and inference loops: :func:`train_one_epoch` and :func:`predict`, with
:class:`NonFiniteLossError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LRScheduler


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
        If it has an ``end_epoch()`` method (``crl``), that is called once after the last batch.
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
    use_amp, scaler, amp_dtype = _train_precision(device, amp=amp, grad_scaler=grad_scaler)
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
        _optimizer_step(loss, optimizer, scheduler=scheduler, scaler=scaler, step=start_step + steps, ids=ids)
        b = labels.shape[0]
        total_loss += loss.detach().double() * b
        correct += (logits.detach().argmax(dim=1) == labels).sum()
        n += b
        steps += 1
    if n == 0:
        raise ValueError("batches was empty: nothing to train on")
    _end_epoch(loss_fn)
    return {"loss": total_loss.item() / n, "acc": correct.item() / n, "n": n, "steps": steps}


def _train_precision(
    device: torch.device, *, amp: bool, grad_scaler: torch.amp.GradScaler | None
) -> tuple[bool, torch.amp.GradScaler | None, torch.dtype]:
    """``(use_amp, scaler, autocast dtype)``: AMP on CUDA only; float16 with a scaler, else bfloat16."""
    use_amp = bool(amp) and device.type == "cuda"
    scaler = grad_scaler if use_amp else None
    amp_dtype = torch.float16 if scaler is not None else torch.bfloat16
    return use_amp, scaler, amp_dtype


def _optimizer_step(
    loss: Tensor,
    optimizer: torch.optim.Optimizer,
    *,
    scheduler: LRScheduler | None,
    scaler: torch.amp.GradScaler | None,
    step: int,
    ids: Tensor,
) -> None:
    """Check ``loss`` is finite, then backward (scaled when ``scaler``), optimiser step, scheduler step.

    Raises :class:`NonFiniteLossError` (global ``step``, the batch's ``ids``) before backward or step.
    """
    # one host sync per step; a NaN caught after optimizer.step() would already be in the weights
    if not bool(torch.isfinite(loss)):
        raise NonFiniteLossError(step=step, ids=ids.cpu().tolist(), value=float(loss.detach()))
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


def _end_epoch(loss_fn: Callable[..., Tensor]) -> None:
    """Call ``loss_fn.end_epoch()`` if it has one."""
    # A loss with per-epoch state (crl counts finished epochs to normalise correctness) advances it here.
    end_epoch = getattr(loss_fn, "end_epoch", None)
    if callable(end_epoch):
        end_epoch()


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

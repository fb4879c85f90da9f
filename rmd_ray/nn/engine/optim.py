"""Optimiser and learning-rate schedule: :class:`OptimConfig`, the :data:`SCHEDULES` registry,
:func:`build_optimizer` and :func:`build_scheduler`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, MultiStepLR

from rmd_ray.core.registry import Registry

# ----------------------------------------------------------------------------------------------------
# optimiser and schedule

SCHEDULES: Registry[Callable[..., LRScheduler]] = Registry("schedule")


@dataclass(frozen=True)
class OptimConfig:
    """SGD + learning-rate schedule (defaults: a common 200-epoch CIFAR recipe, wd aside).

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


def rescale_scheduler(
    scheduler: LRScheduler, optimizer: torch.optim.Optimizer, config: OptimConfig, *, steps_per_epoch: int, epoch: int
) -> bool:
    """Move a restored schedule to the start of ``epoch`` at ``steps_per_epoch`` steps an epoch; True if it moved.

    A checkpoint's schedule counts optimiser steps. Resumed with another number of steps per epoch (an
    elastic Ray Train run restarted on fewer or more workers, each taking a larger or smaller share of the
    rows), it would reach its end too early or too late: the learning rate would hit 0 mid-run and, for
    ``cosine``, climb again. The schedule of the new shape is replayed on a one-parameter optimiser up to
    ``epoch * steps_per_epoch`` steps and its state and learning rates copied over (public scheduler API only),
    so the run goes on where the share of training done says. A schedule already at that step is left as it is.
    """
    if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or not 0 <= epoch <= config.epochs:
        raise ValueError(f"epoch must be an int in [0, {config.epochs}], got {epoch!r}")
    step = epoch * int(steps_per_epoch)
    if scheduler.last_epoch == step:
        return False
    groups = [{"params": [torch.zeros(1, requires_grad=True)], "lr": g.get("initial_lr", g["lr"])}
              for g in optimizer.param_groups]
    probe_optimizer = torch.optim.SGD(groups, lr=config.lr)
    probe = build_scheduler(probe_optimizer, config, steps_per_epoch=steps_per_epoch)
    probe_optimizer.step()  # no gradients: nothing moves, and torch does not warn about the step order
    for _ in range(step):
        probe.step()
    scheduler.load_state_dict(probe.state_dict())
    for group, lr in zip(optimizer.param_groups, probe.get_last_lr()):
        group["lr"] = lr
    return True

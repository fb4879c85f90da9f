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
is called as ``loss_fn(logits, labels, weights=weights, ids=ids)`` (see ``rmd_ray.nn.losses``), and
its ``end_epoch()``, where it has one, after every training epoch.

Submodules: :mod:`~rmd_ray.nn.engine.optim` (:class:`OptimConfig`, :func:`build_optimizer`,
:func:`build_scheduler`, :func:`rescale_scheduler`), :mod:`~rmd_ray.nn.engine.augmentation`
(:func:`random_crop_flip`), :mod:`~rmd_ray.nn.engine.loops` (:func:`train_one_epoch`, :func:`predict`) and
:mod:`~rmd_ray.nn.engine.checkpoints` (save, load and rebuild models from checkpoints).
"""

from __future__ import annotations

# Optimiser and schedules, augmentation, loops, checkpoints (SCHEDULES registers in optim).
# isort: off
from rmd_ray.nn.engine.optim import (
    OptimConfig as OptimConfig,
    SCHEDULES as SCHEDULES,
    build_optimizer as build_optimizer,
    build_scheduler as build_scheduler,
    rescale_scheduler as rescale_scheduler,
)
from rmd_ray.nn.engine.augmentation import (
    random_crop_flip as random_crop_flip,
)
from rmd_ray.nn.engine.loops import (
    NonFiniteLossError as NonFiniteLossError,
    predict as predict,
    train_one_epoch as train_one_epoch,
)
from rmd_ray.nn.engine.checkpoints import (
    load_checkpoint as load_checkpoint,
    model_from_checkpoint as model_from_checkpoint,
    model_signature as model_signature,
    save_checkpoint as save_checkpoint,
)
# isort: on

__all__ = [
    "NonFiniteLossError",
    "OptimConfig",
    "SCHEDULES",
    "build_optimizer",
    "build_scheduler",
    "rescale_scheduler",
    "train_one_epoch",
    "predict",
    "random_crop_flip",
    "model_signature",
    "save_checkpoint",
    "load_checkpoint",
    "model_from_checkpoint",
]

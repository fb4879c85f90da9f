"""Train a classifier with Ray Train: data-parallel workers, per-epoch checkpoints, resume on failure.

Data flow (the string ``id`` of every row is kept; Ray Data does not preserve order, docs/design.md section 6)::

    reader tables --prepare_arrays (driver: decode once, uint8)--> images (N, 3, H, W), labels, ids
    scores.parquet --join_weights (by id, never by position)--> s in [0, 1]   (losses that need it)
    arrays --list of Arrow blocks, materialised BEFORE fit--> Ray datasets "train" (split) / "val" (not)
    TorchTrainer: train_loop_per_worker = thin glue around rmd_ray.nn (build, resume, epochs, report)
    driver: last checkpoint --engine.load_checkpoint(weights_only)--> <run_name>/predictions_<split>.parquet

Inside Ray the row's ``id`` column is its int64 position in the arrays (what ``engine`` and the ``crl``
loss expect); the driver maps positions back to the string ids in every output and error message.

Choices that matter (docs/design.md section 6 lists the hangs they avoid):

- Fractional ``resources_per_worker={"CPU": cpus_per_worker}`` and datasets materialised before
  ``fit()``: a training group that holds every CPU would starve the Ray Data tasks that feed it.
- One torch thread per worker (``runtime.worker_setup``).
- Float conversion and per-channel normalisation run on the worker (on its device), so blocks hold
  uint8 pixels: 4x less object-store traffic than float32. The mean / std come from the training
  images and are stored in every checkpoint.
- Shuffling: rows are permuted once on the driver (seeded) before they are cut into blocks; every
  epoch each worker then shuffles its shard through a local buffer seeded by (seed, epoch, rank),
  with ``preserve_order=True`` so a run is reproducible and a resumed epoch sees the same order.
- Validation runs on rank 0 over the full (unsplit) validation set, deduplicated by id, so nothing
  is padded or counted twice.
- Deterministic worker errors (a non-finite loss; a checkpoint that does not fit the model) are
  recorded in a small actor before the worker raises: Ray retries every worker error
  ``max_failures`` times, and a retry that would only hit the same error fails at once instead.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import math
import numbers
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
import torch

from rmd_ray import __version__
from rmd_ray.data.decode import decode_image
from rmd_ray.data.io import write_parquet_atomic
from rmd_ray.distributed.runtime import init_ray, worker_setup
from rmd_ray.nn import engine
from rmd_ray.nn.engine import NonFiniteLossError, OptimConfig
from rmd_ray.nn.losses import LOSSES, build_loss
from rmd_ray.nn.models import MIN_WIDTH, MODELS, build_model

__all__ = [
    "CHECKPOINT_FILE",
    "TrainConfig",
    "TrainingResult",
    "join_weights",
    "loss_needs_weights",
    "prepare_arrays",
    "run_training",
]

log = logging.getLogger("rmd_ray.training")

CHECKPOINT_FILE = "model.pt"  # inside every Ray checkpoint directory (engine.save_checkpoint format)

# Losses that read the per-sample difficulty weight s (rmd_ray.nn.losses: only the paper's loss).
_WEIGHTED_LOSSES = frozenset({"proposed"})
# Losses whose hyper-parameter is the training-set size, filled in here (ids index its history).
_SIZED_LOSSES = frozenset({"crl"})
_SCORE_METRIC = "val_acc"  # ranks checkpoints for "best"; latest is always kept as well
_BLOCK_ROWS = 4096
_SHUFFLE_BUFFER_BYTES = 512 * 2**20


def loss_needs_weights(name: str) -> bool:
    """Whether loss ``name`` needs per-sample difficulty weights (i.e. a ``scores.parquet``)."""
    LOSSES.get(name)  # ValueError listing the valid names
    return name in _WEIGHTED_LOSSES


# ------------------------------------------------------------------------------------------- config


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _hparam_tuple(value: object) -> tuple[tuple[str, Any], ...]:
    items = value.items() if isinstance(value, Mapping) else value
    try:
        pairs = [tuple(p) for p in items]  # type: ignore[union-attr]
    except TypeError:
        raise ValueError(
            f"TrainConfig.loss_hparams must be a mapping or a tuple of (name, value) pairs, got {value!r}"
        ) from None
    if any(len(p) != 2 or not isinstance(p[0], str) for p in pairs):
        raise ValueError(f"TrainConfig.loss_hparams must hold (str name, value) pairs, got {value!r}")
    names = [p[0] for p in pairs]
    if len(set(names)) != len(names):
        raise ValueError(f"TrainConfig.loss_hparams names a hyper-parameter twice: {names}")
    for name, v in pairs:
        if not isinstance(v, (bool, int, float, str)):
            raise ValueError(
                f"TrainConfig.loss_hparams[{name!r}] must be a number, bool or str, got {type(v).__name__}"
            )
    return tuple(sorted(pairs))


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs besides the data (frozen: it travels to every worker).

    Parameters
    ----------
    model : str
        A name from ``rmd_ray.nn.models.MODELS`` (resnet18, resnet34, ...).
    width : float
        Channel multiplier, >= 1/32 (1.0 is torchvision's architecture).
    cifar_stem : bool
        3x3 stride-1 stem without max-pool, for 32-px images.
    loss : str
        A name from ``rmd_ray.nn.losses.LOSSES``; ``proposed`` needs weights (``scores``).
    loss_hparams : mapping or tuple of (name, value) pairs
        The loss's constructor arguments (e.g. ``{"alpha": 0.3}``); stored as a sorted tuple of pairs.
        Checked by building the loss once. ``crl``'s ``num_samples`` is the training-set size and is
        filled in by :func:`run_training`.
    optim : OptimConfig
        SGD and schedule; ``optim.epochs`` is the number of epochs.
    batch_size : int
        Per-worker batch size, >= 1.
    num_workers : int
        Ray Train workers (data parallel, DDP when > 1), >= 1.
    cpus_per_worker : float
        Logical CPUs each worker reserves, > 0; fractional values leave CPUs to Ray Data tasks.
    use_gpu : bool
        One GPU per worker.
    amp : bool
        bfloat16 autocast; only effective on GPU (ignored on CPU).
    image_size : int or None
        Resize every image to ``image_size`` x ``image_size`` (bilinear); None keeps the native size,
        which must then be the same for every image.
    augment : bool
        Random crop (zero padding 4, in normalised space) + horizontal flip on training batches.
    seed : int
        Seeds model initialisation, the one-off row permutation, shuffling and augmentation.
    max_failures : int
        Worker failures Ray Train recovers from (restarting from the latest checkpoint); -1 for no limit.
    eval_every : int
        Evaluate on the validation set every ``eval_every`` epochs (and always after the last).
    """

    model: str = "resnet18"
    width: float = 1.0
    cifar_stem: bool = True
    loss: str = "proposed"
    loss_hparams: tuple[tuple[str, Any], ...] | Mapping[str, Any] = ()
    optim: OptimConfig = field(default_factory=OptimConfig)
    batch_size: int = 128
    num_workers: int = 1
    cpus_per_worker: float = 1.0
    use_gpu: bool = False
    amp: bool = True
    image_size: int | None = None
    augment: bool = True
    seed: int = 0
    max_failures: int = 2
    eval_every: int = 1

    def __post_init__(self) -> None:
        MODELS.get(self.model)  # ValueError listing the valid models
        if isinstance(self.width, bool) or not isinstance(self.width, numbers.Real):
            raise ValueError(f"TrainConfig.width must be a number >= {MIN_WIDTH}, got {self.width!r}")
        if not math.isfinite(self.width) or self.width < MIN_WIDTH:
            raise ValueError(f"TrainConfig.width must be a finite number >= 1/32, got {self.width!r}")
        for name in ("cifar_stem", "use_gpu", "amp", "augment"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"TrainConfig.{name} must be True or False, got {getattr(self, name)!r}")
        LOSSES.get(self.loss)  # ValueError listing the valid losses
        hparams = _hparam_tuple(self.loss_hparams)
        object.__setattr__(self, "loss_hparams", hparams)
        kwargs = dict(hparams)
        if self.loss in _SIZED_LOSSES:
            kwargs.setdefault("num_samples", 1)  # the real size is only known from the data
        build_loss(self.loss, **kwargs)  # unknown / out-of-range hyper-parameters fail here
        if not isinstance(self.optim, OptimConfig):
            raise ValueError(
                f"TrainConfig.optim must be an rmd_ray.nn.engine.OptimConfig, got {type(self.optim).__name__}"
            )
        for name, low in (("batch_size", 1), ("num_workers", 1), ("eval_every", 1), ("seed", 0)):
            v = getattr(self, name)
            if not _is_int(v) or v < low:
                raise ValueError(f"TrainConfig.{name} must be an int >= {low}, got {v!r}")
        if self.seed >= 2**31:
            raise ValueError(f"TrainConfig.seed must be < 2**31, got {self.seed}")
        if not _is_int(self.max_failures) or self.max_failures < -1:
            raise ValueError(f"TrainConfig.max_failures must be an int >= 0 (-1: no limit), got {self.max_failures!r}")
        cpw = self.cpus_per_worker
        if isinstance(cpw, bool) or not isinstance(cpw, numbers.Real) or not math.isfinite(cpw) or cpw <= 0:
            raise ValueError(f"TrainConfig.cpus_per_worker must be a number > 0 (e.g. 0.5), got {cpw!r}")
        if self.image_size is not None and (not _is_int(self.image_size) or self.image_size < 1):
            raise ValueError(
                f"TrainConfig.image_size must be None (native size) or an int >= 1, got {self.image_size!r}"
            )

    @property
    def loss_kwargs(self) -> dict[str, Any]:
        """``loss_hparams`` as a dict, for ``build_loss(config.loss, **config.loss_kwargs)``."""
        return dict(self.loss_hparams)  # type: ignore[arg-type]


@dataclass
class TrainingResult:
    """What :func:`run_training` returns.

    Attributes
    ----------
    epochs : list of dict
        One dict per finished epoch, across restarts: ``epoch`` (finished epochs, 1-based),
        ``train_loss``, ``train_acc``, ``lr`` (after the epoch), ``time_s``, ``resumed_from``
        (finished epochs when the attempt that ran this epoch started) and, on evaluated epochs,
        ``val_*`` from ``rmd_ray.core.metrics.evaluate_predictions`` (``val_acc``, ``val_ece_mass``,
        ``val_ece_width``, ``val_nll``, ...).
    final_val : dict
        The ``val_*`` metrics of the last epoch (always evaluated), without the prefix.
    last_checkpoint, best_checkpoint : str
        Ray checkpoint directories (each holds ``model.pt``); best by ``val_acc``.
    predictions : dict
        Split name (``"val"``, ``"test"``) -> Parquet path of the last checkpoint's predictions.
    predictions_path : Path
        ``predictions["test"]`` when a test table was given, else ``predictions["val"]``.
    test_metrics : dict or None
        ``evaluate_predictions`` on the test split with the last checkpoint.
    run_path : str
        The Ray run directory (``<output_dir>/<run_name>``).
    """

    epochs: list[dict[str, float]]
    final_val: dict[str, float]
    last_checkpoint: str
    best_checkpoint: str
    predictions: dict[str, Path]
    predictions_path: Path
    test_metrics: dict[str, float] | None
    run_path: str


# --------------------------------------------------------------------------------------------- data


def _check_table(table: object, name: str) -> pa.Table:
    if not isinstance(table, pa.Table):
        raise TypeError(f"{name} must be a pyarrow.Table from rmd_ray.data.readers, got {type(table).__name__}")
    missing = [c for c in ("id", "label") if c not in table.column_names]
    if missing:
        raise ValueError(f"{name} has no column(s) {missing}; build it with an rmd_ray.data.readers reader")
    if table.num_rows == 0:
        raise ValueError(f"{name} has no rows")
    if pc.count_distinct(table.column("id")).as_py() != table.num_rows or table.column("id").null_count:
        raise ValueError(f"{name}: ids must be unique and not null (outputs and weights are joined by id)")
    return table


def prepare_arrays(table: pa.Table, *, image_size: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode every row once into a uint8 stack (float conversion and normalisation happen on workers).

    Parameters
    ----------
    table : pyarrow.Table
        A reader table (``id``, ``label`` and one image source; see ``rmd_ray.data.decode``).
    image_size : int, optional
        Resize each image to ``image_size`` x ``image_size`` with PIL bilinear (aspect ratio is not
        kept: meant for small square datasets). None keeps the native size, which must then be the
        same for every row.

    Returns
    -------
    images : ndarray (N, 3, H, W) uint8
        Grayscale, palette and alpha images become 3-channel RGB (``decode_image``).
    labels : ndarray (N,) int64
    ids : list of str
        In table order.

    Raises
    ------
    ValueError
        An undecodable image (the message names its id), images of different sizes without
        ``image_size``, negative or null labels.
    """
    table = _check_table(table, "table")
    if image_size is not None and (not _is_int(image_size) or image_size < 1):
        raise ValueError(f"image_size must be None or an int >= 1, got {image_size!r}")
    labels_col = table.column("label")
    if labels_col.null_count or not pa.types.is_integer(labels_col.type):
        raise ValueError(f"table: labels must be non-null integers, got type {labels_col.type}")
    labels = labels_col.to_numpy().astype(np.int64)
    if labels.min() < 0:
        raise ValueError(f"table: labels must be >= 0, got {int(labels.min())}")
    ids = [str(i) for i in table.column("id").to_pylist()]
    n = table.num_rows
    images: np.ndarray | None = None
    row = 0
    for batch in table.to_batches(max_chunksize=1024):  # bounded memory: no whole-table pylist
        for rec in batch.to_pylist():
            try:
                img = decode_image(rec)
            except ValueError as err:
                raise ValueError(f"row id {rec['id']!r}: {err}") from err
            if image_size is not None and img.size != (image_size, image_size):
                img = img.resize((image_size, image_size), resample=_bilinear())
            arr = np.asarray(img, dtype=np.uint8)  # (H, W, 3)
            if images is None:
                images = np.empty((n, 3, arr.shape[0], arr.shape[1]), dtype=np.uint8)
            elif arr.shape[:2] != images.shape[2:]:
                raise ValueError(
                    f"row id {rec['id']!r} is {arr.shape[1]}x{arr.shape[0]} but earlier images are "
                    f"{images.shape[3]}x{images.shape[2]}; set image_size to resize them all"
                )
            images[row] = arr.transpose(2, 0, 1)
            row += 1
    assert images is not None and row == n
    return images, labels, ids


def _bilinear() -> int:
    from PIL import Image

    return Image.Resampling.BILINEAR


def join_weights(ids: Sequence[str], scores: pa.Table) -> np.ndarray:
    """Per-sample weights for ``ids``, joined by id from a ``scores.parquet`` table (never by position).

    Parameters
    ----------
    ids : sequence of str
        The training ids, e.g. from :func:`prepare_arrays`.
    scores : pyarrow.Table
        Columns ``id`` (string, unique) and ``weight`` (finite, in [0, 1]); other columns ignored.

    Returns
    -------
    ndarray (N,) float32
        ``weights[i]`` is the weight of ``ids[i]``.

    Raises
    ------
    ValueError
        An id with no weight (message: how many and a few examples), duplicate ids in ``scores``,
        or a weight that is not finite or outside [0, 1] (message names the id).
    """
    if not isinstance(scores, pa.Table):
        raise TypeError(f"scores must be a pyarrow.Table (read scores.parquet), got {type(scores).__name__}")
    missing_cols = [c for c in ("id", "weight") if c not in scores.column_names]
    if missing_cols:
        raise ValueError(f"scores has no column(s) {missing_cols}; pass the scores.parquet table")
    score_ids = pc.cast(scores.column("id"), pa.string())
    if pc.count_distinct(score_ids).as_py() != scores.num_rows:
        raise ValueError("scores has duplicate ids; each id needs exactly one weight")
    wanted = pa.array([str(i) for i in ids], type=pa.string())
    index = pc.index_in(wanted, value_set=score_ids)
    if index.null_count:
        absent = pc.filter(wanted, pc.is_null(index)).to_pylist()
        raise ValueError(
            f"{len(absent)} of {len(wanted)} training ids have no weight in scores (e.g. {absent[:5]}); "
            "score the same training table (rmd-ray score) or drop those rows"
        )
    # a null weight becomes NaN here and is reported below with its id
    weights = pc.take(pc.cast(scores.column("weight"), pa.float64()), index).to_numpy(zero_copy_only=False)
    bad = ~np.isfinite(weights) | (weights < 0) | (weights > 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"weight of id {wanted[i].as_py()!r} is {float(weights[i])!r}; weights must be finite and in "
            f"[0, 1] ({int(bad.sum())} bad)"
        )
    return weights.astype(np.float32)


def _blocks(
    images: np.ndarray, labels: np.ndarray, weights: np.ndarray | None, order: np.ndarray, rows: int
) -> list[pa.Table]:
    from ray.data.extensions import ArrowTensorArray

    out = []
    for start in range(0, len(order), rows):
        idx = order[start : start + rows]
        cols = {
            "image": ArrowTensorArray.from_numpy(np.ascontiguousarray(images[idx])),
            "label": pa.array(labels[idx], type=pa.int64()),
            "id": pa.array(idx.astype(np.int64), type=pa.int64()),
        }
        if weights is not None:
            cols["weight"] = pa.array(weights[idx], type=pa.float32())
        out.append(pa.table(cols))
    return out


def _dataset(images, labels, weights, *, seed: int | None, n_blocks_min: int):
    """A materialised Ray dataset over a LIST of blocks (one block = one reader; docs/design.md section 6)."""
    n = len(labels)
    order = np.random.default_rng(seed).permutation(n) if seed is not None else np.arange(n)
    rows = max(1, min(_BLOCK_ROWS, math.ceil(n / n_blocks_min)))
    return ray.data.from_arrow(_blocks(images, labels, weights, order, rows)).materialize()


def _channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of ``images`` (N, C, H, W) uint8, in [0, 1] units (float64 sums)."""
    c = images.shape[1]
    total = np.zeros(c)
    total_sq = np.zeros(c)
    for start in range(0, images.shape[0], 4096):  # bounded temporaries
        chunk = images[start : start + 4096].astype(np.float64) / 255.0
        total += chunk.sum(axis=(0, 2, 3))
        total_sq += np.square(chunk).sum(axis=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    # a constant channel carries no information; dividing by 1 keeps it at 0 instead of NaN
    std = np.where(std > 1e-6, std, 1.0)
    return mean.tolist(), std.tolist()


def _normalise(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> (x / 255 - mean) / std, float32, in one pass on the images' device."""
    return images.float().sub_(mean).div_(std)


# ------------------------------------------------------------------------------------ worker side


class _WorkerFailure(RuntimeError):
    """A deterministic worker error, carried to the driver as a plain record (picklable).

    ``NonFiniteLossError`` cannot cross a process boundary itself: its keyword-only ``__init__``
    breaks unpickling, and Ray then reports a health-check failure instead of the error.
    """

    def __init__(self, record: dict[str, Any]) -> None:
        super().__init__(record["message"])
        self.record = record

    def __reduce__(self):
        return (type(self), (self.record,))


@ray.remote(num_cpus=0)
class _FatalErrors:
    """Holds the first deterministic worker error of a run, so that retries fail at once."""

    def __init__(self) -> None:
        self._record: dict[str, Any] | None = None

    def put(self, record: dict[str, Any]) -> None:
        if self._record is None:
            self._record = record

    def get(self) -> dict[str, Any] | None:
        return self._record


@dataclass(frozen=True)
class _WorkerSpec:
    """What every worker receives (via ``train_loop_config``)."""

    config: TrainConfig
    num_classes: int
    n_train: int
    n_val: int
    loss_kwargs: dict[str, Any]
    mean: list[float]
    std: list[float]
    steps_per_epoch: int
    drop_last: bool
    shuffle_buffer: int
    fatal: Any  # actor handle of _FatalErrors
    initial_checkpoint: Any = None  # ObjectRef of checkpoint bytes (resume_from), or None
    epoch_hook: Callable[[int], None] | None = None


def _inner(model: torch.nn.Module) -> torch.nn.Module:
    # evaluate the bare module on rank 0 alone: a DDP forward may sync buffers with the other ranks
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def _mix(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def _batches(iterator, mean, std):
    for b in iterator:
        out = {"image": _normalise(b["image"], mean, std), "label": b["label"], "id": b["id"]}
        if "weight" in b:
            out["weight"] = b["weight"]
        yield out


def _restore(spec, model, optimizer, scheduler, loss_fn, device) -> tuple[int, list[dict], dict]:
    """Load Ray's latest checkpoint (a restart) or ``resume_from``; return (epoch, history, extra)."""
    checkpoint = ray.train.get_checkpoint()
    with contextlib.ExitStack() as stack:
        if checkpoint is not None:
            path = Path(stack.enter_context(checkpoint.as_directory())) / CHECKPOINT_FILE
        elif spec.initial_checkpoint is not None:
            tmp = stack.enter_context(tempfile.TemporaryDirectory())
            path = Path(tmp) / CHECKPOINT_FILE
            path.write_bytes(ray.get(spec.initial_checkpoint))
        else:
            return 0, [], {}
        try:
            info = engine.load_checkpoint(
                path,
                model=model,
                optimizer=optimizer,
                scheduler=scheduler,
                loss_fn=loss_fn,
                map_location=device,
            )
        except (ValueError, TypeError) as err:
            raise _WorkerFailure({"kind": "value", "message": str(err)}) from err
    extra = info["extra"] if isinstance(info["extra"], dict) else {}
    return int(info["epoch"]), list(extra.get("history", [])), extra


def _train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point: turn deterministic errors into records the driver can re-raise."""
    spec: _WorkerSpec = loop_config["spec"]
    prior = ray.get(spec.fatal.get.remote())
    if prior is not None:  # a retry would only hit the same error again
        raise _WorkerFailure(prior)
    try:
        _train_worker(spec)
    except NonFiniteLossError as err:
        record = {
            "kind": "nonfinite",
            "step": err.step,
            "ids": list(err.ids),
            "value": err.value,
            "message": str(err),
        }
        ray.get(spec.fatal.put.remote(record))
        raise _WorkerFailure(record) from None
    except _WorkerFailure as err:
        ray.get(spec.fatal.put.remote(err.record))
        raise


def _train_worker(spec: _WorkerSpec) -> None:
    """The training loop proper: builds everything from rmd_ray.nn and reports once per epoch."""
    from ray.train.torch import get_device, prepare_model

    from rmd_ray.core.metrics import evaluate_predictions

    cfg = spec.config
    worker_setup(threads=1)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = get_device()
    torch.manual_seed(cfg.seed)  # same initial weights on every rank (DDP broadcasts rank 0's anyway)
    model = build_model(cfg.model, num_classes=spec.num_classes, cifar_stem=cfg.cifar_stem, width=cfg.width)
    model = prepare_model(model)  # to device; DDP when world > 1
    loss_fn = build_loss(cfg.loss, **spec.loss_kwargs).to(device)
    optimizer = engine.build_optimizer(model, cfg.optim)
    scheduler = engine.build_scheduler(optimizer, cfg.optim, steps_per_epoch=spec.steps_per_epoch)
    start, history, extra = _restore(spec, model, optimizer, scheduler, loss_fn, device)
    mean_list, std_list = extra.get("mean", spec.mean), extra.get("std", spec.std)
    mean = torch.tensor(mean_list, dtype=torch.float32, device=device).mul_(255).view(1, -1, 1, 1)
    std = torch.tensor(std_list, dtype=torch.float32, device=device).mul_(255).view(1, -1, 1, 1)
    train_shard = ray.train.get_dataset_shard("train")
    val_data = ray.train.get_dataset_shard("val")
    resumed_from = start
    for epoch in range(start, cfg.optim.epochs):
        if spec.epoch_hook is not None:
            spec.epoch_hook(epoch)
        tic = time.perf_counter()
        gen = torch.Generator().manual_seed(_mix(cfg.seed, epoch, rank, 1))
        batches = train_shard.iter_torch_batches(
            batch_size=cfg.batch_size,
            device=device,
            drop_last=spec.drop_last,
            local_shuffle_buffer_size=spec.shuffle_buffer,
            local_shuffle_seed=_mix(cfg.seed, epoch, rank, 0),
        )
        stats = engine.train_one_epoch(
            model,
            _batches(batches, mean, std),
            loss_fn,
            optimizer,
            scheduler=scheduler,
            device=device,
            amp=cfg.amp,
            augment=functools.partial(engine.random_crop_flip, generator=gen) if cfg.augment else None,
        )
        loss_sum, correct, n = stats["loss"] * stats["n"], stats["acc"] * stats["n"], stats["n"]
        if world > 1:  # every rank saw a different shard: average over all samples
            t = torch.tensor([loss_sum, correct, n], dtype=torch.float64, device=device)
            torch.distributed.all_reduce(t)
            loss_sum, correct, n = t.tolist()
        metrics: dict[str, float] = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / n,
            "train_acc": correct / n,
            "lr": float(optimizer.param_groups[0]["lr"]),
            "resumed_from": resumed_from,
        }
        last = epoch + 1 == cfg.optim.epochs
        evaluate = last or (epoch + 1) % cfg.eval_every == 0
        if rank == 0 and evaluate:
            val = _evaluate(_inner(model), val_data, spec, device, mean, std)
            metrics.update({f"val_{k}": float(v) for k, v in evaluate_predictions(*val).items()})
        metrics["time_s"] = time.perf_counter() - tic
        _report(spec, rank, epoch, metrics, history, model, optimizer, scheduler, loss_fn, mean_list, std_list)


def _evaluate(model, val_data, spec: _WorkerSpec, device, mean, std) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels over the whole validation set, one row per id (dedupe: padded shards repeat)."""
    batches = val_data.iter_torch_batches(batch_size=spec.config.batch_size, device=device)
    ids, labels, logits = engine.predict(model, _batches(batches, mean, std), device=device, amp=spec.config.amp)
    uniq, first = np.unique(ids, return_index=True)
    if len(uniq) != spec.n_val:
        raise RuntimeError(f"validation returned {len(uniq)} distinct ids, expected {spec.n_val}")
    return logits[first], labels[first]


def _report(spec, rank, epoch, metrics, history, model, optimizer, scheduler, loss_fn, mean, std) -> None:
    """``ray.train.report`` on every rank (it is a barrier); rank 0 attaches the checkpoint."""
    if rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    history.append(dict(metrics))
    # the ranking metric must be present in every report: NaN (= not evaluated) ranks lowest
    reported = {**metrics}
    reported.setdefault(_SCORE_METRIC, float("nan"))
    with tempfile.TemporaryDirectory() as tmp:
        engine.save_checkpoint(
            Path(tmp) / CHECKPOINT_FILE,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            loss_fn=loss_fn,
            epoch=epoch + 1,
            extra={
                "history": history,
                "mean": list(mean),
                "std": list(std),
                "num_classes": spec.num_classes,
                "seed": spec.config.seed,
                "image_size": spec.config.image_size,  # the input size the model was trained at
            },
        )
        ray.train.report(
            reported,
            checkpoint=ray.train.Checkpoint.from_directory(tmp),
            # unique: an attempt that crashed may have uploaded this epoch without registering it
            checkpoint_dir_name=f"epoch_{epoch + 1:04d}_{uuid.uuid4().hex[:8]}",
        )


# ------------------------------------------------------------------------------------ driver side


def _num_classes(train: pa.Table, labels: list[np.ndarray]) -> int:
    top = max(int(lab.max()) for lab in labels) + 1
    meta = train.schema.metadata or {}
    if b"classes" in meta:
        from rmd_ray.data.readers import table_classes

        k = len(table_classes(train))
        if top > k:
            raise ValueError(f"a label is {top - 1} but the training table names only {k} classes")
        return k
    return top


def _checkpoint_file(path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT_FILE
    if not p.is_file():
        raise ValueError(f"resume_from={os.fspath(path)!r} is not a checkpoint file or a folder with {CHECKPOINT_FILE}")
    return p


def _check_cluster(cfg: TrainConfig) -> None:
    resources = ray.cluster_resources()
    need = cfg.num_workers * float(cfg.cpus_per_worker)
    have = resources.get("CPU", 0.0)
    if have < need:
        raise ValueError(
            f"{cfg.num_workers} workers x {cfg.cpus_per_worker} CPUs need {need:g} CPUs but the Ray cluster "
            f"has {have:g}; lower num_workers or cpus_per_worker (fractions are fine)"
        )
    if have - need < 0.5:
        log.warning(
            "training reserves %.3g of %.3g CPUs; Ray Data tasks may wait for a CPU (docs/design.md section 6)",
            need,
            have,
        )
    if cfg.use_gpu and resources.get("GPU", 0.0) < cfg.num_workers:
        raise ValueError(
            f"use_gpu=True with {cfg.num_workers} workers needs {cfg.num_workers} GPUs but the cluster has "
            f"{resources.get('GPU', 0.0):g}; set use_gpu=False or lower num_workers"
        )


def _worker_error(err: BaseException, fatal_record: dict | None, ids: list[str]) -> BaseException:
    """The error to show the caller for a failed ``fit()``."""
    record = fatal_record
    if record is None:
        for failure in getattr(err, "worker_failures", {}).values():
            if isinstance(failure, _WorkerFailure):
                record = failure.record
                break
    if record is not None and record["kind"] == "nonfinite":
        return NonFiniteLossError(step=record["step"], ids=[ids[i] for i in record["ids"]], value=record["value"])
    if record is not None:
        return ValueError(record["message"])
    failures = getattr(err, "worker_failures", None)
    if failures:
        rank, failure = sorted(failures.items())[0]
        return RuntimeError(f"training failed on worker rank {rank}: {type(failure).__name__}: {failure}")
    return RuntimeError(f"training failed: {err}")


def _predict_arrays(model, images, labels, mean, std, *, batch_size, device) -> tuple[np.ndarray, np.ndarray]:
    mean_t = torch.tensor(mean, dtype=torch.float32).mul_(255).view(1, -1, 1, 1).to(device)
    std_t = torch.tensor(std, dtype=torch.float32).mul_(255).view(1, -1, 1, 1).to(device)

    def batches():
        for s in range(0, len(labels), batch_size):
            img = torch.from_numpy(images[s : s + batch_size]).to(device)
            yield {
                "image": _normalise(img, mean_t, std_t),
                "label": torch.from_numpy(labels[s : s + batch_size]),
                "id": torch.arange(s, s + img.shape[0]),
            }

    idx, _, logits = engine.predict(model, batches(), device=device)
    assert np.array_equal(idx, np.arange(len(labels)))
    return logits, labels


def _predictions_table(ids: list[str], labels: np.ndarray, logits: np.ndarray) -> pa.Table:
    n, k = logits.shape
    values = pa.array(np.ascontiguousarray(logits, dtype=np.float32).reshape(-1), type=pa.float32())
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * k, type=pa.int32())
    return pa.table(
        {
            "id": pa.array(ids, type=pa.string()),
            "label": pa.array(labels, type=pa.int64()),
            "logits": pa.ListArray.from_arrays(offsets, values),
        }
    )


def _best(result, last_path: str) -> str:
    best, best_score = last_path, -math.inf
    for checkpoint, metrics in getattr(result, "best_checkpoints", None) or []:
        score = (metrics or {}).get(_SCORE_METRIC, float("nan"))
        if isinstance(score, (int, float)) and math.isfinite(score) and score > best_score:
            best, best_score = checkpoint.path, score
    return best


def run_training(
    train_table: pa.Table,
    *,
    val_table: pa.Table,
    test_table: pa.Table | None = None,
    scores: pa.Table | None = None,
    config: TrainConfig,
    output_dir: str | os.PathLike,
    run_name: str,
    resume_from: str | os.PathLike | None = None,
    epoch_hook: Callable[[int], None] | None = None,
    callbacks: Sequence[Any] = (),
) -> TrainingResult:
    """Train ``config.model`` with ``config.loss`` on Ray Train and write the predictions.

    Parameters
    ----------
    train_table, val_table, test_table : pyarrow.Table
        Reader tables (``rmd_ray.data.readers``); ids unique within each. Validation metrics are
        computed every ``config.eval_every`` epochs; the test split (optional) is only predicted.
    scores : pyarrow.Table, optional
        The ``scores.parquet`` table (``id``, ``weight``, ...). Required for losses that need
        weights (``proposed``), joined by id; ignored by the others.
    config : TrainConfig
    output_dir : path
        Ray storage path: checkpoints and predictions (``predictions_<split>.parquet``) go to
        ``<output_dir>/<run_name>/``. On a multi-node cluster it must be shared
        storage. Running again with the same ``output_dir`` and ``run_name`` continues that run
        from its latest checkpoint (Ray Train restores the run).
    run_name : str
    resume_from : path, optional
        A checkpoint (``model.pt`` written by ``engine.save_checkpoint``, or a Ray checkpoint folder
        holding one) to continue from: model, optimiser, schedule and epoch count. It must come from
        the same model (else ValueError before anything starts) and have fewer than
        ``optim.epochs`` finished epochs. A checkpoint of the Ray run itself takes precedence.
    epoch_hook : callable, optional
        ``epoch_hook(epoch)`` is called on every worker before each epoch (0-based index), e.g.
        for logging or fault injection in tests; it must be picklable.
    callbacks : sequence of Ray Train callbacks
        Passed to ``RunConfig(callbacks=...)``; Ray Tune trials pass ``TuneReportCallback()`` so every
        epoch's metrics reach Tune.

    Returns
    -------
    TrainingResult

    Raises
    ------
    NonFiniteLossError
        The training loss became NaN / inf; the message names the step and the sample ids (strings).
    ValueError
        Bad input (see :func:`join_weights`, :func:`prepare_arrays`), a ``resume_from`` checkpoint
        from another model, or too few CPUs / GPUs in the Ray cluster for ``config``.
    RuntimeError
        Any other worker failure after ``config.max_failures`` restarts.
    """
    from ray.data import DataContext
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if not isinstance(run_name, str) or not run_name or os.sep in run_name:
        raise ValueError(f"run_name must be a non-empty folder name, got {run_name!r}")
    if epoch_hook is not None and not callable(epoch_hook):
        raise TypeError("epoch_hook must be callable(epoch) or None")
    cfg = config
    train_table = _check_table(train_table, "train_table")
    val_table = _check_table(val_table, "val_table")
    if test_table is not None:
        test_table = _check_table(test_table, "test_table")
    needs_weights = cfg.loss in _WEIGHTED_LOSSES
    if needs_weights and scores is None:
        raise ValueError(
            f"loss {cfg.loss!r} needs per-sample difficulty weights: pass scores= (the scores.parquet table "
            "from rmd-ray score), or choose another loss"
        )
    loss_kwargs = cfg.loss_kwargs
    if cfg.loss in _SIZED_LOSSES:
        if loss_kwargs.setdefault("num_samples", train_table.num_rows) != train_table.num_rows:
            raise ValueError(
                f"loss {cfg.loss!r}: num_samples={loss_kwargs['num_samples']} but the training table has "
                f"{train_table.num_rows} rows; leave num_samples out (it is filled in)"
            )
    weights_for_ids = None
    if needs_weights:
        weights_for_ids = join_weights(train_table.column("id").to_pylist(), scores)  # fail before decoding

    tic = time.perf_counter()
    split_arrays = {
        "train": prepare_arrays(train_table, image_size=cfg.image_size),
        "val": prepare_arrays(val_table, image_size=cfg.image_size),
    }
    if test_table is not None:
        split_arrays["test"] = prepare_arrays(test_table, image_size=cfg.image_size)
    shape = split_arrays["train"][0].shape[1:]
    for split, (imgs, _, _) in split_arrays.items():
        if imgs.shape[1:] != shape:
            raise ValueError(
                f"{split} images are {imgs.shape[3]}x{imgs.shape[2]} but training images are "
                f"{shape[2]}x{shape[1]}; set image_size so that all splits match"
            )
    num_classes = _num_classes(train_table, [a[1] for a in split_arrays.values()])
    images, labels, ids = split_arrays["train"]
    weights = weights_for_ids

    n_train = len(labels)
    shard_rows = n_train // cfg.num_workers  # streaming_split(equal=True) gives equal shards
    if shard_rows < 2:
        raise ValueError(f"{n_train} training rows for {cfg.num_workers} workers: each worker needs >= 2")
    drop_last = shard_rows % cfg.batch_size == 1  # a lone last sample would break BatchNorm
    steps_per_epoch = shard_rows // cfg.batch_size if drop_last else math.ceil(shard_rows / cfg.batch_size)
    bytes_per_row = int(np.prod(shape)) + 24
    shuffle_buffer = int(min(shard_rows, max(cfg.batch_size, _SHUFFLE_BUFFER_BYTES // bytes_per_row)))

    initial_ref = None
    if resume_from is not None:
        ckpt_file = _checkpoint_file(resume_from)
        probe = build_model(cfg.model, num_classes=num_classes, cifar_stem=cfg.cifar_stem, width=cfg.width)
        done = engine.load_checkpoint(ckpt_file, model=probe)["epoch"]  # ValueError: another model
        if done >= cfg.optim.epochs:
            raise ValueError(
                f"resume_from checkpoint has already finished {done} epochs and optim.epochs is "
                f"{cfg.optim.epochs}; raise optim.epochs to train further"
            )
        payload = torch.load(ckpt_file, map_location="cpu", weights_only=True)
        stateless = [k for k in ("optimizer", "scheduler") if payload.get(k) is None]
        if stateless:
            raise ValueError(
                f"resume_from checkpoint {os.fspath(ckpt_file)} holds no {' / '.join(stateless)} state "
                "(a weights-only checkpoint), so training cannot continue from it; use a checkpoint "
                "written during training"
            )
        del payload

    log.info("decoded %d training images in %.1f s", len(labels), time.perf_counter() - tic)
    init_ray()
    if resume_from is not None:
        initial_ref = ray.put(ckpt_file.read_bytes())  # reaches workers on any node
    _check_cluster(cfg)
    tic = time.perf_counter()
    mean, std = _channel_stats(images)
    train_ds = _dataset(images, labels, weights, seed=cfg.seed, n_blocks_min=4 * cfg.num_workers)
    val_imgs, val_labels, _ = split_arrays["val"]
    val_ds = _dataset(val_imgs, val_labels, None, seed=None, n_blocks_min=1)
    log.info("datasets ready in %.1f s", time.perf_counter() - tic)
    fatal = _FatalErrors.remote()
    spec = _WorkerSpec(
        config=cfg,
        num_classes=num_classes,
        n_train=n_train,
        n_val=len(val_labels),
        loss_kwargs=loss_kwargs,
        mean=mean,
        std=std,
        steps_per_epoch=steps_per_epoch,
        drop_last=drop_last,
        shuffle_buffer=shuffle_buffer,
        fatal=fatal,
        initial_checkpoint=initial_ref,
        epoch_hook=epoch_hook,
    )
    # the driver context's options (resource limits, ...) with a fixed row order: shuffling is seeded
    # per epoch instead, so a run (and a resumed epoch) is reproducible
    ingest = copy.deepcopy(DataContext.get_current().execution_options)
    ingest.preserve_order = True
    storage = Path(output_dir).resolve()
    storage.mkdir(parents=True, exist_ok=True)
    trainer = TorchTrainer(
        _train_loop_per_worker,
        train_loop_config={"spec": spec},
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers,
            use_gpu=cfg.use_gpu,
            resources_per_worker={"CPU": float(cfg.cpus_per_worker)},
        ),
        run_config=RunConfig(
            storage_path=str(storage),
            name=run_name,
            callbacks=list(callbacks),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=CheckpointConfig(
                num_to_keep=2, checkpoint_score_attribute=_SCORE_METRIC, checkpoint_score_order="max"
            ),
        ),
        datasets={"train": train_ds, "val": val_ds},
        dataset_config=DataConfig(datasets_to_split=["train"], execution_options=ingest),
    )
    try:
        tic = time.perf_counter()
        result = trainer.fit()
        log.info("fit() took %.1f s", time.perf_counter() - tic)
    except Exception as err:  # TrainingFailedError (WorkerGroupError / ControllerError)
        try:
            record = ray.get(fatal.get.remote(), timeout=30)
        except Exception:  # the actor is gone: fall back to the worker failures in err
            record = None
        raise _worker_error(err, record, ids) from err
    finally:
        with contextlib.suppress(Exception):
            ray.kill(fatal)
    if result.checkpoint is None:
        raise RuntimeError(f"training finished without a checkpoint in {result.path}")
    return _finish(result, cfg, split_arrays, num_classes, storage, run_name)


def _finish(result, cfg: TrainConfig, split_arrays, num_classes: int, storage: Path, run_name: str) -> TrainingResult:
    """Driver side after ``fit()``: load the last checkpoint, predict val (and test), write Parquet."""
    from rmd_ray.core.metrics import evaluate_predictions

    last_path = result.checkpoint.path
    device = torch.device("cuda" if cfg.use_gpu and torch.cuda.is_available() else "cpu")
    model = build_model(cfg.model, num_classes=num_classes, cifar_stem=cfg.cifar_stem, width=cfg.width)
    with result.checkpoint.as_directory() as folder:
        info = engine.load_checkpoint(Path(folder) / CHECKPOINT_FILE, model=model)
    model.to(device)
    extra = info["extra"]
    history = [dict(h) for h in extra.get("history", [])]
    for h in history:  # NaN val keys only mark "not evaluated" for Ray's ranking; drop them here
        for k in [k for k, v in h.items() if k.startswith("val_") and isinstance(v, float) and math.isnan(v)]:
            del h[k]
    final_val = {k[4:]: v for k, v in history[-1].items() if k.startswith("val_")} if history else {}
    meta = {
        "model": cfg.model,
        "width": cfg.width,
        "cifar_stem": cfg.cifar_stem,
        "loss": cfg.loss,
        "loss_hparams": dict(cfg.loss_hparams),
        "epochs": int(info["epoch"]),
        "seed": cfg.seed,
        "batch_size": cfg.batch_size,
        "lr": cfg.optim.lr,
        "image_size": cfg.image_size,
        "mean": extra.get("mean"),
        "std": extra.get("std"),
        "checkpoint": last_path,
        "run_name": run_name,
        "rmd_ray_version": __version__,
    }
    predictions: dict[str, Path] = {}
    test_metrics = None
    for split in ("val", "test"):
        if split not in split_arrays:
            continue
        images, labels, ids = split_arrays[split]
        logits, labels = _predict_arrays(
            model, images, labels, extra["mean"], extra["std"], batch_size=cfg.batch_size, device=device
        )
        # beside the run's checkpoints: two runs sharing an output_dir (the main job's proposed and CE)
        # must not overwrite each other's predictions
        path = storage / run_name / f"predictions_{split}.parquet"
        predictions[split] = write_parquet_atomic(
            _predictions_table(ids, labels, logits), path, metadata={**meta, "split": split}
        )
        if split == "test":
            test_metrics = {k: float(v) for k, v in evaluate_predictions(logits, labels).items()}
    return TrainingResult(
        epochs=history,
        final_val=final_val,
        last_checkpoint=last_path,
        best_checkpoint=_best(result, last_path),
        predictions=predictions,
        predictions_path=predictions.get("test", predictions["val"]),
        test_metrics=test_metrics,
        run_path=str(result.path),
    )

"""Training configuration and result: what travels to every worker and what a run returns."""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rmd_ray.core.difficulty import DIFFICULTY_SOURCES
from rmd_ray.core.weights import WeightConfig
from rmd_ray.nn.engine import OptimConfig
from rmd_ray.nn.losses import LOSSES, build_loss
from rmd_ray.nn.models import MIN_WIDTH, check_model_name

__all__ = ["CHECKPOINT_FILE", "TrainConfig", "TrainingResult", "loss_needs_weights"]

CHECKPOINT_FILE = "model.pt"  # inside every Ray checkpoint directory (engine.save_checkpoint format)

# Losses that read the per-sample difficulty weight s (each loss declares it: only the paper's loss).
WEIGHTED_LOSSES = frozenset(name for name in LOSSES.names() if LOSSES.get(name).needs_weights)
# Losses whose hyper-parameter is the training-set size, filled in here (ids index its history).
SIZED_LOSSES = frozenset({"crl"})
SCORE_METRIC = "val_acc"  # ranks checkpoints for "best"; latest is always kept as well


def loss_needs_weights(name: str) -> bool:
    """Whether loss ``name`` needs per-sample difficulty weights (i.e. a ``scores.parquet``)."""
    LOSSES.get(name)  # ValueError listing the valid names
    return name in WEIGHTED_LOSSES


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
        A name from ``rmd_ray.nn.models.MODELS`` (resnet18, resnet34, ...), or ``timm:<name>`` /
        ``torchvision:<name>`` (another library's classifier, random init, width 1).
    model_weights : str or None
        A state dict (torch ``.pt`` / ``.pth`` read weights-only, or ``.safetensors``; a local path or a
        storage URI) the model starts from instead of its random init, e.g. ImageNet weights of a
        ``timm:`` model saved once elsewhere. Its classifier head is dropped (left random) when its
        size differs from the data's classes; any other difference fails before training
        (:mod:`rmd_ray.nn.initial_weights`). A restart or ``resume_from`` loads its checkpoint instead.
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
    decode_cpus : float
        Logical CPUs each read + decode task asks for, in (0, 64]. Fractional by default: under Tune
        the trial's own small reservation (0.01 CPU) and a worker group's placement group being
        torn down can leave just under one CPU free, and a 1-CPU task would then wait forever
        (seen here as a hang).
    decode_tasks : int or None
        Most read + decode tasks in flight for the training split, >= 1. None: the CPUs the training
        workers leave free (the cluster's CPUs, less the extra logical CPU a local instance declares,
        less ``num_workers * cpus_per_worker``), at least 1. More tasks than free cores only
        contend with the training step, and each fresh task process costs a start-up at the first
        epoch's first batch (docs/design.md 7.7).
    shards_per_task : int
        Shards one training read task reads and interleaves, >= 1 (default 8). A class-sorted source
        (ImageFolder; the CIFAR-10 Parquet) holds one or two classes per shard, and the worker's local
        buffer only mixes a few blocks: with one shard per task, batches hold one or two classes and a
        class-sorted CIFAR-10 trains far below the in-process accuracy (docs/benchmarks.md).
        Memory: a task holds its group's encoded images (ImageNet JPEGs, 512-row shards: ~56 MB a
        shard). Pre-shuffled Parquet needs no mixing (1 is enough).
    use_gpu : bool
        One GPU per worker.
    placement_strategy : {"PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"}
        How Ray places the workers (``ScalingConfig``): ``PACK`` (default) keeps them on as few nodes
        as possible; ``SPREAD`` puts them on different nodes where it can and still packs them onto
        the nodes left when one is lost.
    amp : bool
        bfloat16 autocast; only effective on GPU (ignored on CPU).
    image_size : int or None
        The model's input side. ``cifar`` preset: every image resized to ``image_size`` x
        ``image_size`` (bilinear), None keeps the native size (then the same for every image).
        ``imagenet`` preset: the crop size (None: 224).
    preset : {"auto", "cifar", "imagenet"}
        Geometry and augmentation (``rmd_ray.nn.transforms``): ``cifar`` pad-4 random crop + flip,
        ``imagenet`` RandomResizedCrop + flip (eval: resize 256 / center crop 224, scaled to
        ``image_size``). ``auto``: ``cifar`` up to 64 px a side, else ``imagenet``.
    normalization : {"auto", "data", "imagenet"}
        Channel mean / std: ``data`` from one streaming pass over the training images (eval
        geometry), ``imagenet`` torchvision's ImageNet statistics; ``auto``: ``data`` for the
        ``cifar`` preset, ``imagenet`` for the ``imagenet`` preset (a pass over 1.28 M images buys
        nothing over the published statistics).
    augment : bool
        Training augmentation of the preset (off: the eval geometry, no flips).
    shuffle : {"fresh", "seeded"}
        ``fresh``: a new shard order and row order within each shard every epoch (drawn in the read
        tasks, not reproducible bit for bit). ``seeded``: both fixed by ``seed``, so a run, and a
        resumed epoch, is reproducible; epochs then differ only through the workers' local shuffle
        buffer (seeded by seed, epoch, rank).
    shuffle_buffer_rows : int or None
        Rows in each worker's local shuffle buffer (Ray yields a batch only once it holds that many);
        None: eight batches, capped at 256 MB of uint8 pixels and at the worker's shard; 0 turns it off.
    seed : int
        Seeds model initialisation, the one-off row permutation, shuffling and augmentation.
    max_failures : int
        Worker failures Ray Train recovers from (restarting from the latest checkpoint); -1 for no limit.
    min_workers : int or None
        None (default): always ``num_workers`` workers; a lost node is replaced or the run stops (see
        ``placement_timeout_s``). An int in [1, num_workers]: elastic training (Ray Train's
        ``ScalingConfig(num_workers=(min_workers, num_workers))``): the group starts, and restarts after a
        loss, with as many workers as the cluster holds, at least ``min_workers``, and grows back when room
        returns. Each worker's share of the rows, its steps per epoch and the schedule's position follow the
        group's size; the per-worker batch stays ``batch_size``, so the global batch shrinks with the group.
    placement_timeout_s : float
        Seconds, > 0, the run waits for the cluster to place its worker group (at the start, or after
        losing workers) before it stops with a ``WorkerCapacityError`` naming the last checkpoint; checked
        between Ray Train's start attempts, which wait ``RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S`` (60 s)
        each. Long enough by default for an autoscaler to add a node.
    eval_every : int
        Evaluate on the validation set every ``eval_every`` epochs (and always after the last).
    difficulty : str or None
        None (default): the ``weight`` column of the scores as ``rmd-ray score`` wrote it. A name in
        ``rmd_ray.core.difficulty.DIFFICULTY_SOURCES`` (``rmd``, ``md``, ``kmeans``, ``loss``,
        ``shuffled_rmd``, ``uniform``): the weights recomputed from that source's column with
        ``weight_config`` (and ``seed`` for ``shuffled_rmd``), in the task that indexes them.
    weight_config : WeightConfig
        T, c and normalisation of the recomputed weights; read only when ``difficulty`` is set.
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
    decode_cpus: float = 0.5
    decode_tasks: int | None = None
    shards_per_task: int = 8
    use_gpu: bool = False
    placement_strategy: str = "PACK"
    amp: bool = True
    image_size: int | None = None
    preset: str = "auto"
    normalization: str = "auto"
    augment: bool = True
    shuffle: str = "fresh"
    shuffle_buffer_rows: int | None = None
    seed: int = 0
    max_failures: int = 2
    min_workers: int | None = None
    placement_timeout_s: float = 600.0
    eval_every: int = 1
    difficulty: str | None = None
    weight_config: WeightConfig = field(default_factory=WeightConfig)
    model_weights: str | None = None

    def __post_init__(self) -> None:
        check_model_name(self.model)  # ValueError listing the valid models
        if self.model_weights is not None:
            if not isinstance(self.model_weights, (str, os.PathLike)) or not os.fspath(self.model_weights):
                raise ValueError(
                    f"TrainConfig.model_weights must be None or the path / URI of a state dict file, "
                    f"got {self.model_weights!r}"
                )
            object.__setattr__(self, "model_weights", os.fspath(self.model_weights))
        if ":" in self.model and self.width != 1.0:
            raise ValueError(f"TrainConfig.width {self.width!r} applies to the built-in models; {self.model} is built "
                             "at its own width (width=1.0, or --width 1)")
        if self.difficulty is not None:
            DIFFICULTY_SOURCES.get(self.difficulty)  # ValueError listing the sources
        if not isinstance(self.weight_config, WeightConfig):
            raise ValueError(
                "TrainConfig.weight_config must be an rmd_ray.core.WeightConfig, got "
                f"{type(self.weight_config).__name__}"
            )
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
        if self.loss in SIZED_LOSSES:
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
        if self.min_workers is not None and (not _is_int(self.min_workers)
                                             or not 1 <= self.min_workers <= self.num_workers):
            raise ValueError(
                f"TrainConfig.min_workers must be None (always num_workers) or an int in [1, num_workers="
                f"{self.num_workers}] (elastic training), got {self.min_workers!r}"
            )
        wait = self.placement_timeout_s
        if isinstance(wait, bool) or not isinstance(wait, numbers.Real) or not math.isfinite(wait) or wait <= 0:
            raise ValueError(f"TrainConfig.placement_timeout_s must be a number of seconds > 0, got {wait!r}")
        cpw = self.cpus_per_worker
        if isinstance(cpw, bool) or not isinstance(cpw, numbers.Real) or not math.isfinite(cpw) or cpw <= 0:
            raise ValueError(f"TrainConfig.cpus_per_worker must be a number > 0 (e.g. 0.5), got {cpw!r}")
        if self.image_size is not None and (not _is_int(self.image_size) or self.image_size < 1):
            raise ValueError(
                f"TrainConfig.image_size must be None (native size) or an int >= 1, got {self.image_size!r}"
            )
        for name, valid in (
            ("preset", ("auto", "cifar", "imagenet")),
            ("normalization", ("auto", "data", "imagenet")),
            ("shuffle", ("fresh", "seeded")),
            ("placement_strategy", ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")),
        ):
            if getattr(self, name) not in valid:
                raise ValueError(f"TrainConfig.{name} must be one of {valid}, got {getattr(self, name)!r}")
        dc = self.decode_cpus
        if isinstance(dc, bool) or not isinstance(dc, numbers.Real) or not 0 < dc <= 64:
            raise ValueError(f"TrainConfig.decode_cpus must be a number in (0, 64], got {dc!r}")
        tasks = self.decode_tasks
        if tasks is not None and (not _is_int(tasks) or tasks < 1):
            raise ValueError(f"TrainConfig.decode_tasks must be None (auto) or an int >= 1, got {tasks!r}")
        if not _is_int(self.shards_per_task) or self.shards_per_task < 1:
            raise ValueError(f"TrainConfig.shards_per_task must be an int >= 1, got {self.shards_per_task!r}")
        rows = self.shuffle_buffer_rows
        if rows is not None and (not _is_int(rows) or rows < 0):
            raise ValueError(f"TrainConfig.shuffle_buffer_rows must be None or an int >= 0, got {rows!r}")

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
        (finished epochs when the attempt that ran this epoch started), ``workers`` (the group's size;
        elastic runs may go on with fewer) and, on evaluated epochs,
        ``val_*`` from ``rmd_ray.core.metrics.evaluate_predictions`` (``val_acc``, ``val_ece_mass``,
        ``val_ece_width``, ``val_nll``, ...).
    final_val : dict
        The ``val_*`` metrics of the last epoch (always evaluated), without the prefix.
    last_checkpoint, best_checkpoint : str
        Ray checkpoint directories (each holds ``model.pt``); best by ``val_acc``.
    predictions : dict
        Split name (``"val"``, ``"test"``) -> the predictions directory (Parquet parts + manifest,
        any URI) of the last checkpoint; empty when ``run_training(..., predict=False)``.
    predictions_path : str or None
        ``predictions["test"]`` when a test source was given, else ``predictions["val"]`` (None without
        predictions).
    test_metrics : dict or None
        ``evaluate_predictions`` on the test split with the last checkpoint.
    run_path : str
        The Ray run directory (``<output_dir>/<run_name>``).
    """

    epochs: list[dict[str, float]]
    final_val: dict[str, float]
    last_checkpoint: str
    best_checkpoint: str
    predictions: dict[str, str]
    predictions_path: str | None
    test_metrics: dict[str, float] | None
    run_path: str


# --------------------------------------------------------------------------------------------- data


"""The driver of a training run: plan the sources, start Ray Train on lazy datasets, predict in Ray.

The driver holds the shard plans, the configuration, the channel statistics and the run's metrics;
never images, weights or predictions (docs/design.md section 7.7)::

    sources --plan (footers, class folders)--> shards
    scores --build_weight_index (a task)--> sorted ids + weights in the object store
    train: shards --decode + crop (tasks)--> streaming_split(equal) --> TorchTrainer workers
    val:   shards --decode (tasks)--> rank 0 evaluates every eval_every epochs
    last checkpoint --predict_source (actor pool)--> <output>/<run>/predictions_{val,test}.parquet/

Choices that matter (docs/design.md section 6 lists the hangs they avoid): fractional
``resources_per_worker`` leave CPUs to the decode tasks; one torch thread per worker; equal shards
and ``drop_last`` when a lone sample would be left, so data-parallel workers take the same steps.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from rmd_ray.distributed.runtime.cluster import forced_cpu, init_ray
from rmd_ray.distributed.sources.plan import ShardedSource
from rmd_ray.distributed.training import ingest
from rmd_ray.distributed.training.capacity import PlacementWatchdog, capacity_error
from rmd_ray.distributed.training.config import SCORE_METRIC, WEIGHTED_LOSSES, TrainConfig, TrainingResult
from rmd_ray.distributed.training.errors import FatalErrors, worker_error
from rmd_ray.distributed.training.finish import finish_run, storage_location, uri_in
from rmd_ray.distributed.training.inputs import (
    Source,
    check_class_lists,
    check_cluster,
    check_initial_weights,
    check_resume,
    check_sized_loss,
    check_source,
    checkpoint_file,
    decode_tasks,
    normalization_stats,
    plan_source,
    resolve_geometry,
)
from rmd_ray.distributed.training.weight_join import build_weight_index, check_weights_cover, lookup_weights
from rmd_ray.distributed.training.worker import WorkerSpec, train_loop_per_worker

__all__ = ["TRAIN_SHARD_ROWS", "run_training"]

log = logging.getLogger("rmd_ray.training")

_SHUFFLE_BUFFER_BYTES = 256 * 2**20
#: Rows per shard when ``run_training`` plans a spec or a table: smaller than scoring's, so an epoch has
#: enough read tasks to overlap with the first steps and to re-order (a class folder is never cut).
TRAIN_SHARD_ROWS = 512


@dataclass(frozen=True)
class _Plan:
    """What the driver knows before ``fit()``: shard plans, classes, geometry, statistics, object refs."""

    sources: dict[str, ShardedSource]
    num_classes: int
    geometry: ingest.Geometry
    mean: list[float]
    std: list[float]
    loss_kwargs: dict[str, Any]
    weights_ref: Any
    initial_ref: Any
    init_weights_ref: Any  # ObjectRef of the fitted --model-weights state dict, or None


def run_training(
    train: Source,
    *,
    val: Source,
    test: Source | None = None,
    scores: str | pa.Table | None = None,
    config: TrainConfig,
    output_dir: str | os.PathLike,
    run_name: str,
    resume_from: str | os.PathLike | None = None,
    epoch_hook: Callable[[int], None] | None = None,
    callbacks: Sequence[Any] = (),
    channel_stats: tuple[Sequence[float], Sequence[float]] | None = None,
    shard_rows: int = TRAIN_SHARD_ROWS,
    predict: bool = True,
) -> TrainingResult:
    """Train ``config.model`` with ``config.loss`` on Ray Train from lazily read sources; predict in Ray.

    Parameters
    ----------
    train, val, test : str, ShardedSource or pyarrow.Table
        Source specs (``folder:ROOT``, ``parquet:URI``, ``imagenet-val:ROOT``, ``fashion-mnist:train``,
        ...; see :func:`rmd_ray.distributed.sources.plan.open_source`), planned sources, or in-memory
        reader tables (ids unique; put into the object store in slices). Validation metrics are
        computed every ``config.eval_every`` epochs; the test split (optional) is only predicted.
    scores : str or pyarrow.Table, optional
        The ``scores.parquet`` of ``rmd-ray score`` (a parts directory or file, any URI) or a table
        with ``id`` and ``weight``. Required for losses that need weights (``proposed``); joined by
        id in the read tasks (:mod:`rmd_ray.distributed.training.weight_join`); ignored by the others.
    config : TrainConfig
    output_dir : str or path
        Ray storage (local folder or URI such as ``s3://bucket/runs?endpoint_override=...``): checkpoints and
        ``predictions_<split>.parquet/`` go to ``<output_dir>/<run_name>/``; on a multi-node cluster, storage
        every node reaches. Running again with the same ``output_dir`` and ``run_name`` continues that run
        from its latest checkpoint, and its predictions from the shards already done.
    run_name : str
    resume_from : path or URI, optional
        A checkpoint (``model.pt`` of ``engine.save_checkpoint`` or its folder) to continue from: the same
        model, fewer than ``optim.epochs`` epochs.
    epoch_hook : callable, optional
        ``epoch_hook(epoch)`` on every worker before each epoch (picklable; logging, fault injection).
    callbacks : sequence of Ray Train callbacks
        Passed to ``RunConfig(callbacks=...)`` (Tune passes ``TuneReportCallback()``).
    channel_stats : (mean, std), optional
        Per-channel statistics in [0, 1] units, to skip the streaming pass (Tune computes them once).
    shard_rows : int
        Rows per shard when planning specs and tables (default :data:`TRAIN_SHARD_ROWS`).
    predict : bool
        Predict val (and test) after training (default); Tune trials pass False (``predictions`` then empty).

    Returns
    -------
    TrainingResult

    Raises
    ------
    NonFiniteLossError
        The training loss became NaN / inf; the message names the step and the sample ids.
    ValueError
        Bad input found before or while reading (an undecodable image, an id without a weight, a
        weight outside [0, 1], duplicate ids, images of different sizes without ``image_size``), a
        ``resume_from`` checkpoint from another model, or too few CPUs / GPUs for ``config``.
    WorkerCapacityError
        No room for the workers for ``config.placement_timeout_s``; names the checkpoint to rerun from.
    RuntimeError
        Any other worker failure after ``config.max_failures`` restarts.
    """
    cfg = config
    inputs = _check_inputs(train, val, test, scores, cfg, run_name=run_name, epoch_hook=epoch_hook)
    output_dir = os.fspath(output_dir)
    init_ray()
    check_cluster(cfg)
    plan = _plan_run(inputs, scores, cfg, resume_from=resume_from, channel_stats=channel_stats,
                     shard_rows=shard_rows)
    trainer, spec, fatal, storage_path = _build_trainer(plan, cfg, output_dir=output_dir, run_name=run_name,
                                                        callbacks=callbacks, epoch_hook=epoch_hook)
    result = _fit(trainer, spec, fatal, plan.sources["train"], cfg, run_uri=_run_uri(output_dir, storage_path,
                                                                                     run_name))
    return finish_run(result, cfg, plan.sources if predict else {}, plan.geometry, output_dir, storage_path,
                      run_name)


def _run_uri(output_dir: str, storage_path: str, run_name: str) -> str:
    """The run's folder (checkpoints, Ray Train's records) as a URI under ``output_dir``; absolute when local."""
    return uri_in(output_dir, storage_path, f"{storage_path.rstrip('/')}/{run_name}")


def _check_inputs(train, val, test, scores, cfg, *, run_name, epoch_hook) -> dict[str, Source]:
    """The arguments of :func:`run_training`, checked before Ray starts; in-memory tables fully."""
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(cfg).__name__}")
    if not isinstance(run_name, str) or not run_name or "/" in run_name or os.sep in run_name:
        raise ValueError(f"run_name must be a non-empty folder name, got {run_name!r}")
    if epoch_hook is not None and not callable(epoch_hook):
        raise TypeError("epoch_hook must be callable(epoch) or None")
    inputs = {"train": check_source(train, "train"), "val": check_source(val, "val")}
    if test is not None:
        inputs["test"] = check_source(test, "test")
    if cfg.loss in WEIGHTED_LOSSES and scores is None:
        raise ValueError(
            f"loss {cfg.loss!r} needs per-sample difficulty weights: pass scores= (the scores.parquet "
            "from rmd-ray score), or choose another loss"
        )
    if isinstance(inputs["train"], pa.Table):
        check_sized_loss(cfg, inputs["train"].num_rows)
    return inputs


def _plan_run(inputs, scores, cfg: TrainConfig, *, resume_from, channel_stats, shard_rows: int) -> _Plan:
    """Shard plans, the weight index, classes, a checked resume checkpoint, geometry and normalisation."""
    tic = time.perf_counter()
    if isinstance(inputs["train"], pa.Table):
        # an in-memory table is on the driver anyway: its rows go into shards in a seeded random order,
        # so every shard mixes classes (reader tables come sorted by class, as CIFAR-10's does)
        order = np.random.default_rng([cfg.seed, 2]).permutation(inputs["train"].num_rows)
        inputs = {**inputs, "train": inputs["train"].take(pa.array(order))}
    sources = {split: plan_source(value, shard_rows=shard_rows) for split, value in inputs.items()}
    train_source = sources["train"]
    loss_kwargs = check_sized_loss(cfg, train_source.n_rows)
    weights_ref = None
    if cfg.loss in WEIGHTED_LOSSES:
        difficulty = None if cfg.difficulty is None else (cfg.difficulty, cfg.weight_config, cfg.seed)
        weights_ref, _ = build_weight_index(scores, difficulty=difficulty)
        if isinstance(inputs["train"], pa.Table):  # ids in memory anyway: the whole check before anything starts
            lookup_weights(ray.get(weights_ref), inputs["train"].column("id"), labels=inputs["train"].column("label"))
        else:
            check_weights_cover(weights_ref, train_source)
    num_classes = check_class_lists(sources)
    initial_ref = init_weights_ref = None
    if resume_from is not None:
        initial_ref = ray.put(check_resume(checkpoint_file(resume_from), cfg, num_classes))
    elif cfg.model_weights is not None:
        init_weights_ref = ray.put(check_initial_weights(cfg, num_classes))
    geometry = resolve_geometry(cfg, sources)
    mean, std = (list(map(float, s)) for s in channel_stats) if channel_stats else normalization_stats(
        cfg, geometry, train_source
    )
    log.info("planned %d training rows in %d shards (%.1f s)", train_source.n_rows, len(train_source.shards),
             time.perf_counter() - tic)
    return _Plan(sources, num_classes, geometry, mean, std, loss_kwargs, weights_ref, initial_ref, init_weights_ref)


def _epoch_shapes(n_train: int, cfg: TrainConfig, side: int) -> dict[int, tuple[int, bool, int]]:
    """Group size -> (steps per epoch, drop_last, shuffle buffer rows) of each worker's equal shard; every size
    an elastic group may take (one without ``min_workers``)."""
    if n_train // cfg.num_workers < 2:
        raise ValueError(f"{n_train} training rows for {cfg.num_workers} workers: each worker needs >= 2")
    return {world: _epoch_shape(n_train, world, cfg, side)
            for world in range(cfg.min_workers or cfg.num_workers, cfg.num_workers + 1)}


def _epoch_shape(n_train: int, world: int, cfg: TrainConfig, side: int) -> tuple[int, bool, int]:
    shard_n = n_train // world  # streaming_split(equal=True) gives equal shards
    drop_last = shard_n % cfg.batch_size == 1  # a lone last sample would break BatchNorm
    steps_per_epoch = shard_n // cfg.batch_size if drop_last else math.ceil(shard_n / cfg.batch_size)
    buffer = cfg.shuffle_buffer_rows
    if buffer is None:
        # Ray yields no batch until the buffer holds this many rows: a buffer the size of the shard makes
        # the first step wait for the whole epoch's decode. Eight batches mix rows of several blocks
        # (shards are re-ordered and permuted in the tasks anyway).
        budget = _SHUFFLE_BUFFER_BYTES // (3 * side * side + 24)
        buffer = int(min(shard_n, 8 * cfg.batch_size, max(cfg.batch_size, budget)))
    return steps_per_epoch, drop_last, buffer


def _build_trainer(plan: _Plan, cfg: TrainConfig, *, output_dir: str, run_name: str, callbacks, epoch_hook):
    """The TorchTrainer over the lazy train / val datasets, its worker spec and the fatal-error record."""
    from ray.data import DataContext
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    geometry, train_source = plan.geometry, plan.sources["train"]
    side = geometry.image_size or max(geometry.native or (32, 32))
    shapes = _epoch_shapes(train_source.n_rows, cfg, side)
    # on the driver's node: a 0-CPU actor may otherwise land on a worker node, and when that node is lost
    # every restarted worker would fail reading it
    fatal = FatalErrors.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    ).remote()
    train_ds = ingest.train_dataset(
        train_source, geometry=geometry, augment=cfg.augment, weights_ref=plan.weights_ref,
        shuffle=cfg.shuffle, seed=cfg.seed, decode_cpus=cfg.decode_cpus, decode_tasks=decode_tasks(cfg),
        shards_per_task=cfg.shards_per_task,
    )
    val_source = plan.sources["val"]
    # one validation dataset per rank, over every num_workers-th shard: each worker predicts its own part
    val_parts = max(1, min(cfg.num_workers, len(val_source.shards)))
    val_ds = {
        f"val_{r}": ingest.eval_dataset(val_source, geometry=geometry, decode_cpus=cfg.decode_cpus, part=(r, val_parts))
        for r in range(val_parts)
    }
    # the driver context's options (resource limits, ...); order is kept so a seeded run is reproducible
    ingest_options = copy.deepcopy(DataContext.get_current().execution_options)
    ingest_options.preserve_order = cfg.shuffle == "seeded"
    spec = WorkerSpec(
        config=cfg, num_classes=plan.num_classes, n_val=plan.sources["val"].n_rows, loss_kwargs=plan.loss_kwargs,
        mean=plan.mean, std=plan.std, preset=geometry.preset, image_size=geometry.image_size, input_side=int(side),
        shapes=shapes, fatal=fatal,
        initial_checkpoint=plan.initial_ref, initial_weights=plan.init_weights_ref, epoch_hook=epoch_hook,
        prestarted_split=ingest.prestarted_split(train_ds, cfg.num_workers, execution_options=ingest_options),
        val_parts=val_parts,
    )
    filesystem, storage_path = storage_location(output_dir)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"spec": spec},
        # gloo when the workers' (logical) GPUs are not to be used: NCCL needs CUDA
        torch_config=TorchConfig(backend="gloo") if forced_cpu() else None,
        scaling_config=ScalingConfig(
            # elastic with min_workers: (least, most) workers, as many as the cluster holds
            num_workers=(cfg.min_workers, cfg.num_workers) if (cfg.min_workers or cfg.num_workers) < cfg.num_workers
            else cfg.num_workers, use_gpu=cfg.use_gpu,
            resources_per_worker={"CPU": float(cfg.cpus_per_worker)}, placement_strategy=cfg.placement_strategy,
        ),
        run_config=RunConfig(
            storage_path=storage_path, storage_filesystem=filesystem, name=run_name,
            callbacks=[*callbacks, PlacementWatchdog(cfg.placement_timeout_s)],  # a bounded wait for room
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=CheckpointConfig(
                num_to_keep=2, checkpoint_score_attribute=SCORE_METRIC, checkpoint_score_order="max"
            ),
        ),
        datasets={"train": train_ds, **val_ds},
        dataset_config=DataConfig(datasets_to_split=["train"], execution_options=ingest_options),
    )
    ingest.warm_decode_workers(
        decode_tasks(cfg), geometry=geometry, decode_cpus=cfg.decode_cpus, train_env=spec.prestarted_split is None,
    )
    return trainer, spec, fatal, storage_path


def _fit(trainer, spec: WorkerSpec, fatal, train_source: ShardedSource, cfg: TrainConfig, *, run_uri: str):
    """``trainer.fit()``; a failure becomes the error a user can act on (the step, the sample ids; for a group
    the cluster cannot hold, what it needs and the last checkpoint)."""
    failure = None
    try:
        tic = time.perf_counter()
        result = trainer.fit()
        log.info("fit() took %.1f s", time.perf_counter() - tic)
    except Exception as err:  # TrainingFailedError (WorkerGroupError / ControllerError)
        try:
            record = ray.get(fatal.get.remote(), timeout=30)
        except Exception:  # the actor is gone: fall back to the worker failures in err
            record = None
        failure = capacity_error(err, cfg, run_uri) or worker_error(
            err, record, lambda idx: ingest.ids_at(train_source, idx)
        )
        log.info("training failed: %s: %s", type(err).__name__, err)
    finally:
        ingest.release_split(spec.prestarted_split)
        with contextlib.suppress(Exception):
            ray.kill(fatal)
    if failure is not None:
        # Raised outside the except block and without chaining: Ray's error keeps the trainer's frames,
        # and with them the Train controller and its placement group, alive for as long as the caller
        # holds the exception (a failed run's CPUs would stay reserved and starve later work).
        del trainer
        gc.collect()
        raise failure
    if result.checkpoint is None:
        raise RuntimeError(f"training finished without a checkpoint in {result.path}")
    return result

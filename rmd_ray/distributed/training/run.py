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
import dataclasses
import gc
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
import torch

from rmd_ray import __version__
from rmd_ray.distributed.prediction.predict import classifier_from_checkpoint, predict_source
from rmd_ray.distributed.runtime.cluster import compute_cpus, init_ray
from rmd_ray.distributed.sources.plan import DEFAULT_SHARD_ROWS, ShardedSource, open_source, source_from_table
from rmd_ray.distributed.training import ingest
from rmd_ray.distributed.training.config import (
    _SIZED_LOSSES,
    _WEIGHTED_LOSSES,
    CHECKPOINT_FILE,
    SCORE_METRIC,
    TrainConfig,
    TrainingResult,
)
from rmd_ray.distributed.training.errors import FatalErrors, worker_error
from rmd_ray.distributed.training.weight_join import build_weight_index, lookup_weights
from rmd_ray.distributed.training.worker import WorkerSpec, train_loop_per_worker
from rmd_ray.io import storage
from rmd_ray.nn import engine
from rmd_ray.nn.models import build_model

__all__ = ["channel_statistics", "run_training"]

log = logging.getLogger("rmd_ray.training")

_SHUFFLE_BUFFER_BYTES = 256 * 2**20
#: Rows per shard when ``run_training`` plans a spec or a table: smaller than scoring's, so an epoch has
#: enough read tasks to overlap with the first steps and to re-order (a class folder is never cut).
TRAIN_SHARD_ROWS = 512
Source = str | pa.Table | ShardedSource


def _check_table(table: pa.Table, name: str) -> pa.Table:
    missing = [c for c in ("id", "label") if c not in table.column_names]
    if missing:
        raise ValueError(f"{name} has no column(s) {missing}; build it with an rmd_ray.data.readers reader")
    if table.num_rows == 0:
        raise ValueError(f"{name} has no rows")
    if pc.count_distinct(table.column("id")).as_py() != table.num_rows or table.column("id").null_count:
        raise ValueError(f"{name}: ids must be unique and not null (outputs and weights are joined by id)")
    return table


def _check_source(value: object, name: str) -> Source:
    if isinstance(value, pa.Table):
        return _check_table(value, name)
    if isinstance(value, (str, ShardedSource)):
        return value
    raise TypeError(
        f"{name} must be a source spec (e.g. 'folder:/data/train', 'parquet:s3://b/train'), a ShardedSource "
        f"or a pyarrow.Table from rmd_ray.data.readers, got {type(value).__name__}"
    )


def _plan(value: Source, *, shard_rows: int) -> ShardedSource:
    if isinstance(value, pa.Table):
        return source_from_table(value, shard_rows=shard_rows)
    if isinstance(value, str):
        return open_source(value, shard_rows=shard_rows)
    return value


def _checkpoint_file(path: str | os.PathLike) -> str:
    uri = os.fspath(path)
    if storage.is_dir(uri):
        uri = storage.join(uri, CHECKPOINT_FILE)
    if not storage.is_file(uri):
        raise ValueError(f"resume_from={os.fspath(path)!r} is not a checkpoint file or a folder with {CHECKPOINT_FILE}")
    return uri


def _check_resume(uri: str, cfg: TrainConfig, num_classes: int) -> bytes:
    """The checkpoint's bytes, after checking it fits the model and can continue training."""
    import tempfile

    payload_bytes = storage.read_bytes(uri)
    probe = build_model(cfg.model, num_classes=num_classes, cifar_stem=cfg.cifar_stem, width=cfg.width)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, CHECKPOINT_FILE)
        with open(local, "wb") as fh:
            fh.write(payload_bytes)
        try:
            done = engine.load_checkpoint(local, model=probe)["epoch"]  # ValueError: another model
        except ValueError as err:
            raise ValueError(str(err).replace(local, uri)) from None
        payload = torch.load(local, map_location="cpu", weights_only=True)
    if done >= cfg.optim.epochs:
        raise ValueError(
            f"resume_from checkpoint has already finished {done} epochs and optim.epochs is "
            f"{cfg.optim.epochs}; raise optim.epochs to train further"
        )
    stateless = [k for k in ("optimizer", "scheduler") if payload.get(k) is None]
    if stateless:
        raise ValueError(
            f"resume_from checkpoint {uri} holds no {' / '.join(stateless)} state (a weights-only checkpoint), "
            "so training cannot continue from it; use a checkpoint written during training"
        )
    return payload_bytes


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
        log.warning("training reserves %.3g of %.3g CPUs; decode tasks may wait for a CPU", need, have)
    if cfg.use_gpu and resources.get("GPU", 0.0) < cfg.num_workers:
        raise ValueError(
            f"use_gpu=True with {cfg.num_workers} workers needs {cfg.num_workers} GPUs but the cluster has "
            f"{resources.get('GPU', 0.0):g}; set use_gpu=False or lower num_workers"
        )


def _geometry(cfg: TrainConfig, sources: dict[str, ShardedSource]) -> ingest.Geometry:
    """Resolve the preset and input size; with native sizes, every split must share the training size."""
    from rmd_ray.nn.transforms import resolve_preset

    native = ingest.probe_native_size(sources["train"])
    preset, size = resolve_preset(cfg.preset, image_size=cfg.image_size, native_side=max(native))
    if size is not None:
        return ingest.Geometry(preset, size)
    for split, source in sources.items():
        if split == "train":
            continue
        h, w = ingest.probe_native_size(source)
        if (h, w) != native:
            raise ValueError(
                f"{split} images are {w}x{h} but training images are {native[1]}x{native[0]}; set image_size "
                "so that all splits match"
            )
    return ingest.Geometry(preset, None, native)


def _normalization(cfg: TrainConfig, geometry: ingest.Geometry, train: ShardedSource) -> tuple[list, list]:
    from rmd_ray.nn.transforms import IMAGENET_MEAN, IMAGENET_STD

    kind = cfg.normalization
    if kind == "auto":
        kind = "data" if geometry.preset == "cifar" else "imagenet"
    if kind == "imagenet":
        return list(IMAGENET_MEAN), list(IMAGENET_STD)
    return ingest.channel_stats(train, geometry=geometry)


def channel_statistics(train: Source, config: TrainConfig) -> tuple[list[float], list[float]]:
    """The per-channel mean / std a run of ``config`` on ``train`` would normalise with (Tune: once)."""
    source = _plan(_check_source(train, "train"), shard_rows=DEFAULT_SHARD_ROWS)
    return _normalization(config, _geometry(config, {"train": source}), source)


def _head(names: Sequence[str]) -> str:
    return f"{len(names)} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"


def _storage_location(output_dir: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path) for ``RunConfig``; local folders are created and made absolute."""
    if not storage.is_remote(output_dir):
        path = os.path.abspath(output_dir)
        os.makedirs(path, exist_ok=True)
        return None, path
    return storage.resolve(output_dir)


def _uri_of(output_dir: str, base_path: str, path: str) -> str:
    """A path Ray reports inside the storage filesystem, as a URI under ``output_dir``."""
    if not storage.is_remote(output_dir):
        return path
    return storage.join(output_dir, path[len(base_path):].lstrip("/"))


def _best(result, last_path: str, uri_of: Callable[[str], str]) -> str:
    best, best_score = last_path, -math.inf
    for checkpoint, metrics in getattr(result, "best_checkpoints", None) or []:
        score = (metrics or {}).get(SCORE_METRIC, float("nan"))
        if isinstance(score, (int, float)) and math.isfinite(score) and score > best_score:
            best, best_score = uri_of(checkpoint.path), score
    return best


@ray.remote(num_cpus=0.5, scheduling_strategy="DEFAULT")  # never captured by a Tune trial's placement group
def _prediction_metrics(uri: str) -> dict[str, float]:
    from rmd_ray.core.metrics import evaluate_predictions
    from rmd_ray.evaluation.evaluate import load_predictions

    _, labels, logits = load_predictions(uri)
    return {k: float(v) for k, v in evaluate_predictions(logits, labels).items()}


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
        Ray storage (local folder or URI such as ``s3://bucket/runs?endpoint_override=...``):
        checkpoints and ``predictions_<split>.parquet/`` go to ``<output_dir>/<run_name>/``. On a
        multi-node cluster it must be storage every node reaches. Running again with the same
        ``output_dir`` and ``run_name`` continues that run from its latest checkpoint.
    run_name : str
    resume_from : path or URI, optional
        A checkpoint (``model.pt`` of ``engine.save_checkpoint``, or a folder holding one) to continue
        from; it must come from the same model and have fewer than ``optim.epochs`` epochs.
    epoch_hook : callable, optional
        ``epoch_hook(epoch)`` on every worker before each epoch (picklable; logging, fault injection).
    callbacks : sequence of Ray Train callbacks
        Passed to ``RunConfig(callbacks=...)`` (Tune passes ``TuneReportCallback()``).
    channel_stats : (mean, std), optional
        Per-channel statistics in [0, 1] units, to skip the streaming pass (Tune computes them once).
    shard_rows : int
        Rows per shard when planning specs and tables (default :data:`TRAIN_SHARD_ROWS`).
    predict : bool
        Predict val (and test) after training (default). Tune trials pass False: they are ranked on the
        metrics each epoch reported, and ``predictions`` is then empty.

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
    RuntimeError
        Any other worker failure after ``config.max_failures`` restarts.
    """
    from ray.data import DataContext
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if not isinstance(run_name, str) or not run_name or "/" in run_name or os.sep in run_name:
        raise ValueError(f"run_name must be a non-empty folder name, got {run_name!r}")
    if epoch_hook is not None and not callable(epoch_hook):
        raise TypeError("epoch_hook must be callable(epoch) or None")
    cfg = config
    inputs = {"train": _check_source(train, "train"), "val": _check_source(val, "val")}
    if test is not None:
        inputs["test"] = _check_source(test, "test")
    needs_weights = cfg.loss in _WEIGHTED_LOSSES
    if needs_weights and scores is None:
        raise ValueError(
            f"loss {cfg.loss!r} needs per-sample difficulty weights: pass scores= (the scores.parquet "
            "from rmd-ray score), or choose another loss"
        )
    if isinstance(inputs["train"], pa.Table):
        _check_sized_loss(cfg, inputs["train"].num_rows)
    output_dir = os.fspath(output_dir)

    init_ray()
    _check_cluster(cfg)
    tic = time.perf_counter()
    if isinstance(inputs["train"], pa.Table):
        # an in-memory table is on the driver anyway: its rows go into shards in a seeded random order,
        # so every shard mixes classes (reader tables come sorted by class, as CIFAR-10's does)
        order = np.random.default_rng([cfg.seed, 2]).permutation(inputs["train"].num_rows)
        inputs = {**inputs, "train": inputs["train"].take(pa.array(order))}
    sources = {split: _plan(value, shard_rows=shard_rows) for split, value in inputs.items()}
    train_source = sources["train"]
    n_train = train_source.n_rows
    loss_kwargs = _check_sized_loss(cfg, n_train)
    weights_ref = None
    if needs_weights:
        difficulty = None if cfg.difficulty is None else (cfg.difficulty, cfg.weight_config, cfg.seed)
        weights_ref, _ = build_weight_index(scores, difficulty=difficulty)
        if isinstance(inputs["train"], pa.Table):  # ids in memory anyway: the whole check before anything starts
            lookup_weights(ray.get(weights_ref), inputs["train"].column("id"))
    num_classes = len(train_source.classes)
    for split, source in sources.items():
        if source.classes != train_source.classes and len(source.classes) and split != "train":
            raise ValueError(
                f"{split} names classes {_head(source.classes)} but training names {_head(train_source.classes)}; "
                "labels are class indices, so every split needs the training split's class list"
            )
    if num_classes < 2:
        raise ValueError(f"the training source names {num_classes} class(es); a classifier needs >= 2")
    initial_ref = None
    if resume_from is not None:
        initial_ref = ray.put(_check_resume(_checkpoint_file(resume_from), cfg, num_classes))
    geometry = _geometry(cfg, sources)
    mean, std = (list(map(float, s)) for s in channel_stats) if channel_stats else _normalization(
        cfg, geometry, train_source
    )
    log.info("planned %d training rows in %d shards (%.1f s)", n_train, len(train_source.shards),
             time.perf_counter() - tic)

    shard_n = n_train // cfg.num_workers  # streaming_split(equal=True) gives equal shards
    if shard_n < 2:
        raise ValueError(f"{n_train} training rows for {cfg.num_workers} workers: each worker needs >= 2")
    drop_last = shard_n % cfg.batch_size == 1  # a lone last sample would break BatchNorm
    steps_per_epoch = shard_n // cfg.batch_size if drop_last else math.ceil(shard_n / cfg.batch_size)
    side = geometry.image_size or max(geometry.native or (32, 32))
    buffer = cfg.shuffle_buffer_rows
    if buffer is None:
        # Ray yields no batch until the buffer holds this many rows: a buffer the size of the shard made
        # the first step wait for the whole epoch's decode (measured: 43% of the epoch waiting for data).
        # Eight batches mix rows of several blocks (shards are re-ordered and permuted in the tasks anyway).
        budget = _SHUFFLE_BUFFER_BYTES // (3 * side * side + 24)
        buffer = int(min(shard_n, 8 * cfg.batch_size, max(cfg.batch_size, budget)))
    # on the driver's node: a 0-CPU actor may otherwise land on a worker node, and when that node is lost
    # every restarted worker failed reading it (seen in the two-node fault test: the run gave up)
    fatal = FatalErrors.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    ).remote()
    train_ds = ingest.train_dataset(
        train_source, geometry=geometry, augment=cfg.augment, weights_ref=weights_ref,
        shuffle=cfg.shuffle, seed=cfg.seed, decode_cpus=cfg.decode_cpus, decode_tasks=_decode_tasks(cfg),
        shards_per_task=cfg.shards_per_task,
    )
    val_ds = ingest.eval_dataset(sources["val"], geometry=geometry, decode_cpus=cfg.decode_cpus)
    # the driver context's options (resource limits, ...); order is kept so a seeded run is reproducible
    ingest_options = copy.deepcopy(DataContext.get_current().execution_options)
    ingest_options.preserve_order = cfg.shuffle == "seeded"
    spec = WorkerSpec(
        config=cfg,
        num_classes=num_classes,
        n_val=sources["val"].n_rows,
        loss_kwargs=loss_kwargs,
        mean=mean,
        std=std,
        preset=geometry.preset,
        image_size=geometry.image_size,
        input_side=int(side),
        steps_per_epoch=steps_per_epoch,
        drop_last=drop_last,
        shuffle_buffer=buffer,
        fatal=fatal,
        initial_checkpoint=initial_ref,
        epoch_hook=epoch_hook,
        prestarted_split=ingest.prestarted_split(train_ds, cfg.num_workers, execution_options=ingest_options),
    )
    filesystem, storage_path = _storage_location(output_dir)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"spec": spec},
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers,
            use_gpu=cfg.use_gpu,
            resources_per_worker={"CPU": float(cfg.cpus_per_worker)},
            placement_strategy=cfg.placement_strategy,
        ),
        run_config=RunConfig(
            storage_path=storage_path,
            storage_filesystem=filesystem,
            name=run_name,
            callbacks=list(callbacks),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=CheckpointConfig(
                num_to_keep=2, checkpoint_score_attribute=SCORE_METRIC, checkpoint_score_order="max"
            ),
        ),
        datasets={"train": train_ds, "val": val_ds},
        dataset_config=DataConfig(datasets_to_split=["train"], execution_options=ingest_options),
    )
    failure = None
    ingest.warm_decode_workers(
        _decode_tasks(cfg), geometry=geometry, decode_cpus=cfg.decode_cpus,
        train_env=spec.prestarted_split is None,
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
        failure = worker_error(err, record, lambda idx: ingest.ids_at(train_source, idx))
        log.info("training failed: %s: %s", type(err).__name__, err)
    finally:
        ingest.release_split(spec.prestarted_split)
        with contextlib.suppress(Exception):
            ray.kill(fatal)
    if failure is not None:
        # Raised outside the except block and without chaining: Ray's error keeps the trainer's frames,
        # and with them the Train controller and its placement group, alive for as long as the caller
        # holds the exception (measured: a failed run's CPUs stayed reserved and starved later work).
        del trainer
        gc.collect()
        raise failure
    if result.checkpoint is None:
        raise RuntimeError(f"training finished without a checkpoint in {result.path}")
    return _finish(result, cfg, sources if predict else {}, geometry, output_dir, storage_path, run_name)


def _decode_tasks(cfg: TrainConfig) -> int:
    if cfg.decode_tasks is not None:
        return cfg.decode_tasks
    return max(1, int(compute_cpus() - cfg.num_workers * cfg.cpus_per_worker))


def _check_sized_loss(cfg: TrainConfig, n_train: int) -> dict[str, Any]:
    loss_kwargs = cfg.loss_kwargs
    if cfg.loss in _SIZED_LOSSES and loss_kwargs.setdefault("num_samples", n_train) != n_train:
        raise ValueError(
            f"loss {cfg.loss!r}: num_samples={loss_kwargs['num_samples']} but the training table has "
            f"{n_train} rows; leave num_samples out (it is filled in)"
        )
    return loss_kwargs


def _finish(result, cfg: TrainConfig, sources, geometry, output_dir: str, storage_path: str, run_name: str):
    """After ``fit()``: predict val (and test) from the last checkpoint as Ray batch inference."""
    def uri_of(path: str) -> str:
        return _uri_of(output_dir, storage_path, path)

    last = uri_of(result.checkpoint.path)
    with result.checkpoint.as_directory() as folder:
        info = torch.load(os.path.join(folder, CHECKPOINT_FILE), map_location="cpu", weights_only=True)
    extra = info.get("extra") or {}
    history = [dict(h) for h in extra.get("history", [])]
    for h in history:  # NaN val keys only mark "not evaluated" for Ray's ranking; drop them here
        for k in [k for k, v in h.items() if k.startswith("val_") and isinstance(v, float) and math.isnan(v)]:
            del h[k]
    final_val = {k[4:]: v for k, v in history[-1].items() if k.startswith("val_")} if history else {}
    meta = {
        "model": cfg.model, "width": cfg.width, "cifar_stem": cfg.cifar_stem, "loss": cfg.loss,
        "loss_hparams": dict(cfg.loss_hparams), "epochs": int(info["epoch"]), "seed": cfg.seed,
        "batch_size": cfg.batch_size, "lr": cfg.optim.lr, "image_size": geometry.image_size,
        "preset": geometry.preset, "mean": extra.get("mean"), "std": extra.get("std"),
        "checkpoint": last, "run_name": run_name, "rmd_ray_version": __version__,
    }
    if cfg.difficulty is not None and cfg.loss in _WEIGHTED_LOSSES:
        meta["difficulty"] = cfg.difficulty
        meta["weight_config"] = dataclasses.asdict(cfg.weight_config)
    spec = classifier_from_checkpoint(storage.join(last, CHECKPOINT_FILE))
    predictions: dict[str, str] = {}
    test_metrics = None
    for split in ("val", "test"):
        if split not in sources:
            continue
        # beside the run's checkpoints: two runs sharing an output_dir must not overwrite each other
        uri = storage.join(output_dir, run_name, f"predictions_{split}.parquet")
        predictions[split] = predict_source(
            sources[split], spec, uri, batch_size=max(cfg.batch_size, 256),
            gpus_per_actor=1.0 if cfg.use_gpu else 0.0, metadata={**meta, "split": split},
        )
        if split == "test":
            test_metrics = ray.get(_prediction_metrics.remote(predictions[split]))
    return TrainingResult(
        epochs=history,
        final_val=final_val,
        last_checkpoint=last,
        best_checkpoint=_best(result, last, uri_of),
        predictions=predictions,
        predictions_path=predictions.get("test", predictions.get("val")),
        test_metrics=test_metrics,
        run_path=str(result.path),
    )

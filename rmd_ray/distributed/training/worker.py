"""The training loop every Ray Train worker runs: thin glue around ``rmd_ray.nn``.

Build model, loss, optimiser and schedule; restore Ray's latest checkpoint (a restart) or
``resume_from``; then per epoch: iterate this worker's shard of the lazy training dataset (uint8
pixels, normalised here on the worker's device), report metrics and, on rank 0, a checkpoint.
Validation runs on every rank over its part of the validation shards; the per-row summaries are
gathered and reduced to the metrics, one row per index.
"""

from __future__ import annotations

import contextlib
import functools
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch

from rmd_ray.distributed.runtime.cluster import forced_cpu, worker_setup
from rmd_ray.distributed.training.config import CHECKPOINT_FILE, SCORE_METRIC, TrainConfig
from rmd_ray.distributed.training.errors import WorkerFailure, fatal_record
from rmd_ray.distributed.training.ingest import release_split
from rmd_ray.nn import engine
from rmd_ray.nn.initial_weights import load_initial_weights
from rmd_ray.nn.losses import build_loss
from rmd_ray.nn.models import build_model
from rmd_ray.nn.transforms import normalize_uint8

__all__ = ["WorkerSpec", "train_loop_per_worker"]


@dataclass(frozen=True)
class WorkerSpec:
    """What every worker receives (via ``train_loop_config``)."""

    config: TrainConfig
    num_classes: int
    n_val: int
    loss_kwargs: dict[str, Any]
    mean: list[float]
    std: list[float]
    preset: str
    image_size: int | None  # the model's input side (None: native, cifar preset)
    input_side: int  # the side the model saw: image_size, or the native side
    shapes: dict[int, tuple[int, bool, int]]  # group size -> (steps per epoch, drop_last, shuffle buffer rows)
    fatal: Any  # actor handle of FatalErrors
    initial_checkpoint: Any = None  # ObjectRef of checkpoint bytes (resume_from), or None
    initial_weights: Any = None  # ObjectRef of the fitted model_weights state dict (a fresh run's start), or None
    epoch_hook: Callable[[int], None] | None = None
    prestarted_split: list[Any] | None = None  # ingest.prestarted_split: one iterator per rank
    val_parts: int = 1  # validation datasets "val_0" ..: part p is predicted by rank p % world


def _inner(model: torch.nn.Module) -> torch.nn.Module:
    # evaluate the bare module on rank 0 alone: a DDP forward may sync buffers with the other ranks
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def _mix(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


def _timed(iterator, wait: list[float]):
    """Yield from ``iterator``; ``wait[0]`` sums the seconds spent waiting for items, ``wait[1]`` is the first's."""
    iterator = iter(iterator)
    first = True
    while True:
        tic = time.perf_counter()
        try:
            item = next(iterator)
        except StopIteration:
            wait[0] += time.perf_counter() - tic
            return
        waited = time.perf_counter() - tic
        wait[0] += waited
        if first:
            wait[1], first = waited, False
        yield item


class _Started:
    """An iterable whose first item is fetched in a background thread from construction on.

    The first epoch's pipeline start-up (Ray Data starting the split's executor and first decode task,
    and after a restart Ray Train creating its split coordinator on rank 0's first ``get_dataset_shard``)
    then runs while the worker builds its model, optimiser and schedule, instead of after. The thread only ever calls
    ``next`` once, before the consumer does: the iterator is never advanced from two threads at once.
    """

    def __init__(self, iterable) -> None:
        self._iterator = iter(iterable)
        self._first: tuple = ()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._fetch, name="first-batch", daemon=True)
        self._thread.start()

    def _fetch(self) -> None:
        try:
            self._first = (next(self._iterator),)
        except StopIteration:
            pass
        except BaseException as err:  # re-raised in the consumer's thread, where the error handling is
            self._error = err

    def __iter__(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
        yield from self._first
        yield from self._iterator


def _train_shard(spec: WorkerSpec, rank: int, world: int):
    """This rank's training split: the one made before ``fit()`` in the run's first worker group, Ray
    Train's own after a restart (the first one's epoch state went with the failed group).

    Rank 0 decides for the group and broadcasts it: ranks that decided on their own could take different
    splits, and a split waits for all of its ranks.
    """
    first = False
    if spec.prestarted_split is not None:
        if rank == 0:
            try:
                first = bool(ray.get(spec.fatal.first_start.remote()))
            except ray.exceptions.RayActorError:  # the record keeper went with a lost node: a restart
                first = False
            # an elastic first group smaller than planned cannot take the split: it waits for all its ranks
            first = first and world == len(spec.prestarted_split)
        if world > 1:
            from ray.train.collective import broadcast_from_rank_zero

            first = broadcast_from_rank_zero(first)
    if first:
        return spec.prestarted_split[rank]
    if rank == 0 and spec.prestarted_split is not None:
        release_split(spec.prestarted_split)  # a restart: the first group's split is nobody's now
    return ray.train.get_dataset_shard("train")


def _epoch_batches(shard, spec: WorkerSpec, epoch: int, rank: int, world: int, device):
    """This worker's batches of one epoch, the local shuffle buffer seeded by (seed, epoch, rank)."""
    seed = spec.config.seed
    _, drop_last, buffer = spec.shapes[world]
    return shard.iter_torch_batches(
        batch_size=spec.config.batch_size,
        device=device,
        drop_last=drop_last,
        local_shuffle_buffer_size=buffer or None,
        local_shuffle_seed=_mix(seed, epoch, rank, 0) if buffer else None,
    )


def _batches(iterator, mean, std):
    for b in iterator:
        out = {"image": normalize_uint8(b["image"], mean, std), "label": b["label"], "id": b["index"]}
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
            raise WorkerFailure({"kind": "value", "message": str(err)}) from err
    extra = info["extra"] if isinstance(info["extra"], dict) else {}
    return int(info["epoch"]), list(extra.get("history", [])), extra


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point: turn deterministic errors into records the driver can re-raise."""
    spec: WorkerSpec = loop_config["spec"]
    try:
        prior = ray.get(spec.fatal.get.remote())
    except ray.exceptions.RayActorError:  # the record keeper went with a lost node: nothing to skip, train
        prior = None
    if prior is not None:  # a retry would only hit the same error again
        raise WorkerFailure(prior)
    try:
        _train_worker(spec)
    except Exception as err:
        record = fatal_record(err)  # a NaN loss, bad input in a read task, a checkpoint that does not fit
        if record is None:
            raise
        with contextlib.suppress(ray.exceptions.RayActorError):  # the error itself still reaches the driver
            ray.get(spec.fatal.put.remote(record))
        raise WorkerFailure(record) from None


def _train_worker(spec: WorkerSpec) -> None:
    """The training loop proper: builds everything from rmd_ray.nn and reports once per epoch."""
    from ray.train.torch import get_device, prepare_model

    cfg = spec.config
    worker_setup(threads=1)
    rank, world = ray.train.get_context().get_world_rank(), ray.train.get_context().get_world_size()
    device = torch.device("cpu") if forced_cpu() else get_device()
    # First, before any set-up: the split (Ray Train's: rank 0's call creates its coordinator, a new
    # process), and a fresh run starts its first epoch now, overlapping the model build (a restart learns
    # its epoch from the checkpoint, so it starts after the restore)
    train_shard = _train_shard(spec, rank, world)
    fresh = ray.train.get_checkpoint() is None and spec.initial_checkpoint is None
    first_epoch = _Started(_epoch_batches(train_shard, spec, 0, rank, world, device)) if fresh else None
    torch.manual_seed(cfg.seed)  # same initial weights on every rank (DDP broadcasts rank 0's anyway)
    model = build_model(cfg.model, num_classes=spec.num_classes, cifar_stem=cfg.cifar_stem, width=cfg.width)
    if fresh and spec.initial_weights is not None:  # checked and fitted on the driver (a dropped head stays random)
        load_initial_weights(model, ray.get(spec.initial_weights), source=cfg.model_weights)
    model = prepare_model(model, move_to_device=device)  # to device; DDP when world > 1
    loss_fn = build_loss(cfg.loss, **spec.loss_kwargs).to(device)
    optimizer = engine.build_optimizer(model, cfg.optim)
    steps = spec.shapes[world][0]
    scheduler = engine.build_scheduler(optimizer, cfg.optim, steps_per_epoch=steps)
    start, history, extra = _restore(spec, model, optimizer, scheduler, loss_fn, device)
    # a checkpoint of a group of another size (elastic) took other steps per epoch: same share of the schedule
    engine.rescale_scheduler(scheduler, optimizer, cfg.optim, steps_per_epoch=steps, epoch=min(start, cfg.optim.epochs))
    mean_list, std_list = extra.get("mean", spec.mean), extra.get("std", spec.std)
    mean = torch.tensor(mean_list, dtype=torch.float32, device=device)
    std = torch.tensor(std_list, dtype=torch.float32, device=device)
    # the cifar crop + flip runs here on the device, seeded; imagenet's random resized crop ran in the read task
    crop_on_worker = cfg.augment and spec.preset == "cifar"
    # this rank's validation parts: part p goes to rank p % world (all of them, if fewer ranks run than planned)
    val_data = [ray.train.get_dataset_shard(f"val_{p}") for p in range(rank, spec.val_parts, world)]
    resumed_from = start
    for epoch in range(start, cfg.optim.epochs):
        if spec.epoch_hook is not None:
            spec.epoch_hook(epoch)
        tic = time.perf_counter()
        gen = torch.Generator().manual_seed(_mix(cfg.seed, epoch, rank, 1))
        if first_epoch is not None and epoch == 0:
            batches, first_epoch = first_epoch, None
        else:
            batches = _epoch_batches(train_shard, spec, epoch, rank, world, device)
        wait = [0.0, 0.0]
        stats = engine.train_one_epoch(
            model,
            _batches(_timed(batches, wait), mean, std),
            loss_fn,
            optimizer,
            scheduler=scheduler,
            device=device,
            amp=cfg.amp,
            augment=functools.partial(engine.random_crop_flip, generator=gen) if crop_on_worker else None,
        )
        train_s = time.perf_counter() - tic
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
            "workers": world,  # the group's size: an elastic run may go on with fewer
        }
        last = epoch + 1 == cfg.optim.epochs
        evaluate = last or (epoch + 1) % cfg.eval_every == 0
        if evaluate:  # every rank predicts its part of the validation split; rank 0 reduces the summaries
            val = _validate(_inner(model), val_data, spec, device, mean, std, world=world)
            if rank == 0:
                metrics.update({f"val_{k}": float(v) for k, v in val.items()})
        metrics["time_s"] = time.perf_counter() - tic
        metrics["train_s"] = train_s
        # the share of the training steps' wall time spent waiting for the next batch (ingest-bound if high)
        metrics["data_wait_frac"] = wait[0] / train_s if train_s > 0 else 0.0
        metrics["first_batch_s"] = wait[1]  # the pipeline's start-up, part of the wait above
        _report(spec, rank, epoch, metrics, history, model, optimizer, scheduler, loss_fn, mean_list, std_list)


def _validate(model, val_data, spec: WorkerSpec, device, mean, std, *, world: int) -> dict[str, float]:
    """Validation metrics from every rank's part: each rank reduces its rows to per-row summaries
    (:func:`rmd_ray.core.metrics.row_summaries`, seven numbers a row), the summaries are gathered and
    every rank computes the metrics of all rows, one per index (padded parts repeat rows). Every rank
    predicts with rank 0's weights and BatchNorm statistics: the model its checkpoint holds."""
    from rmd_ray.core.metrics import SUMMARY_COLUMNS, metrics_from_summaries, row_summaries

    index, summaries = np.zeros(0, np.int64), {c: np.zeros(0) for c in SUMMARY_COLUMNS}
    if world > 1:  # DDP syncs BatchNorm statistics at the start of a forward: each rank's last step moved its
        for buffer in model.buffers():  # own, so all ranks take rank 0's (what its checkpoint holds)
            torch.distributed.broadcast(buffer, src=0)
    for part in val_data:
        batches = part.iter_torch_batches(batch_size=spec.config.batch_size, device=device)
        ids, labels, logits = engine.predict(model, _batches(batches, mean, std), device=device, amp=spec.config.amp)
        if len(ids):
            rows = row_summaries(logits, labels)
            index = np.concatenate([index, ids])
            summaries = {c: np.concatenate([summaries[c], rows[c]]) for c in SUMMARY_COLUMNS}
    parts = [(index, summaries)]
    if world > 1:
        parts = [None] * world
        torch.distributed.all_gather_object(parts, (index, summaries))
    index = np.concatenate([p[0] for p in parts])
    uniq, first = np.unique(index, return_index=True)
    if len(uniq) != spec.n_val:
        raise RuntimeError(f"validation returned {len(uniq)} distinct rows, expected {spec.n_val}")
    return metrics_from_summaries({c: np.concatenate([p[1][c] for p in parts])[first] for c in SUMMARY_COLUMNS})


def _report(spec, rank, epoch, metrics, history, model, optimizer, scheduler, loss_fn, mean, std) -> None:
    """``ray.train.report`` on every rank (it is a barrier); rank 0 attaches the checkpoint."""
    if rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    history.append(dict(metrics))
    # the ranking metric must be present in every report: NaN (= not evaluated) ranks lowest
    reported = {**metrics}
    reported.setdefault(SCORE_METRIC, float("nan"))
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
                "image_size": spec.image_size,  # the input side the model was trained at (None: native)
                "preset": spec.preset,
                "input_side": spec.input_side,  # what prediction resizes any other source to
            },
        )
        ray.train.report(
            reported,
            checkpoint=ray.train.Checkpoint.from_directory(tmp),
            # unique: an attempt that crashed may have uploaded this epoch without registering it
            checkpoint_dir_name=f"epoch_{epoch + 1:04d}_{uuid.uuid4().hex[:8]}",
        )


# ------------------------------------------------------------------------------------ driver side

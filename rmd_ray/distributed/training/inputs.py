"""Training inputs, checked and planned before Ray Train starts: sources, classes, geometry, normalisation,
a checkpoint to resume from, and the cluster's room for the workers."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import ray
import torch

from rmd_ray.distributed.runtime.cluster import compute_cpus
from rmd_ray.distributed.sources.plan import DEFAULT_SHARD_ROWS, ShardedSource, open_source, source_from_table
from rmd_ray.distributed.training import ingest
from rmd_ray.distributed.training.capacity import check_wait
from rmd_ray.distributed.training.config import CHECKPOINT_FILE, SIZED_LOSSES, TrainConfig
from rmd_ray.io import storage
from rmd_ray.nn import engine
from rmd_ray.nn.models import build_model

__all__ = [
    "Source", "channel_statistics", "check_class_lists", "check_cluster", "check_initial_weights", "check_resume",
    "check_sized_loss", "check_source", "checkpoint_file", "decode_tasks", "normalization_stats", "plan_source",
    "resolve_geometry",
]

log = logging.getLogger("rmd_ray.training")

Source = str | pa.Table | ShardedSource


def check_table(table: pa.Table, name: str) -> pa.Table:
    """``table`` after checking it has ``id`` and ``label``, rows, and unique non-null ids."""
    missing = [c for c in ("id", "label") if c not in table.column_names]
    if missing:
        raise ValueError(f"{name} has no column(s) {missing}; build it with an rmd_ray.data.readers reader")
    if table.num_rows == 0:
        raise ValueError(f"{name} has no rows")
    if pc.count_distinct(table.column("id")).as_py() != table.num_rows or table.column("id").null_count:
        raise ValueError(f"{name}: ids must be unique and not null (outputs and weights are joined by id)")
    return table


def check_source(value: object, name: str) -> Source:
    """A source spec, planned source or reader table, checked (tables fully); TypeError for anything else."""
    if isinstance(value, pa.Table):
        return check_table(value, name)
    if isinstance(value, (str, ShardedSource)):
        return value
    raise TypeError(
        f"{name} must be a source spec (e.g. 'folder:/data/train', 'parquet:s3://b/train'), a ShardedSource "
        f"or a pyarrow.Table from rmd_ray.data.readers, got {type(value).__name__}"
    )


def plan_source(value: Source, *, shard_rows: int) -> ShardedSource:
    """The shard plan of a spec or a table (a planned source as it is)."""
    if isinstance(value, pa.Table):
        return source_from_table(value, shard_rows=shard_rows)
    if isinstance(value, str):
        return open_source(value, shard_rows=shard_rows)
    return value


def checkpoint_file(path: str | os.PathLike) -> str:
    """The checkpoint file ``path`` names (a file, or a folder holding one), as a URI."""
    uri = os.fspath(path)
    if storage.is_dir(uri):
        uri = storage.join(uri, CHECKPOINT_FILE)
    if not storage.is_file(uri):
        raise ValueError(f"resume_from={os.fspath(path)!r} is not a checkpoint file or a folder with {CHECKPOINT_FILE}")
    return uri


def check_resume(uri: str, cfg: TrainConfig, num_classes: int) -> bytes:
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


def check_initial_weights(cfg: TrainConfig, num_classes: int) -> dict[str, torch.Tensor] | None:
    """``cfg.model_weights`` read and fitted to the model of ``num_classes`` outputs (None without one).

    The tensors returned load with ``strict=False`` (a head of another size is left out, and logged
    as a warning naming its keys); a file that is not a weights-only state dict, or one of another
    architecture, is a one-line ValueError here, before any worker starts.
    """
    from rmd_ray.nn.initial_weights import fit_initial_weights
    from rmd_ray.nn.safe_load import read_state_dict

    if cfg.model_weights is None:
        return None
    try:
        state = read_state_dict(cfg.model_weights)
    except FileNotFoundError:
        raise ValueError(f"--model-weights {cfg.model_weights!r} not found: pass a state dict file") from None
    probe = build_model(cfg.model, num_classes=num_classes, cifar_stem=cfg.cifar_stem, width=cfg.width)
    fitted, dropped = fit_initial_weights(probe, state, source=cfg.model_weights)
    if dropped:
        log.warning("--model-weights %s: classifier head %s not loaded (random init for %d classes)",
                    cfg.model_weights, ", ".join(dropped), num_classes)
    return fitted


def check_cluster(cfg: TrainConfig) -> None:
    """ValueError when the Ray cluster lacks the CPUs (or GPUs) ``cfg``'s workers reserve (elastic: its
    ``min_workers``; the group grows when room comes)."""
    resources = ray.cluster_resources()
    workers = cfg.min_workers or cfg.num_workers
    need = workers * float(cfg.cpus_per_worker)
    have = resources.get("CPU", 0.0)
    if have < need:
        raise ValueError(
            f"{workers} workers x {cfg.cpus_per_worker} CPUs need {need:g} CPUs but the Ray cluster "
            f"has {have:g}; lower num_workers (or min_workers) or cpus_per_worker (fractions are fine)"
        )
    if have - need < 0.5:
        log.warning("training reserves %.3g of %.3g CPUs; decode tasks may wait for a CPU", need, have)
    if cfg.use_gpu and resources.get("GPU", 0.0) < workers:
        raise ValueError(
            f"use_gpu=True with {workers} workers needs {workers} GPUs but the cluster has "
            f"{resources.get('GPU', 0.0):g}; set use_gpu=False or lower num_workers (or min_workers)"
        )
    check_wait(cfg)


def resolve_geometry(cfg: TrainConfig, sources: dict[str, ShardedSource]) -> ingest.Geometry:
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


def normalization_stats(cfg: TrainConfig, geometry: ingest.Geometry, train: ShardedSource) -> tuple[list, list]:
    """Per-channel (mean, std) in [0, 1] units: ImageNet's, or the training images' (a streaming pass)."""
    from rmd_ray.nn.transforms import IMAGENET_MEAN, IMAGENET_STD

    kind = cfg.normalization
    if kind == "auto":
        kind = "data" if geometry.preset == "cifar" else "imagenet"
    if kind == "imagenet":
        return list(IMAGENET_MEAN), list(IMAGENET_STD)
    return ingest.channel_stats(train, geometry=geometry)


def channel_statistics(train: Source, config: TrainConfig) -> tuple[list[float], list[float]]:
    """The per-channel mean / std a run of ``config`` on ``train`` would normalise with (Tune: once)."""
    source = plan_source(check_source(train, "train"), shard_rows=DEFAULT_SHARD_ROWS)
    return normalization_stats(config, resolve_geometry(config, {"train": source}), source)


def _head(names: Sequence[str]) -> str:
    return f"{len(names)} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"


def decode_tasks(cfg: TrainConfig) -> int:
    """Concurrent decode tasks of the training split: as configured, else one per core the workers leave."""
    if cfg.decode_tasks is not None:
        return cfg.decode_tasks
    return max(1, int(compute_cpus() - cfg.num_workers * cfg.cpus_per_worker))


def check_sized_loss(cfg: TrainConfig, n_train: int) -> dict[str, Any]:
    """The loss's keyword arguments, with ``num_samples`` filled in for losses that keep per-sample state."""
    loss_kwargs = cfg.loss_kwargs
    if cfg.loss in SIZED_LOSSES and loss_kwargs.setdefault("num_samples", n_train) != n_train:
        raise ValueError(
            f"loss {cfg.loss!r}: num_samples={loss_kwargs['num_samples']} but the training table has "
            f"{n_train} rows; leave num_samples out (it is filled in)"
        )
    return loss_kwargs


def check_class_lists(sources: dict[str, ShardedSource]) -> int:
    """The number of classes; ValueError when a split names other classes than training, or fewer than 2."""
    train = sources["train"]
    for split, source in sources.items():
        if source.classes != train.classes and len(source.classes) and split != "train":
            raise ValueError(
                f"{split} names classes {_head(source.classes)} but training names {_head(train.classes)}; "
                "labels are class indices, so every split needs the training split's class list"
            )
    if len(train.classes) < 2:
        raise ValueError(f"the training source names {len(train.classes)} class(es); a classifier needs >= 2")
    return len(train.classes)

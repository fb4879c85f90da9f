"""After ``fit()``: the run's history and checkpoints, and val / test predicted as Ray batch inference."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from typing import Any

import ray
import torch

from rmd_ray import __version__
from rmd_ray.distributed.prediction.predict import classifier_from_checkpoint, predict_source
from rmd_ray.distributed.training.config import (
    CHECKPOINT_FILE,
    SCORE_METRIC,
    WEIGHTED_LOSSES,
    TrainConfig,
    TrainingResult,
)
from rmd_ray.io import storage

__all__ = ["finish_run", "prediction_metrics", "storage_location", "uri_in"]


def storage_location(output_dir: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path) for ``RunConfig``; local folders are created and made absolute."""
    if not storage.is_remote(output_dir):
        path = os.path.abspath(output_dir)
        os.makedirs(path, exist_ok=True)
        return None, path
    return storage.resolve(output_dir)


def uri_in(output_dir: str, base_path: str, path: str) -> str:
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
def prediction_metrics(uri: str) -> dict[str, float]:
    """Every metric of a predictions table (read in this task, not on the driver)."""
    from rmd_ray.core.metrics import evaluate_predictions
    from rmd_ray.evaluation.evaluate import load_predictions

    _, labels, logits = load_predictions(uri)
    return {k: float(v) for k, v in evaluate_predictions(logits, labels).items()}


def finish_run(result, cfg: TrainConfig, sources, geometry, output_dir: str, storage_path: str,
               run_name: str) -> TrainingResult:
    """After ``fit()``: predict val (and test) from the last checkpoint as Ray batch inference."""
    def uri_of(path: str) -> str:
        return uri_in(output_dir, storage_path, path)

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
    if cfg.model_weights is not None:
        meta["model_weights"] = cfg.model_weights
    if cfg.difficulty is not None and cfg.loss in WEIGHTED_LOSSES:
        meta["difficulty"] = cfg.difficulty
        meta["weight_config"] = dataclasses.asdict(cfg.weight_config)
    spec = classifier_from_checkpoint(storage.join(last, CHECKPOINT_FILE))
    predictions: dict[str, str] = {}
    test_metrics = None
    for split in ("val", "test"):
        if split not in sources:
            continue
        # beside the run's checkpoints: two runs sharing an output_dir must not overwrite each other. A rerun
        # after a crash here keeps the shards this checkpoint already predicted (fresh=None)
        uri = storage.join(output_dir, run_name, f"predictions_{split}.parquet")
        predictions[split] = predict_source(
            sources[split], spec, uri, batch_size=max(cfg.batch_size, 256),
            gpus_per_actor=1.0 if cfg.use_gpu else 0.0, metadata={**meta, "split": split}, fresh=None,
        )
        if split == "test":
            test_metrics = ray.get(prediction_metrics.remote(predictions[split]))
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

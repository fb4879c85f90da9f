"""Training at any scale: lazy Ray Data ingest into Ray Train, difficulty weights joined by id, Ray prediction.

Modules, in data-flow order: :mod:`.config` (TrainConfig, TrainingResult), :mod:`.inputs` (sources,
classes, geometry and a resume checkpoint checked before ``fit()``), :mod:`.weight_join` (the id -> weight
index), :mod:`.ingest` (lazy datasets read and decoded in tasks), :mod:`.worker` (the loop every Ray
Train worker runs), :mod:`.run` (the driver's stages), :mod:`.capacity` (a bounded wait for a worker group
the cluster cannot hold) and :mod:`.finish` (history, val / test predicted by
:mod:`rmd_ray.distributed.prediction`).
"""

import importlib
from typing import Any

# Lazy (PEP 562): every decode task imports .ingest, which would otherwise load this package's driver
# and worker modules (torch, torchvision and Ray Train, in each fresh worker process).
_EXPORTS = {
    "CHECKPOINT_FILE": ".config",
    "TrainConfig": ".config",
    "TrainingResult": ".config",
    "loss_needs_weights": ".config",
    "ClassifierSpec": "rmd_ray.distributed.prediction.predict",
    "predict_source": "rmd_ray.distributed.prediction.predict",
    "run_training": ".run",
    "join_weights": ".weight_join",
    "WorkerCapacityError": ".capacity",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], package=__name__), name)
    globals()[name] = value
    return value

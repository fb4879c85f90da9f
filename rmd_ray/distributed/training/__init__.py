"""Training at any scale: lazy Ray Data ingest into Ray Train, difficulty weights joined by id, Ray prediction.

Modules, in data-flow order: :mod:`.config` (TrainConfig, TrainingResult), :mod:`.weights` (the
id -> weight index), :mod:`.ingest` (lazy datasets read and decoded in tasks), :mod:`.worker` (the
loop every Ray Train worker runs), :mod:`.predict` (batch inference with a model actor pool) and
:mod:`.run` (the driver).
"""

from rmd_ray.distributed.training.config import CHECKPOINT_FILE, TrainConfig, TrainingResult, loss_needs_weights
from rmd_ray.distributed.training.predict import ClassifierSpec, predict_source
from rmd_ray.distributed.training.run import run_training
from rmd_ray.distributed.training.weights import join_weights

__all__ = [
    "CHECKPOINT_FILE",
    "ClassifierSpec",
    "TrainConfig",
    "TrainingResult",
    "join_weights",
    "loss_needs_weights",
    "predict_source",
    "run_training",
]

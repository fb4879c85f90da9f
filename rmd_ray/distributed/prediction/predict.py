"""Distributed prediction: a trained checkpoint over any source, as Ray Data batch inference.

The classifier is wrapped as an "encoder" whose features are its logits (:class:`ClassifierSpec`),
so prediction runs through the same pipeline as feature extraction
(:func:`rmd_ray.distributed.inference.pipeline.embed_source`): one read + decode task per shard at the
checkpoint's eval geometry -> a model actor pool (GPU when the cluster has GPUs, spread over nodes)
-> writer tasks -> ``predictions_<split>.parquet/`` (parts with ``id``, ``label``, ``logits``
fixed_size_list<float32>[K], ``error``, ``stage``, ``shard``; a manifest written last). Every shard
gets a completion record when all its rows are written, so every row is predicted exactly once,
and a run killed part-way resumes. Nothing is predicted on the driver.
"""

from __future__ import annotations

import functools
import os
import tempfile
from dataclasses import dataclass
from typing import Any

from rmd_ray.distributed.inference.pipeline import ExtractConfig, embed_source
from rmd_ray.distributed.inference.resume import run_signature, same_run
from rmd_ray.distributed.sources.plan import ShardedSource
from rmd_ray.io import storage

__all__ = ["ClassifierSpec", "classifier_from_checkpoint", "predict_source"]


@dataclass(frozen=True)
class ClassifierSpec:
    """A checkpoint and the eval geometry it was trained for (what every prediction actor rebuilds)."""

    checkpoint: str  # model.pt, local path or URI
    preset: str
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str = "classifier"
    pretrained: bool = False  # read by the run signature of embed_source

    def build(self):
        """An :class:`rmd_ray.nn.encoders.Encoder` whose model returns logits (eval mode)."""
        from rmd_ray.nn.encoders import Encoder

        model, _ = _load(self.checkpoint)
        prep = self.preprocessing()
        num_classes = int(model.fc.out_features) if hasattr(model, "fc") else int(model(_probe(self)).shape[1])
        return Encoder(self.name, model, num_classes, self.image_size, prep.transform(), prep.describe())

    def preprocessing(self):
        """The checkpoint's eval geometry and normalisation (a :class:`rmd_ray.nn.encoders.Preprocessing`)
        from the spec alone: decode tasks learn it without loading the checkpoint. PIL resampling, so the
        numbers are those of training's eval (:func:`rmd_ray.nn.transforms.eval_geometry`)."""
        from rmd_ray.nn.encoders import Preprocessing
        from rmd_ray.nn.transforms import eval_resize

        resize = eval_resize(self.preset, self.image_size)
        return Preprocessing(self.image_size, resize, "bilinear", self.mean, self.std,
                             note=f"{self.preset} eval geometry", engine="pil")


def classifier_from_checkpoint(checkpoint: str) -> ClassifierSpec:
    """The :class:`ClassifierSpec` a training checkpoint describes (``model.pt`` or its folder, any URI).

    The geometry comes from the checkpoint's ``extra`` (``preset``, ``input_side``, ``mean``, ``std``,
    written by every training run): any source predicted with it is brought to the size and the
    normalisation the model was trained with.
    """
    uri = str(checkpoint)
    if storage.is_dir(uri):
        uri = storage.join(uri, "model.pt")
    _, info = _load(uri)
    extra = info.get("extra") if isinstance(info.get("extra"), dict) else {}
    side = extra.get("input_side") or extra.get("image_size")
    if "mean" not in extra or "std" not in extra or not side:
        raise ValueError(
            f"checkpoint {uri} holds no input geometry (mean, std, input_side) in its extra; predict "
            "checkpoints written by rmd_ray.distributed.training.run_training"
        )
    return ClassifierSpec(
        checkpoint=uri, preset=str(extra.get("preset", "cifar")), image_size=int(side),
        mean=tuple(float(m) for m in extra["mean"]), std=tuple(float(s) for s in extra["std"]),
    )


def _probe(spec: ClassifierSpec):
    import torch

    return torch.zeros(1, 3, spec.image_size, spec.image_size)


@functools.lru_cache(maxsize=2)
def _load(checkpoint: str):
    from rmd_ray.nn.engine import model_from_checkpoint

    if not storage.is_remote(checkpoint):
        return model_from_checkpoint(checkpoint, map_location="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "model.pt")
        with open(local, "wb") as fh:
            fh.write(storage.read_bytes(checkpoint))
        return model_from_checkpoint(local, map_location="cpu")


def predict_source(
    source: ShardedSource,
    spec: ClassifierSpec,
    output: str,
    *,
    batch_size: int = 256,
    gpus_per_actor: float | None = None,
    num_actors: int | None = None,
    fresh: bool | None = True,
    metadata: dict[str, Any] | None = None,
) -> str:
    """Predict every row of ``source`` with ``spec`` into the directory ``output`` (any URI); return it.

    ``fresh=False`` resumes a killed prediction into the same ``output`` (one of another checkpoint or source
    there is an error). ``fresh=None`` resumes when ``output`` holds a prediction of this checkpoint, source
    and settings, finished or not (its shards with completion records are kept), and starts over otherwise:
    what training's rerun after a crash does.
    """
    extract = ExtractConfig(batch_size=batch_size, num_actors=num_actors, gpus_per_actor=gpus_per_actor)
    if fresh is None:
        fresh = not same_run(output, run_signature(source, spec, extract, spec.image_size))
    result = embed_source(
        source,
        features_dir=output,
        encoder=spec,
        extract=extract,
        resolution=spec.image_size,
        feature_dim=0,  # filled from the model: the manifest's num_classes says K
        fresh=fresh,
        column="logits",
        metadata=metadata,
    )
    return result.features_dir

"""Corruption shift of a checkpoint as one Ray Data execution: corrupt in tasks, predict in actors.

::

    shards --one generator task per shard: read -> decode (checkpoint's eval geometry, uint8) ->
           for the clean images and each (corruption, severity): corrupt every image with its own
           generator (rmd_ray.evaluation.corruption.corruption_rng(plan index, name, severity, seed))
      --> model actor pool (GPU when asked): normalise, forward, softmax -> (variant, confidence, correct)
      --> driver: per variant, accuracy and ECE (both binnings) from confidences
          (rmd_ray.core.metrics.calibration_error_from_confidence)

Only two numbers per (image, variant) reach the driver, never logits or pixels. A row's generator
depends on its plan position, not on batching or scheduling, so the result equals the in-process
:func:`rmd_ray.evaluation.shift.checkpoint_corruption_eval` on the same rows in plan order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from rmd_ray.distributed.prediction.predict import ClassifierSpec, classifier_from_checkpoint
from rmd_ray.distributed.runtime.cluster import worker_device, worker_setup
from rmd_ray.distributed.sources.plan import Shard, ShardedSource, open_source, read_shard

__all__ = ["shift_eval"]

_ROWS = 32  # images decoded at a time; each yields one block per variant


def _corrupt_shard(
    batch: pa.Table, *, plan: dict[int, Shard], offsets: dict[int, int], classes: tuple[str, ...], spec: ClassifierSpec,
    variants: list[tuple[str, int]], seed: int, preset: str,
) -> Iterator[dict[str, np.ndarray]]:
    from rmd_ray.data.corruptions import corrupt
    from rmd_ray.data.decode import DecodeError, decode_image
    from rmd_ray.evaluation.corruption import corruption_rng
    from rmd_ray.nn.transforms import eval_geometry

    worker_setup()
    geometry = eval_geometry(spec.preset, spec.image_size)
    for index in batch.column("shard").to_pylist():
        table = read_shard(plan[index], classes=classes)
        for start in range(0, table.num_rows, _ROWS):
            part = table.slice(start, _ROWS)
            rows = part.select([c for c in part.column_names if c not in ("shard", "shard_rows")]).to_pylist()
            images = []
            for row in rows:
                try:
                    images.append(np.asarray(geometry(decode_image(row)), dtype=np.uint8))
                except DecodeError as err:
                    raise ValueError(f"row id {row['id']!r}: {err}") from None
            positions = offsets[index] + start + np.arange(len(rows))
            labels = part.column("label").to_numpy().astype(np.int64)
            for v, (name, severity) in enumerate(variants):
                if severity == 0:
                    out = np.stack(images)
                else:
                    out = np.stack([
                        corrupt(img, name, severity=severity, rng=corruption_rng(int(i), name, severity, seed=seed),
                                preset=preset)
                        for img, i in zip(images, positions)
                    ])
                yield {"image": out, "label": labels, "variant": np.full(len(rows), v, dtype=np.int64)}


class _ShiftActor:
    """Builds the checkpoint's model once; maps uint8 images to (variant, confidence, correct)."""

    def __init__(self, spec: ClassifierSpec) -> None:
        import torch

        from rmd_ray.nn.transforms import normalize_uint8

        worker_setup()
        encoder = spec.build()
        self.model = encoder.model.eval()
        self.mean, self.std = torch.tensor(spec.mean), torch.tensor(spec.std)
        self.normalize = normalize_uint8
        self.device = worker_device()
        self.model.to(self.device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        images = torch.from_numpy(np.ascontiguousarray(batch["image"])).to(self.device)
        with torch.inference_mode():
            logits = self.model(self.normalize(images, self.mean, self.std)).double()
        probs = torch.softmax(logits, dim=1).cpu().numpy()
        pred = probs.argmax(axis=1)
        return {
            "variant": batch["variant"],
            "confidence": probs.max(axis=1),
            "correct": pred == batch["label"],
        }


def shift_eval(
    checkpoint: str,
    source: str | ShardedSource,
    *,
    corruptions: Sequence[str] | None = None,
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    preset: str = "auto",
    seed: int = 0,
    limit: int | None = None,
    batch_size: int = 256,
    num_actors: int | None = None,
    use_gpu: bool = False,
) -> list[dict[str, Any]]:
    """Accuracy and ECE of ``checkpoint`` on ``source``, clean and under each (corruption, severity).

    Parameters
    ----------
    checkpoint : str
        ``model.pt`` of a training run or its folder (any URI).
    source : str or ShardedSource
        Clean images (a source spec or a planned source); ``limit`` keeps the first rows of a spec.
    corruptions : sequence of str, optional
        Default: every corruption usable here (:func:`rmd_ray.data.corruptions.available_corruptions`).
    severities, seed
        As in :func:`rmd_ray.evaluation.corruption.corruption_eval`.
    preset : {"auto", "cifar", "imagenet"}
        Severity table; ``auto`` by the checkpoint's input side (CIFAR-10-C up to 64 px).

    Returns
    -------
    list of dict
        ``{"corruption", "severity", "acc", "ece_mass", "ece_width", "n"}``, the clean row first, then
        each corruption and severity in the order given.
    """
    from rmd_ray.evaluation.corruption import CLEAN
    from rmd_ray.evaluation.shift import corruption_preset

    spec = classifier_from_checkpoint(checkpoint)
    variants = [(CLEAN, 0)] + _variants(corruptions, severities)
    planned = open_source(source, limit=limit) if isinstance(source, str) else source
    table_preset = corruption_preset(spec.image_size, spec.image_size, preset)
    ds = _shift_dataset(planned, spec, variants, seed=seed, preset=table_preset, batch_size=batch_size,
                        num_actors=num_actors, use_gpu=use_gpu)
    return _shift_rows(ds, variants, total=sum(shard.n_rows for shard in planned.shards))


def _variants(corruptions: Sequence[str] | None, severities: Sequence[int]) -> list[tuple[str, int]]:
    """Every (corruption, severity) asked for, checked: names in the registry, distinct severities in 1..5."""
    from rmd_ray.data.corruptions import CORRUPTIONS, SEVERITIES, available_corruptions

    names = list(corruptions) if corruptions is not None else available_corruptions()[0]
    for name in names:
        CORRUPTIONS.get(name)  # unknown name: ValueError listing the valid ones
    sev = [int(s) for s in severities]
    if not sev or any(s not in SEVERITIES for s in sev) or len(set(sev)) != len(sev):
        raise ValueError(f"severities must be distinct integers in 1..5, got {list(severities)!r}")
    return [(name, s) for name in names for s in sev]


def _shift_dataset(planned: ShardedSource, spec, variants, *, seed, preset, batch_size, num_actors, use_gpu):
    """Shards -> corrupted variants (a task per shard) -> the classifier's confidence and correctness (actors)."""
    from rmd_ray.distributed.inference.pipeline import ExtractConfig, actor_resources

    offsets, total = {}, 0
    for shard in planned.shards:
        offsets[shard.index] = total
        total += shard.n_rows
    actors, gpus = actor_resources(ExtractConfig(num_actors=num_actors, gpus_per_actor=1.0 if use_gpu else 0.0))
    shards = [s for s in planned.shards if s.n_rows]
    ds = ray.data.from_items([{"shard": s.index} for s in shards], override_num_blocks=len(shards))
    ds = ds.map_batches(
        _corrupt_shard,
        fn_kwargs={"plan": {s.index: s for s in shards}, "offsets": offsets, "classes": planned.classes, "spec": spec,
                   "variants": variants, "seed": seed, "preset": preset},
        batch_size=1, batch_format="pyarrow", num_cpus=1.0,
    )
    return ds.map_batches(
        _ShiftActor, fn_constructor_kwargs={"spec": spec}, compute=ray.data.ActorPoolStrategy(size=actors),
        batch_size=batch_size, batch_format="numpy", num_cpus=0 if gpus else 1, num_gpus=gpus,
    )


def _shift_rows(ds, variants, *, total: int) -> list[dict[str, Any]]:
    """Accuracy and ECE (both binnings) per variant from the streamed (confidence, correct) pairs."""
    from rmd_ray.core.metrics import calibration_error_from_confidence

    confidence: list[list[np.ndarray]] = [[] for _ in variants]
    correct: list[list[np.ndarray]] = [[] for _ in variants]
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for v in np.unique(batch["variant"]):
            keep = batch["variant"] == v
            confidence[int(v)].append(batch["confidence"][keep])
            correct[int(v)].append(batch["correct"][keep])
    rows = []
    for v, (name, severity) in enumerate(variants):
        conf, hit = np.concatenate(confidence[v]), np.concatenate(correct[v]).astype(bool)
        if len(conf) != total:
            raise RuntimeError(f"{name} severity {severity}: {len(conf)} predictions for {total} images")
        rows.append({
            "corruption": name, "severity": severity, "acc": float(hit.mean()), "n": int(len(conf)),
            "ece_mass": calibration_error_from_confidence(conf, hit, n_bins=15, binning="mass"),
            "ece_width": calibration_error_from_confidence(conf, hit, n_bins=15, binning="width"),
        })
    return rows

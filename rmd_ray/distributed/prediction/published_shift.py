"""A published ImageNet-C directory evaluated as lazy sources: one ``folder:`` source per (corruption,
severity), predicted by the checkpoint's model actors, reduced to metrics from per-row summaries.

ImageNet-C is ``ROOT/<corruption>/<severity>/<wnid>/<file>``: 19 x 5 x 50,000 = 4.75 M images. Each
``ROOT/<corruption>/<severity>`` is an ImageFolder, so it is planned like any ``folder:`` source (class
folders listed in tasks, images read and decoded in tasks, at the checkpoint's geometry) and predicted
with :func:`rmd_ray.distributed.prediction.predict.predict_source` (GPU actors when asked); the
predictions go under ``output_dir`` and the driver reads them back as per-row summaries
(:func:`rmd_ray.evaluation.summaries.summarise_predictions`), never as images or logits. The labels are
the positions of the sorted wnid folders, as for the set read whole
(:func:`rmd_ray.data.corruptions.read_imagenet_c`); every (corruption, severity) must hold the same wnids,
else its labels would shift. CIFAR-10-C (``.npy`` arrays, 150 MB a corruption) stays in-process
(:func:`rmd_ray.evaluation.shift.checkpoint_corruption_eval`, memory-mapped).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rmd_ray.core.metrics import metrics_from_summaries
from rmd_ray.distributed.prediction.predict import classifier_from_checkpoint, predict_source
from rmd_ray.distributed.sources.plan import open_source
from rmd_ray.evaluation.summaries import summarise_predictions
from rmd_ray.io import storage

__all__ = ["is_imagenet_c_tree", "published_shift_eval"]


def is_imagenet_c_tree(root: str) -> bool:
    """Whether ``root`` is an ImageNet-C tree (corruption folders), not CIFAR-10-C (``labels.npy``)."""
    return storage.is_dir(root) and not storage.is_file(storage.join(root, "labels.npy"))


def published_shift_eval(
    checkpoint: str,
    root: str,
    *,
    output_dir: str,
    corruptions: Sequence[str] | None = None,
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    limit: int | None = None,
    batch_size: int = 256,
    use_gpu: bool = False,
) -> list[dict[str, Any]]:
    """Accuracy and ECE of ``checkpoint`` on each (corruption, severity) of the ImageNet-C tree ``root``.

    Returns one row per (corruption, severity), sorted by name then severity, with ``acc``,
    ``ece_mass`` and ``ece_width`` (no clean row: a published set has no clean images), as
    :func:`rmd_ray.evaluation.shift.checkpoint_corruption_eval` returns for the set read whole.
    ``limit`` keeps the first ``limit`` images of each (corruption, severity) in plan order.

    Raises
    ------
    ValueError
        ``root`` holds no corruption folder, a requested corruption or severity is missing, or two
        (corruption, severity) folders hold different wnids.
    """
    spec = classifier_from_checkpoint(checkpoint)
    found = sorted(storage.basename(d) for d in storage.list_dirs(root))
    if not found:
        raise ValueError(f"published corruption root {root!r} holds no corruption folder (<corruption>/<severity>/)")
    names = list(found) if corruptions is None else list(corruptions)
    missing = sorted(set(names) - set(found))
    if missing:
        raise ValueError(f"corruption(s) {missing} are not in the published set; it holds {', '.join(found)}")
    rows, classes = [], None
    for name in names:
        for severity in severities:
            where = storage.join(root, name, str(int(severity)))
            if not storage.is_dir(where):
                raise ValueError(f"{where!r} does not exist: the published set has no severity {severity} of {name}")
            planned = open_source(f"folder:{where}", limit=limit)
            if classes is not None and planned.classes != classes:
                raise ValueError(f"{where!r} holds other wnid folders than the first (corruption, severity): its "
                                 "labels would not match; every severity folder needs the same wnids")
            classes = planned.classes
            target = storage.join(output_dir, name, str(int(severity)), "predictions.parquet")
            uri = predict_source(planned, spec, target, batch_size=batch_size, gpus_per_actor=1.0 if use_gpu else 0.0,
                                 metadata={"split": f"published:{name}/{severity}", "source": where})
            metrics = metrics_from_summaries(summarise_predictions(uri).columns)
            rows.append({"corruption": name, "severity": int(severity), "acc": metrics["acc"],
                         "ece_mass": metrics["ece_mass"], "ece_width": metrics["ece_width"]})
    return rows

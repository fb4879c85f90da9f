"""Evaluate a training checkpoint under corruption shift, straight from a reader table (torch layer, no Ray).

The checkpoint carries what evaluation needs besides the weights: the architecture (its model
signature), the per-channel ``mean`` / ``std`` the model was trained with, its geometry ``preset``
and the ``image_size`` of its inputs. Images are decoded and brought to that geometry exactly as
training's evaluation does (:func:`rmd_ray.nn.transforms.eval_geometry`), corrupted at that
resolution (as CIFAR-10-C is at 32 px), then normalised with :func:`rmd_ray.nn.transforms.normalize_uint8`.
It runs in the calling process on a table of a few thousand rows (the main job's corruption subset);
predictions of whole splits run as Ray batch inference (``rmd_ray.distributed.prediction.predict``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from rmd_ray.data.corruptions import SEVERITIES, available_corruptions
from rmd_ray.data.decode import DecodeError, decode_image
from rmd_ray.evaluation.corruption import corruption_eval, published_corruption_eval
from rmd_ray.nn.engine import model_from_checkpoint
from rmd_ray.nn.transforms import eval_geometry, normalize_uint8

__all__ = ["checkpoint_corruption_eval", "corruption_preset", "decode_split"]

#: Largest image side that uses the CIFAR-10-C severity table under ``preset="auto"``.
CIFAR_PRESET_MAX_SIDE = 64


def corruption_preset(height: int, width: int, preset: str = "auto") -> str:
    """``"auto"``: the CIFAR-10-C table for images up to 64 px a side, ImageNet-C's above."""
    if preset != "auto":
        return preset
    return "cifar" if max(height, width) <= CIFAR_PRESET_MAX_SIDE else "imagenet"


def checkpoint_corruption_eval(
    checkpoint: str | os.PathLike[str],
    table: pa.Table,
    *,
    corruptions: Sequence[str] | None = None,
    severities: Sequence[int] = SEVERITIES,
    preset: str = "auto",
    batch_size: int = 256,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> list[dict[str, Any]]:
    """:func:`rmd_ray.evaluation.corruption.corruption_eval` of a checkpoint on a reader table.

    Parameters
    ----------
    checkpoint : path
        ``model.pt`` or a Ray checkpoint folder from ``run_training`` (``TrainResult.last_checkpoint``).
    table : pyarrow.Table
        A reader table (``id``, ``label``, an image column); every row must decode. A table with
        ``corruption`` and ``severity`` columns (``read_source("imagenet-c:ROOT")``) holds published,
        already corrupted images: they are evaluated as read, one row per (corruption, severity) and
        no clean row (:func:`rmd_ray.evaluation.corruption.published_corruption_eval`).
    corruptions : sequence of str, optional
        Default: every name in :data:`rmd_ray.data.corruptions.CORRUPTIONS` that is usable here
        (``frost`` is left out, with a warning, when its textures are not installed).
    severities, batch_size, seed, device
        As in :func:`corruption_eval`.
    preset : {"auto", "cifar", "imagenet"}
        Severity table; ``"auto"`` picks it from the model's input size (:func:`corruption_preset`).

    Returns
    -------
    list of dict
        ``{"corruption", "severity", "acc", "ece_mass", "ece_width"}``: the clean row first.

    Raises
    ------
    ValueError
        The checkpoint cannot be rebuilt or lacks the normalisation statistics; an image does not
        decode; bad corruption names or severities (from :func:`corruption_eval`).
    """
    model, info = model_from_checkpoint(checkpoint, map_location="cpu")
    extra = info["extra"] if isinstance(info["extra"], dict) else {}
    if "mean" not in extra or "std" not in extra:
        raise ValueError(
            f"checkpoint {os.fspath(checkpoint)} holds no normalisation mean/std in its extra; evaluate "
            "checkpoints written by rmd_ray.distributed.training.run_training, or call corruption_eval "
            "with your own preprocess"
        )
    published = "corruption" in table.column_names and "severity" in table.column_names
    if published:  # already corrupted (imagenet-c:ROOT): keep the requested names and severities
        table = _select_published(table, corruptions, severities)
    images, labels = decode_split(table, preset=extra.get("preset", "cifar"), image_size=extra.get("image_size"))
    # the same arithmetic as training's input pipeline, so clean accuracy matches its predictions
    mean, std = torch.tensor(extra["mean"]), torch.tensor(extra["std"])

    def preprocess(batch: np.ndarray) -> torch.Tensor:
        return normalize_uint8(torch.from_numpy(batch), mean, std)

    if published:
        return published_corruption_eval(
            model.to(device), images, labels, table.column("corruption").to_pylist(),
            table.column("severity").to_numpy(), preprocess=preprocess, batch_size=batch_size, device=device,
        )
    return corruption_eval(
        model.to(device),
        images,
        labels,
        corruptions=list(corruptions) if corruptions is not None else _default_corruptions(),
        severities=severities,
        preprocess=preprocess,
        batch_size=batch_size,
        seed=seed,
        preset=corruption_preset(images.shape[1], images.shape[2], preset),
        device=device,
    )


def decode_split(table: pa.Table, *, preset: str, image_size: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Decode every row of a (small) reader table at a checkpoint's eval geometry.

    Returns
    -------
    images : ndarray (N, S, S, 3) uint8
    labels : ndarray (N,) int64

    Raises
    ------
    ValueError
        An undecodable image (names its id) or, at the native size, images of different sizes.
    """
    geometry = eval_geometry(preset, image_size)
    arrays = []
    for batch in table.to_batches(max_chunksize=1024):  # bounded temporaries: no whole-table pylist
        for row in batch.to_pylist():
            try:
                image = decode_image(row)
            except DecodeError as err:
                raise ValueError(f"row id {row['id']!r}: {err}") from err
            arrays.append(np.asarray(geometry(image), dtype=np.uint8))
            if arrays[-1].shape != arrays[0].shape:
                raise ValueError(
                    f"row id {row['id']!r} is {arrays[-1].shape[1]}x{arrays[-1].shape[0]} but the first image is "
                    f"{arrays[0].shape[1]}x{arrays[0].shape[0]}; the checkpoint has no image_size to resize to"
                )
    labels = table.column("label").to_numpy().astype(np.int64)
    return np.stack(arrays), labels


def _select_published(table: pa.Table, corruptions: Sequence[str] | None, severities: Sequence[int]) -> pa.Table:
    """The rows of a published table with the requested corruption names and severities."""
    import pyarrow.compute as pc

    found = sorted(set(table.column("corruption").to_pylist()))
    if corruptions is not None:
        missing = sorted(set(corruptions) - set(found))
        if missing:
            raise ValueError(f"corruption(s) {missing} are not in the published set; it holds {', '.join(found)}")
        table = table.filter(pc.is_in(table.column("corruption"), pa.array(list(corruptions), pa.string())))
    table = table.filter(pc.is_in(table.column("severity"), pa.array([int(s) for s in severities], pa.int64())))
    if table.num_rows == 0:
        raise ValueError(f"no published image has severity in {list(severities)}")
    return table


def _default_corruptions() -> list[str]:
    """Every corruption usable here; one whose asset is missing (frost's textures) is left out with a warning."""
    names, skipped = available_corruptions()
    for reason in skipped.values():
        warnings.warn(f"left out of the default corruption list: {reason}", UserWarning, stacklevel=3)
    return names

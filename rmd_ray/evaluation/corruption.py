"""Accuracy and calibration under ImageNet-C-style corruptions, applied on the fly.

Every image is corrupted with :func:`rmd_ray.data.corruptions.corrupt` using its own random generator,
seeded by ``(seed, image index, corruption name, severity)`` (:func:`corruption_rng`). The corrupted
image is therefore the same whatever the batch size, the order of the corruption list, or which
other corruptions are evaluated, and a single image can be reproduced on its own.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from rmd_ray.core.metrics import expected_calibration_error, softmax
from rmd_ray.data.corruptions import CORRUPTIONS, PRESETS, SEVERITIES, corrupt
from rmd_ray.nn.engine import predict

__all__ = ["CLEAN", "corruption_eval", "corruption_rng", "published_corruption_eval"]

#: ``corruption`` value of the uncorrupted row (its ``severity`` is 0).
CLEAN = "clean"


def corruption_rng(index: int, name: str, severity: int, *, seed: int = 0) -> np.random.Generator:
    """The generator that corrupts image ``index`` with ``name`` at ``severity``.

    ``numpy.random.default_rng([seed, index, crc32(name), severity])``: a fixed function of its
    arguments across processes and machines (``zlib.crc32``, unlike ``hash``, is not salted).
    """
    return np.random.default_rng([int(seed), int(index), zlib.crc32(name.encode()), int(severity)])


def _check_inputs(model, images, labels, corruptions, severities, preprocess, batch_size, seed, preset):
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        raise TypeError(
            "images must be a uint8 numpy array (N, H, W, 3) of unnormalised pixels, got "
            f"{type(images).__name__} {getattr(images, 'dtype', '')}"
        )
    if images.ndim != 4 or images.shape[3] != 3 or images.shape[0] == 0:
        raise ValueError(
            f"images must have shape (N, H, W, 3) with N >= 1, got {images.shape}; repeat a grey channel "
            "with np.repeat(images[..., None], 3, axis=-1)"
        )
    y = np.asarray(labels)
    if y.dtype.kind not in "iu" or y.ndim != 1:
        raise ValueError(f"labels must be a 1-D integer array, got dtype {y.dtype} shape {y.shape}")
    if y.shape[0] != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {y.shape[0]} labels; pass one label per image")
    if isinstance(corruptions, str) or not isinstance(corruptions, Sequence) or len(corruptions) == 0:
        raise ValueError(
            f"corruptions must be a non-empty list of names from {CORRUPTIONS.names()}, got {corruptions!r}"
        )
    for name in corruptions:
        CORRUPTIONS.get(name)  # unknown name -> ValueError listing the valid ones
    if len(set(corruptions)) != len(corruptions):
        raise ValueError(f"corruptions repeat a name: {list(corruptions)}")
    sev = list(severities) if isinstance(severities, Sequence) else None
    if not sev or any(isinstance(s, bool) or s not in SEVERITIES for s in sev) or len(set(sev)) != len(sev):
        raise ValueError(
            f"severities must be a non-empty list of distinct integers in 1..5, got {severities!r}"
        )
    if not callable(preprocess):
        raise TypeError(
            "preprocess must be a callable (uint8 batch (B, H, W, 3) -> float tensor (B, C, H', W'))"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    PRESETS.get(preset)
    return y.astype(np.int64), [int(s) for s in sev]


def _batches(images, labels, batch_size, preprocess, transform):
    for start in range(0, images.shape[0], batch_size):
        stop = min(start + batch_size, images.shape[0])
        raw = np.stack([transform(i) for i in range(start, stop)])
        x = preprocess(raw)
        if (
            not isinstance(x, torch.Tensor)
            or not x.is_floating_point()
            or x.ndim != 4
            or x.shape[0] != len(raw)
        ):
            raise ValueError(
                "preprocess must return a float tensor (B, C, H, W) with one row per image; got "
                f"{type(x).__name__} {getattr(x, 'dtype', '')} {tuple(getattr(x, 'shape', ()))}"
            )
        yield {"image": x, "label": torch.from_numpy(labels[start:stop]), "id": torch.arange(start, stop)}


def _row(name: str, severity: int, logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    if logits.ndim != 2 or logits.shape[1] <= labels.max():
        raise ValueError(
            f"model returned logits of shape {logits.shape}; need (N, K) with K > the largest "
            f"label {labels.max()}"
        )
    probs = softmax(logits.astype(np.float64))
    return {
        "corruption": name,
        "severity": severity,
        "acc": float(np.mean(probs.argmax(axis=1) == labels)),
        "ece_mass": expected_calibration_error(probs, labels, n_bins=15, binning="mass"),
        "ece_width": expected_calibration_error(probs, labels, n_bins=15, binning="width"),
    }


def corruption_eval(
    model: nn.Module,
    images: np.ndarray,
    labels: Any,
    *,
    corruptions: Sequence[str],
    severities: Sequence[int] = SEVERITIES,
    preprocess: Callable[[np.ndarray], torch.Tensor],
    batch_size: int = 256,
    seed: int = 0,
    preset: str = "imagenet",
    device: str | torch.device = "cpu",
) -> list[dict[str, Any]]:
    """Accuracy and ECE of ``model`` on clean images and on each (corruption, severity).

    Parameters
    ----------
    model : torch.nn.Module
        Returns logits (B, K); run in eval mode (its previous mode is restored).
    images : ndarray of shape (N, H, W, 3), uint8
        Clean RGB images, before any normalisation.
    labels : array-like of int, shape (N,)
    corruptions : sequence of str
        Names from :data:`rmd_ray.data.corruptions.CORRUPTIONS`.
    severities : sequence of int in 1..5
    preprocess : callable
        ``uint8 array (B, H, W, 3) -> float tensor (B, C, H', W')``: the model's input transform,
        applied after corruption.
    batch_size : int
    seed : int
        See :func:`corruption_rng`.
    preset : {"imagenet", "cifar"}
        Severity table of :func:`rmd_ray.data.corruptions.corrupt`: ``"cifar"`` for 32 px images.
    device : torch device for the forward pass

    Returns
    -------
    list of dict
        ``{"corruption", "severity", "acc", "ece_mass", "ece_width"}`` (fractions; ECE with 15 bins).
        First the clean row (``corruption="clean"``, ``severity=0``), then one row per corruption and
        severity in the order given.
    """
    y, sev = _check_inputs(
        model, images, labels, corruptions, severities, preprocess, batch_size, seed, preset
    )

    def run(transform: Callable[[int], np.ndarray]) -> np.ndarray:
        _, _, logits = predict(
            model, _batches(images, y, int(batch_size), preprocess, transform), device=device
        )
        return logits

    rows = [_row(CLEAN, 0, run(lambda i: images[i]), y)]
    for name in corruptions:
        for s in sev:

            def transform(i: int, name: str = name, s: int = s) -> np.ndarray:
                return corrupt(
                    images[i], name, severity=s, rng=corruption_rng(i, name, s, seed=seed), preset=preset
                )

            rows.append(_row(name, s, run(transform), y))
    return rows


def published_corruption_eval(
    model: nn.Module,
    images: np.ndarray,
    labels: Any,
    corruptions: Sequence[str],
    severities: Any,
    *,
    preprocess: Callable[[np.ndarray], torch.Tensor],
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> list[dict[str, Any]]:
    """Accuracy and ECE on images that were corrupted already (published ImageNet-C / CIFAR-10-C).

    Parameters
    ----------
    model, preprocess, batch_size, device
        As in :func:`corruption_eval`.
    images : ndarray of shape (N, H, W, 3), uint8
        The corrupted images, as read (:func:`rmd_ray.data.readers.read_published_corruptions`).
    labels : array-like of int, shape (N,)
    corruptions : sequence of str, length N
        The corruption of each image (any name: the published sets are not generated here).
    severities : array-like of int in 1..5, shape (N,)

    Returns
    -------
    list of dict
        ``{"corruption", "severity", "acc", "ece_mass", "ece_width"}``, one row per (corruption,
        severity) present, sorted by corruption then severity. No clean row: the published sets hold
        no clean images.
    """
    names = np.asarray(list(corruptions), dtype=object)
    sev = np.asarray(severities)
    y, _ = _check_inputs(model, images, labels, ["gaussian_noise"], SEVERITIES, preprocess, batch_size, 0,
                         "imagenet")  # the names are checked below: published ones need not be registered
    if names.shape != y.shape or sev.shape != y.shape:
        raise ValueError(
            f"{y.shape[0]} images but {names.shape[0]} corruption names and {sev.shape[0]} severities; "
            "pass one of each per image"
        )
    if sev.dtype.kind not in "iu" or not np.isin(sev, SEVERITIES).all():
        raise ValueError(f"severities must be integers in 1..5, got {sorted(set(sev.tolist()))}")
    rows = []
    for name, s in sorted({(str(n), int(v)) for n, v in zip(names, sev)}):
        index = np.flatnonzero((names == name) & (sev == s))
        group = images[index]
        batches = _batches(group, y[index], int(batch_size), preprocess, lambda i, g=group: g[i])
        _, _, logits = predict(model, batches, device=device)
        rows.append(_row(name, s, logits, y[index]))
    return rows

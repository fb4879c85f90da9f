"""Reader for published, already-corrupted ImageNet-C and CIFAR-10-C directories
(:func:`read_published_corruptions`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from rmd_ray.data.readers.tables import check_limit, default_classes, pixel_table, with_metadata

CIFAR_C_PER_SEVERITY = 10_000


def read_published_corruptions(root: str | os.PathLike, *, limit: int | None = None) -> pa.Table:
    """Read a published ImageNet-C or CIFAR-10-C directory: already-corrupted images, labelled.

    Two layouts, told apart by ``ROOT/labels.npy``:

    - CIFAR-10-C (Hendrycks & Dietterich's ``make_cifar_c.py``): ``ROOT/<corruption>.npy`` of shape
      (5 * 10,000, 32, 32, 3) uint8, severities 1..5 stacked in that order, and ``ROOT/labels.npy``
      (50,000,) with the labels of each severity block. Read with ``mmap``: only the rows kept are loaded.
    - ImageNet-C: ``ROOT/<corruption>/<severity>/<wnid>/<file>``, labels from the sorted wnid folder
      names (:func:`rmd_ray.data.corruptions.read_imagenet_c`).

    Parameters
    ----------
    root : path
    limit : int, optional
        Keep the first ``limit`` images of each (corruption, severity).

    Returns
    -------
    pyarrow.Table
        ``id`` (``<corruption>/<severity>/<index or relative path>``), ``label`` int64, ``corruption``
        string, ``severity`` int64, and the image: ``pixels`` + ``shape`` (CIFAR-10-C) or ``path``
        (ImageNet-C). Sorted by corruption, then severity.

    Raises
    ------
    ValueError
        ``root`` is not a directory, a ``.npy`` whose shape is not (5 n, H, W, 3) or does not match
        ``labels.npy``, or no corruption found.
    """
    from rmd_ray.data.corruptions import read_imagenet_c

    check_limit(limit)
    base = Path(root)
    if not base.is_dir():
        raise ValueError(f"published corruption root {str(base)!r} is not a directory")
    if (base / "labels.npy").is_file():
        return _read_cifar_c(base, limit)
    counts: dict[tuple[str, int], int] = {}
    kept = []
    for sample in read_imagenet_c(base):
        key = (sample.corruption, sample.severity)
        if limit is None or counts.get(key, 0) < limit:
            counts[key] = counts.get(key, 0) + 1
            kept.append(sample)
    table = pa.table(
        {
            "id": pa.array([s.id for s in kept], pa.string()),
            "label": pa.array([s.label for s in kept], pa.int64()),
            "path": pa.array([str(s.path) for s in kept], pa.string()),
            "corruption": pa.array([s.corruption for s in kept], pa.string()),
            "severity": pa.array([s.severity for s in kept], pa.int64()),
        }
    )
    wnid_of = {s.label: s.id.split("/")[2] for s in kept}  # label = index among all wnid folders
    classes = [wnid_of.get(k, str(k)) for k in range(max(wnid_of, default=-1) + 1)]
    return with_metadata(table, classes=classes, source=f"ImageNet-C {base}")


def _read_cifar_c(base: Path, limit: int | None) -> pa.Table:
    labels = np.load(base / "labels.npy", allow_pickle=False).astype(np.int64)
    names = sorted(p.stem for p in base.glob("*.npy") if p.stem != "labels")
    if not names:
        raise ValueError(f"no <corruption>.npy next to {base / 'labels.npy'}; the CIFAR-10-C layout is ROOT/<name>.npy")
    parts = []
    for name in names:
        stack = np.load(base / f"{name}.npy", mmap_mode="r", allow_pickle=False)
        if stack.ndim != 4 or stack.shape[3] != 3 or stack.shape[0] % 5 or stack.shape[0] != labels.shape[0]:
            raise ValueError(
                f"{base / (name + '.npy')} has shape {stack.shape}; CIFAR-10-C needs (5 n, H, W, 3) with n "
                f"images per severity, matching labels.npy ({labels.shape[0]} rows)"
            )
        per = stack.shape[0] // 5
        keep = per if limit is None else min(limit, per)
        for severity in range(1, 6):
            rows = slice((severity - 1) * per, (severity - 1) * per + keep)
            part = pixel_table(np.asarray(stack[rows]), labels[rows],
                                [f"{name}/{severity}/{i:05d}" for i in range(keep)])
            part = part.append_column("corruption", pa.array([name] * keep, pa.string()))
            parts.append(part.append_column("severity", pa.array(np.full(keep, severity), pa.int64())))
    table = pa.concat_tables(parts)
    return with_metadata(table, classes=default_classes(labels), source=f"CIFAR-10-C {base}")

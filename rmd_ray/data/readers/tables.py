"""Helpers shared by the readers: table metadata (``b"classes"``), split and limit checks, pixel tables."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

SPLITS = ("train", "test")


# --------------------------------------------------------------------------------------------
# helpers


def with_metadata(table: pa.Table, *, classes: Sequence[str], source: str, **extra: object) -> pa.Table:
    meta = {b"classes": json.dumps(list(classes)).encode(), b"source": source.encode()}
    for key, value in extra.items():
        meta[key.encode()] = (value if isinstance(value, str) else json.dumps(value)).encode()
    return table.replace_schema_metadata(meta)


def table_classes(table: pa.Table) -> list[str]:
    """The class names stored in a reader table's ``b"classes"`` metadata (JSON list)."""
    meta = table.schema.metadata or {}
    if b"classes" not in meta:
        raise ValueError("table has no b'classes' metadata; build it with an rmd_ray.data.readers reader")
    return list(json.loads(meta[b"classes"]))


def default_classes(labels: np.ndarray) -> list[str]:
    top = int(labels.max()) + 1 if labels.size else 0
    return [str(k) for k in range(max(top, 0))]


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def check_limit(limit: int | None) -> None:
    if limit is not None and (
        isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 0
    ):
        raise ValueError(f"limit must be None or an int >= 0, got {limit!r}")


def _pixel_columns(images: np.ndarray) -> tuple[pa.Array, pa.Array]:
    """(pixels binary, shape list<int32>) columns for a uniform uint8 stack, without a Python loop."""
    n = images.shape[0]
    row_shape = images.shape[1:]
    row_bytes = math.prod(row_shape)
    data = np.ascontiguousarray(images, dtype=np.uint8).reshape(-1)
    if n * row_bytes >= 2**31:
        raise ValueError(f"{n} images of {row_bytes} bytes exceed one 2 GiB column; read in parts (limit=)")
    offsets = (np.arange(n + 1, dtype=np.int32) * row_bytes).astype(np.int32)
    pixels = pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    shape_values = pa.array(np.tile(np.asarray(row_shape, dtype=np.int32), n), type=pa.int32())
    shape_offsets = pa.array(np.arange(n + 1, dtype=np.int32) * len(row_shape), type=pa.int32())
    shape = pa.ListArray.from_arrays(shape_offsets, shape_values)
    return pixels, shape


def pixel_table(images: np.ndarray, labels: np.ndarray, ids: Sequence[str]) -> pa.Table:
    pixels, shape = _pixel_columns(images)
    return pa.table(
        {
            "id": pa.array(ids, type=pa.string()),
            "label": pa.array(np.asarray(labels, dtype=np.int64), type=pa.int64()),
            "pixels": pixels,
            "shape": shape,
        }
    )

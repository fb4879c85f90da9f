"""Atomic Parquet output with JSON provenance metadata."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rmd_ray.core.atomic import atomic_path

METADATA_KEY = b"rmd_ray"


def write_parquet_atomic(
    table: pa.Table, path: str | os.PathLike[str], *, metadata: dict[str, Any] | None = None
) -> Path:
    """Write ``table`` to ``path`` via a temporary file in the same folder and ``os.replace``.

    A reader never sees a half-written file, and a crash leaves the previous file intact.
    ``metadata`` is stored as JSON under the schema key ``rmd_ray`` (see :func:`read_metadata`).
    """
    path = Path(path)
    if metadata is not None:
        existing = dict(table.schema.metadata or {})
        existing[METADATA_KEY] = json.dumps(metadata, default=str).encode()
        table = table.replace_schema_metadata(existing)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return path


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The provenance dict written by :func:`write_parquet_atomic` (empty if none)."""
    raw = (pq.read_schema(path).metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else {}

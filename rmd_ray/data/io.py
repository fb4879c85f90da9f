"""Atomic Parquet output with JSON provenance metadata."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

METADATA_KEY = b"rmd_ray"


def write_parquet_atomic(
    table: pa.Table, path: str | os.PathLike[str], *, metadata: dict[str, Any] | None = None
) -> Path:
    """Write ``table`` to ``path`` via a temporary file in the same folder and ``os.replace``.

    A reader never sees a half-written file, and a crash leaves the previous file intact.
    ``metadata`` is stored as JSON under the schema key ``rmd_ray`` (see :func:`read_metadata`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if metadata is not None:
        existing = dict(table.schema.metadata or {})
        existing[METADATA_KEY] = json.dumps(metadata, default=str).encode()
        table = table.replace_schema_metadata(existing)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The provenance dict written by :func:`write_parquet_atomic` (empty if none)."""
    raw = (pq.read_schema(path).metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else {}

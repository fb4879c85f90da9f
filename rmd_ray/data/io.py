"""Atomic Parquet output with JSON provenance metadata, for local paths and object-store URIs.

Thin wrappers over :mod:`rmd_ray.data.storage` that keep this module's historical return type:
a :class:`~pathlib.Path` for local output, the URI string for object-store output.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa

from rmd_ray.data import storage
from rmd_ray.data.storage import METADATA_KEY

__all__ = ["METADATA_KEY", "read_metadata", "write_parquet_atomic"]


def write_parquet_atomic(
    table: pa.Table, path: str | os.PathLike[str], *, metadata: dict[str, Any] | None = None
) -> Path | str:
    """Write ``table`` to ``path`` (a local path or an ``s3://``/``gs://`` URI) so it is never half-visible.

    Locally: a temporary file in the same folder and ``os.replace``; a crash leaves the previous file
    intact. On an object store: serialised in memory, then one upload, visible only once complete
    (see :func:`rmd_ray.data.storage.write_parquet_atomic`). ``metadata`` is stored as JSON under the
    schema key ``rmd_ray`` (see :func:`read_metadata`).

    Returns
    -------
    pathlib.Path or str
        ``Path(path)`` for a local path (a ``file://`` URI gives its absolute path), the URI itself for
        an object store.
    """
    written = storage.write_parquet_atomic(table, path, metadata=metadata)
    if storage.is_remote(path):
        return written
    if isinstance(path, str) and path.lower().startswith("file:"):
        return Path(storage.resolve(path)[1])
    return Path(path)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The provenance dict written by :func:`write_parquet_atomic` (empty if none), for any location;
    for a parts directory (:mod:`rmd_ray.data.parts`), its manifest's."""
    from rmd_ray.data.parts import read_table_metadata  # parts imports storage only: no cycle at run time

    return read_table_metadata(path)

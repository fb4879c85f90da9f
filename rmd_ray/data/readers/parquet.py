"""Reader for Parquet files of encoded images (:func:`read_parquet_images`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa

from rmd_ray.data.readers.tables import check_limit, default_classes, with_metadata

# --------------------------------------------------------------------------------------------
# Parquet with encoded images


def parse_classes(raw: bytes) -> list[str]:
    """Class names from a ``b'classes'`` schema-metadata value: a JSON list, or comma-separated names."""
    text = raw.decode()
    try:
        value = json.loads(text)
        if isinstance(value, list):
            return [str(v) for v in value]
    except json.JSONDecodeError:
        pass
    return [c.strip() for c in text.split(",")]  # a CIFAR-10 Parquet export may store "airplane,automobile,..."


def read_parquet_images(
    path: str | os.PathLike,
    *,
    image_column: str = "image",
    label_column: str = "label",
    id_column: str = "id",
    limit: int | None = None,
) -> pa.Table:
    """Read a Parquet file (or directory of files) of encoded images.

    Parameters
    ----------
    path : path
        A ``.parquet`` file or a directory of them (read in sorted order).
    image_column, label_column, id_column : str
        Source column names; renamed to ``image``, ``label``, ``id``.
    limit : int, optional
        Read only the first ``limit`` rows (row groups past them are not read).

    Returns
    -------
    pyarrow.Table
        ``id`` string, ``label`` int64, ``image`` binary. ``classes`` come from the file's schema
        metadata ``b"classes"`` (JSON list or comma-separated), else ``["0", ..., str(max label)]``.
    """
    import pyarrow.dataset as ds

    check_limit(limit)
    path = Path(path)
    if not path.exists():
        raise ValueError(f"parquet path not found: {str(path)!r}")
    dataset = ds.dataset(str(path), format="parquet")
    names = dataset.schema.names
    missing = [c for c in (id_column, label_column, image_column) if c not in names]
    if missing:
        raise ValueError(f"{str(path)!r} lacks column(s) {missing}; its columns are {names}")
    columns = [id_column, label_column, image_column]
    table = dataset.head(limit, columns=columns) if limit is not None else dataset.to_table(columns=columns)
    label_type = table.schema.field(label_column).type
    if not pa.types.is_integer(label_type):
        raise ValueError(f"label column {label_column!r} must be integer, got {label_type}")
    image_type = table.schema.field(image_column).type
    if not (pa.types.is_binary(image_type) or pa.types.is_large_binary(image_type)):
        raise ValueError(f"image column {image_column!r} must hold encoded bytes (binary), got {image_type}")
    out = pa.table(
        {
            "id": table.column(id_column).cast(pa.string()),
            "label": table.column(label_column).cast(pa.int64()),
            "image": table.column(image_column).cast(pa.binary()),
        }
    )
    meta = dataset.schema.metadata or {}
    if b"classes" in meta:
        classes = parse_classes(meta[b"classes"])
    else:
        classes = default_classes(out.column("label").drop_null().to_numpy())
    source = meta.get(b"source", b"").decode()
    source = f"parquet {path}" + (f": {source}" if source else "")
    return with_metadata(out, classes=classes, source=source)

"""Small Parquet sources of random JPEGs for the hostile-input tests."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image


def jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def random_images(n: int, seed: int, side: int = 16) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [jpeg(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)) for _ in range(n)]


def write_parquet(path, labels, images, *, classes=None, row_group_size=64) -> None:
    """``id`` r000.., int16 ``label``, JPEG ``image``; class names in the schema metadata when given."""
    table = pa.table({"id": [f"r{i:03d}" for i in range(len(labels))], "label": pa.array(labels, pa.int16()),
                      "image": pa.array(images, pa.binary())})
    if classes is not None:
        table = table.replace_schema_metadata({"classes": json.dumps(list(classes))})
    pq.write_table(table, path, row_group_size=row_group_size)

"""Reader for Fashion-MNIST IDX files (:func:`read_fashion_mnist`), its class names and default root."""

from __future__ import annotations

import gzip
import math
import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from rmd_ray.data.readers.tables import check_limit, check_split, pixel_table, with_metadata

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


# --------------------------------------------------------------------------------------------
# Fashion-MNIST IDX


_IDX_IMAGES, _IDX_LABELS = 2051, 2049  # magic numbers 0x00000803 / 0x00000801


def _read_idx(path: Path, *, magic: int) -> np.ndarray:
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"cannot read IDX file {str(path)!r}: {err}") from err
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if found != magic:
        shown = "none (file shorter than 4 bytes)" if found is None else f"{found:#010x}"
        raise ValueError(
            f"{str(path)!r} is not an IDX {'image' if magic == _IDX_IMAGES else 'label'} "
            f"file: magic {shown}, expected {magic:#010x}"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if len(raw) != header + math.prod(dims):
        raise ValueError(
            f"{str(path)!r}: header says {dims} ({math.prod(dims)} bytes) but the file has "
            f"{len(raw) - header} data bytes"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _idx_file(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    raise ValueError(f"Fashion-MNIST file {stem}.gz missing under {str(root)!r}")


def read_fashion_mnist(
    root: str | os.PathLike = FASHION_MNIST_ROOT, *, split: str = "train", limit: int | None = None
) -> pa.Table:
    """Read Fashion-MNIST from its gzipped IDX files (Debian package ``dataset-fashion-mnist``).

    Parameters
    ----------
    root : path
        Folder with ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``, ``t10k-...``.
    split : {"train", "test"}
        60,000 or 10,000 images.
    limit : int, optional
        Keep the first ``limit`` rows.

    Returns
    -------
    pyarrow.Table
        ``id`` (``"<split>/<index:05d>"``), ``label`` int64, ``pixels`` (28x28 grayscale bytes),
        ``shape`` ``[28, 28]``; metadata ``classes`` (:data:`FASHION_MNIST_CLASSES`), ``source``.
    """
    check_split(split)
    check_limit(limit)
    root = Path(root)
    if not root.is_dir():
        raise ValueError(
            f"Fashion-MNIST not found at {str(root)!r}: install it with "
            "`apt-get update && apt-get install -y dataset-fashion-mnist` or pass root="
        )
    prefix = "train" if split == "train" else "t10k"
    images = _read_idx(_idx_file(root, f"{prefix}-images-idx3-ubyte"), magic=_IDX_IMAGES)
    labels = _read_idx(_idx_file(root, f"{prefix}-labels-idx1-ubyte"), magic=_IDX_LABELS)
    if len(images) != len(labels):
        raise ValueError(
            f"Fashion-MNIST {split}: {len(images)} images but {len(labels)} labels under {str(root)!r}"
        )
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    ids = [f"{split}/{i:05d}" for i in range(len(labels))]
    table = pixel_table(images, labels, ids)
    return with_metadata(table, classes=FASHION_MNIST_CLASSES, source=f"Fashion-MNIST IDX {root} ({split})")

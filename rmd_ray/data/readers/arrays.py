"""In-memory sources: scikit-learn's digits (:func:`read_sklearn_digits`) and :func:`from_arrays`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from rmd_ray.data.readers.tables import check_limit, default_classes, pixel_table, with_metadata

# --------------------------------------------------------------------------------------------
# in-memory arrays


def read_sklearn_digits(*, limit: int | None = None) -> pa.Table:
    """scikit-learn's bundled handwritten digits (1,797 images, 8 x 8, 10 classes): an offline OOD set.

    The images ship inside scikit-learn (``sklearn.datasets.load_digits``, no download), so a
    Fashion-MNIST model can be tested against MNIST-like digits, the usual far-OOD pair, on a machine
    with no dataset host. Pixels 0..16 are scaled to 0..255 (x * 255 / 16, rounded); models resize
    them to their input side. Ids are ``digits-<index>``.
    """
    from sklearn.datasets import load_digits

    check_limit(limit)
    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    table = from_arrays(images, labels, ids=[f"digits-{i}" for i in range(len(labels))])
    return with_metadata(table, classes=[str(k) for k in range(10)], source="sklearn-digits")


def from_arrays(
    images: np.ndarray,
    labels: np.ndarray | Sequence[int],
    *,
    ids: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
) -> pa.Table:
    """Table from an in-memory uint8 image stack.

    Parameters
    ----------
    images : numpy.ndarray, uint8, shape (N, H, W) or (N, H, W, C), C in 1, 3, 4
    labels : array-like of int, shape (N,)
    ids : sequence of str, optional
        Default ``"0", "1", ...``. Must be unique.
    classes : sequence of str, optional
        Default ``["0", ..., str(max label)]``.

    Returns
    -------
    pyarrow.Table
        ``id``, ``label`` int64, ``pixels``, ``shape``; metadata ``classes``, ``source``.
    """
    if not isinstance(images, np.ndarray):
        raise TypeError(f"images must be a numpy array, got {type(images).__name__}")
    if images.dtype != np.uint8:
        raise TypeError(f"images must be uint8 (0..255), got {images.dtype}; convert with np.clip + astype")
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] not in (1, 3, 4)):
        raise ValueError(f"images must be (N, H, W) or (N, H, W, C) with C in 1, 3, 4; got {images.shape}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got dtype {labels.dtype} shape {labels.shape}")
    n = images.shape[0]
    if len(labels) != n:
        raise ValueError(f"{n} images but {len(labels)} labels")
    if ids is None:
        ids = [str(i) for i in range(n)]
    else:
        ids = [str(i) for i in ids]
        if len(ids) != n:
            raise ValueError(f"{n} images but {len(ids)} ids")
        if len(set(ids)) != n:
            raise ValueError(f"ids must be unique; e.g. {_first_duplicate(ids)!r} repeats")
    classes = default_classes(labels) if classes is None else [str(c) for c in classes]
    table = pixel_table(images, labels, ids)
    return with_metadata(table, classes=classes, source=f"in-memory arrays {images.shape}")


def _first_duplicate(values: Sequence[str]) -> str:
    seen: set[str] = set()
    for v in values:
        if v in seen:
            return v
        seen.add(v)
    raise AssertionError("no duplicate")  # pragma: no cover - callers checked there is one

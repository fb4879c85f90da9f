"""Image-data readers: every source becomes one ``pyarrow.Table`` that :mod:`rmd_ray.data.decode` reads.

Every reader returns a table with columns

- ``id`` (string, unique within the source), ``label`` (int64), and the image column(s) of one kind:
- ``image`` (binary, encoded JPEG/PNG/...), or ``path`` (string, absolute file path), or
  ``pixels`` (binary, raw uint8, row-major) + ``shape`` (list<int32>: ``[H, W]`` or ``[H, W, C]``),

and table metadata ``b"classes"`` (JSON list of class names; class ``k`` is ``classes[k]``) and
``b"source"`` (a description), plus reader-specific keys (e.g. ``b"skipped_non_image"``).

Readers do not judge labels: :func:`validate_labels` splits a table into good rows and error rows
``(id, label, reason)`` so that no row is silently lost.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import pickle
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rmd_ray.core.registry import Registry

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_ROOT",
    "SOURCES",
    "from_arrays",
    "read_cifar_pickle",
    "read_fashion_mnist",
    "read_image_folder",
    "read_parquet_images",
    "read_sklearn_digits",
    "read_source",
    "table_classes",
    "validate_labels",
]

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
_SPLITS = ("train", "test")


# --------------------------------------------------------------------------------------------
# helpers


def _with_metadata(table: pa.Table, *, classes: Sequence[str], source: str, **extra: object) -> pa.Table:
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


def _default_classes(labels: np.ndarray) -> list[str]:
    top = int(labels.max()) + 1 if labels.size else 0
    return [str(k) for k in range(max(top, 0))]


def _check_split(split: str) -> None:
    if split not in _SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def _check_limit(limit: int | None) -> None:
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


def _pixel_table(images: np.ndarray, labels: np.ndarray, ids: Sequence[str]) -> pa.Table:
    pixels, shape = _pixel_columns(images)
    return pa.table(
        {
            "id": pa.array(ids, type=pa.string()),
            "label": pa.array(np.asarray(labels, dtype=np.int64), type=pa.int64()),
            "pixels": pixels,
            "shape": shape,
        }
    )


# --------------------------------------------------------------------------------------------
# Parquet with encoded images


def _parse_classes(raw: bytes) -> list[str]:
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

    _check_limit(limit)
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
        classes = _parse_classes(meta[b"classes"])
    else:
        classes = _default_classes(out.column("label").drop_null().to_numpy())
    source = meta.get(b"source", b"").decode()
    source = f"parquet {path}" + (f": {source}" if source else "")
    return _with_metadata(out, classes=classes, source=source)


# --------------------------------------------------------------------------------------------
# ImageFolder layout


# torchvision.datasets.folder.IMG_EXTENSIONS, copied so that listing workers need not import
# torchvision (seconds per process); tests/data/test_readers.py checks the two stay equal.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _image_extensions() -> tuple[str, ...]:
    return IMAGE_EXTENSIONS


def read_image_folder(root: str | os.PathLike, *, classes: Sequence[str] | None = None) -> pa.Table:
    """Read an ImageFolder / ImageNet-train layout ``root/<class>/<...>/<file>``.

    Parameters
    ----------
    root : path
    classes : sequence of str, optional
        Class names in label order. Default: the sorted sub-directory names of ``root`` (as
        torchvision's ``find_classes``, except that hidden ``.*`` directories are skipped). A given
        class without a directory keeps its index and gets a warning; a directory that is not a
        given class is an error (its images would have no label).

    Returns
    -------
    pyarrow.Table
        ``id`` (path relative to ``root``, ``/``-separated), ``label`` int64, ``path`` (absolute).
        Metadata: ``classes``, ``source``, ``skipped_non_image`` (count of files inside class
        directories whose extension is not in torchvision's ``IMG_EXTENSIONS``, case-insensitive),
        ``empty_classes`` (JSON list).

    Warns
    -----
    UserWarning
        For each class whose directory holds no image (the class is kept so indices match), and
        for given classes that have no directory.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"image folder root is not a directory: {str(root)!r}")
    dirs = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if classes is None:
        if not dirs:
            raise ValueError(f"{str(root)!r} has no class sub-directories (expected root/<class>/<image>)")
        classes = dirs
    else:
        classes = [str(c) for c in classes]
        if len(set(classes)) != len(classes):
            dup = next(c for c in classes if classes.count(c) > 1)
            raise ValueError(f"classes has duplicate name {dup!r}")
        given = set(classes)
        extra = [d for d in dirs if d not in given]
        if extra:
            raise ValueError(
                f"{len(extra)} directories under {str(root)!r} are not in classes (e.g. {extra[0]!r}); "
                "add them to classes or move them out"
            )
        absent = [c for c in classes if c not in set(dirs)]
        if absent:
            warnings.warn(
                f"{len(absent)} of {len(classes)} classes have no directory under {str(root)!r} "
                f"(e.g. {absent[0]!r}); they keep their indices and have no rows",
                stacklevel=2,
            )
    exts = _image_extensions()
    ids: list[str] = []
    labels: list[int] = []
    paths: list[str] = []
    skipped = 0
    empty: list[str] = []
    present = set(dirs)
    for index, name in enumerate(classes):
        if name not in present:
            continue
        n_before = len(ids)
        for dirpath, dirnames, filenames in os.walk(root / name, followlinks=True):
            dirnames.sort()
            for fname in sorted(filenames):
                full = Path(dirpath) / fname
                if not fname.lower().endswith(exts):
                    skipped += 1
                    continue
                ids.append(full.relative_to(root).as_posix())
                labels.append(index)
                paths.append(str(full.resolve()))
        if len(ids) == n_before:
            empty.append(name)
            warnings.warn(
                f"class directory {name!r} (index {index}) under {str(root)!r} has no images; "
                "kept so class indices stay aligned",
                stacklevel=2,
            )
    if not ids:
        raise ValueError(f"no image files under {str(root)!r} (extensions {', '.join(exts)})")
    table = pa.table(
        {
            "id": pa.array(ids, type=pa.string()),
            "label": pa.array(labels, type=pa.int64()),
            "path": pa.array(paths, type=pa.string()),
        }
    )
    return _with_metadata(
        table,
        classes=classes,
        source=f"image folder {root}",
        skipped_non_image=str(skipped),
        empty_classes=empty,
    )


# --------------------------------------------------------------------------------------------
# CIFAR python pickles


def _unpickle(path: Path) -> dict:
    # The official CIFAR files are Python 2 pickles: encoding="bytes" keeps their byte-string keys.
    # pickle runs code from the file, so read only files you trust (the published archives).
    try:
        with open(path, "rb") as fh:
            obj = pickle.load(fh, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, OSError) as err:
        raise ValueError(f"cannot unpickle CIFAR file {str(path)!r}: {err}") from err
    if not isinstance(obj, dict):
        raise ValueError(f"{str(path)!r} is not a CIFAR pickle (expected a dict, got {type(obj).__name__})")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}


def read_cifar_pickle(root: str | os.PathLike, *, split: str = "train") -> pa.Table:
    """Read the CIFAR-10 / CIFAR-100 "python version" pickles.

    CIFAR-10: ``data_batch_1`` .. ``data_batch_5`` (train), ``test_batch`` (test), ``batches.meta``
    (``label_names``). CIFAR-100: ``train`` / ``test`` with ``fine_labels``, ``meta``
    (``fine_label_names``). ``root`` may also be the folder holding ``cifar-10-batches-py`` or
    ``cifar-100-python``. Each file holds ``data`` uint8 ``(N, 3072)`` = R, G, B planes of 32x32.

    Returns
    -------
    pyarrow.Table
        ``id`` (``"<split>/<index:05d>"``), ``label`` int64, ``pixels`` (32x32x3 HWC bytes),
        ``shape`` ``[32, 32, 3]``; metadata ``classes``, ``source``.
    """
    _check_split(split)
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"CIFAR root is not a directory: {str(root)!r}")
    for sub in ("cifar-10-batches-py", "cifar-100-python"):
        if (root / sub).is_dir():
            root = root / sub
            break
    if (root / "data_batch_1").exists() or (root / "test_batch").exists():
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        meta_file, names_key, labels_key, kind = "batches.meta", "label_names", "labels", "CIFAR-10"
    elif (root / "train").is_file() or (root / "test").is_file():
        files = [split]
        meta_file, names_key, labels_key, kind = "meta", "fine_label_names", "fine_labels", "CIFAR-100"
    else:
        raise ValueError(
            f"{str(root)!r} holds neither CIFAR-10 (data_batch_1..5, test_batch, batches.meta) nor "
            "CIFAR-100 (train, test, meta) python pickles"
        )
    for name in [*files, meta_file]:
        if not (root / name).is_file():
            raise ValueError(f"{kind} file {name!r} missing under {str(root)!r}")
    meta = _unpickle(root / meta_file)
    if names_key not in meta:
        raise ValueError(f"{str(root / meta_file)!r} lacks {names_key!r}")
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[names_key]]
    images, labels = [], []
    for name in files:
        batch = _unpickle(root / name)
        if "data" not in batch or labels_key not in batch:
            raise ValueError(f"{str(root / name)!r} lacks 'data' or {labels_key!r}")
        data = np.asarray(batch["data"], dtype=np.uint8)
        lab = np.asarray(batch[labels_key], dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(lab) != len(data):
            raise ValueError(
                f"{str(root / name)!r}: data must be (N, 3072) with N labels, got {data.shape} and {len(lab)}"
            )
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # CHW planes -> HWC
        labels.append(lab)
    images_arr = np.concatenate(images)
    labels_arr = np.concatenate(labels)
    ids = [f"{split}/{i:05d}" for i in range(len(labels_arr))]
    table = _pixel_table(images_arr, labels_arr, ids)
    return _with_metadata(table, classes=classes, source=f"{kind} python pickles {root} ({split})")


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
    _check_split(split)
    _check_limit(limit)
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
    table = _pixel_table(images, labels, ids)
    return _with_metadata(table, classes=FASHION_MNIST_CLASSES, source=f"Fashion-MNIST IDX {root} ({split})")


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

    _check_limit(limit)
    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    table = from_arrays(images, labels, ids=[f"digits-{i}" for i in range(len(labels))])
    return _with_metadata(table, classes=[str(k) for k in range(10)], source="sklearn-digits")


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
    classes = _default_classes(labels) if classes is None else [str(c) for c in classes]
    table = _pixel_table(images, labels, ids)
    return _with_metadata(table, classes=classes, source=f"in-memory arrays {images.shape}")


def _first_duplicate(values: Sequence[str]) -> str:
    seen: set[str] = set()
    for v in values:
        if v in seen:
            return v
        seen.add(v)
    raise AssertionError("no duplicate")  # pragma: no cover - callers checked there is one


# --------------------------------------------------------------------------------------------
# dispatch by spec string

SOURCES: Registry[Callable[[str, int | None], pa.Table]] = Registry("data source")


def _split_suffix(rest: str, default: str = "train") -> tuple[str, str]:
    head, sep, tail = rest.rpartition(":")
    if sep and tail in _SPLITS:
        return head, tail
    if rest in _SPLITS:
        return "", rest
    return rest, default


@SOURCES.register("fashion-mnist")
def _source_fashion_mnist(rest: str, limit: int | None) -> pa.Table:
    root, split = _split_suffix(rest)
    return read_fashion_mnist(root or FASHION_MNIST_ROOT, split=split, limit=limit)


@SOURCES.register("sklearn-digits")
def _source_sklearn_digits(rest: str, limit: int | None) -> pa.Table:
    if rest:
        raise ValueError(f"sklearn-digits takes no argument, got {rest!r}: write 'sklearn-digits:'")
    return read_sklearn_digits(limit=limit)


@SOURCES.register("parquet")
def _source_parquet(rest: str, limit: int | None) -> pa.Table:
    return read_parquet_images(_need_path(rest, "parquet"), limit=limit)


@SOURCES.register("folder")
def _source_folder(rest: str, limit: int | None) -> pa.Table:
    table = read_image_folder(_need_path(rest, "folder"))
    return table if limit is None else table.slice(0, limit)


@SOURCES.register("cifar-pickle")
def _source_cifar_pickle(rest: str, limit: int | None) -> pa.Table:
    root, split = _split_suffix(rest)
    table = read_cifar_pickle(_need_path(root, "cifar-pickle"), split=split)
    return table if limit is None else table.slice(0, limit)


@SOURCES.register("imagenet-c")
def _source_published_c(rest: str, limit: int | None) -> pa.Table:
    return read_published_corruptions(_need_path(rest, "imagenet-c"), limit=limit)


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

    _check_limit(limit)
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
    return _with_metadata(table, classes=classes, source=f"ImageNet-C {base}")


def _read_cifar_c(base: Path, limit: int | None) -> pa.Table:
    labels = np.load(base / "labels.npy").astype(np.int64)
    names = sorted(p.stem for p in base.glob("*.npy") if p.stem != "labels")
    if not names:
        raise ValueError(f"no <corruption>.npy next to {base / 'labels.npy'}; the CIFAR-10-C layout is ROOT/<name>.npy")
    parts = []
    for name in names:
        stack = np.load(base / f"{name}.npy", mmap_mode="r")
        if stack.ndim != 4 or stack.shape[3] != 3 or stack.shape[0] % 5 or stack.shape[0] != labels.shape[0]:
            raise ValueError(
                f"{base / (name + '.npy')} has shape {stack.shape}; CIFAR-10-C needs (5 n, H, W, 3) with n "
                f"images per severity, matching labels.npy ({labels.shape[0]} rows)"
            )
        per = stack.shape[0] // 5
        keep = per if limit is None else min(limit, per)
        for severity in range(1, 6):
            rows = slice((severity - 1) * per, (severity - 1) * per + keep)
            part = _pixel_table(np.asarray(stack[rows]), labels[rows],
                                [f"{name}/{severity}/{i:05d}" for i in range(keep)])
            part = part.append_column("corruption", pa.array([name] * keep, pa.string()))
            parts.append(part.append_column("severity", pa.array(np.full(keep, severity), pa.int64())))
    table = pa.concat_tables(parts)
    return _with_metadata(table, classes=_default_classes(labels), source=f"CIFAR-10-C {base}")


def _need_path(rest: str, scheme: str) -> str:
    if not rest:
        raise ValueError(f"source {scheme!r} needs a path: '{scheme}:/path/to/data'")
    return rest


def read_source(spec: str, *, limit: int | None = None) -> pa.Table:
    """Read a data source named by a spec string ``"<scheme>:<argument>"``.

    ``"fashion-mnist:train"``, ``"fashion-mnist:/root:test"``, ``"parquet:/path/train.parquet"``,
    ``"folder:/path/root"``, ``"cifar-pickle:/path/cifar-10-batches-py:test"`` (split defaults to
    ``train``), ``"imagenet-c:/path/ROOT"`` (a published ImageNet-C or CIFAR-10-C directory, with
    ``corruption`` and ``severity`` columns: :func:`read_published_corruptions`). ``limit`` keeps the
    first rows (for ``imagenet-c``, of each corruption and severity).
    """
    if not isinstance(spec, str):
        raise TypeError(f"source spec must be a str, got {type(spec).__name__}")
    _check_limit(limit)
    scheme, _, rest = spec.partition(":")
    return SOURCES.get(scheme)(rest, limit)


# --------------------------------------------------------------------------------------------
# validation


def label_errors(labels: pa.Array | pa.ChunkedArray, *, n_classes: int) -> list[str]:
    """Per label, ``""`` when it is in ``0 .. n_classes - 1``, else the reason (``"label missing"``,
    ``"label 12 outside 0..9"``): the one wording of a bad label, in the errors table and everywhere."""
    values = labels.to_pylist()
    return [
        "label missing" if v is None else (f"label {v} outside 0..{n_classes - 1}" if not 0 <= v < n_classes else "")
        for v in values
    ]


def validate_labels(table: pa.Table, *, n_classes: int) -> tuple[pa.Table, pa.Table]:
    """Split a reader table into rows with a valid label and error rows; never drops a row.

    Parameters
    ----------
    table : pyarrow.Table
        With ``id`` and ``label`` columns.
    n_classes : int
        Valid labels are ``0 .. n_classes - 1``.

    Returns
    -------
    good : pyarrow.Table
        The rows with a valid label, same columns and metadata.
    errors : pyarrow.Table
        ``id`` string, ``label`` int64 (null if missing), ``reason`` string, e.g.
        ``"label 12 outside 0..9"`` or ``"label missing"``. ``len(good) + len(errors) == len(table)``.

    Raises
    ------
    ValueError
        Missing ``id``/``label`` column, non-integer labels, ``n_classes < 1``, duplicate ids
        (the message names one: results are joined by id, so ids must be unique).
    """
    if not isinstance(table, pa.Table):
        raise TypeError(f"table must be a pyarrow.Table, got {type(table).__name__}")
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 1:
        raise ValueError(f"n_classes must be an int >= 1, got {n_classes!r}")
    for col in ("id", "label"):
        if col not in table.column_names:
            raise ValueError(f"table lacks column {col!r}; its columns are {table.column_names}")
    if not pa.types.is_integer(table.schema.field("label").type):
        raise ValueError(f"label column must be integer, got {table.schema.field('label').type}")
    ids = table.column("id").cast(pa.string())
    if pc.count_distinct(ids, mode="all").as_py() != len(table):
        counts = pc.value_counts(ids)
        dup = counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"].as_py()
        raise ValueError(f"duplicate ids in table (e.g. {dup!r}); ids must be unique")
    labels = table.column("label").cast(pa.int64())
    all_reasons = label_errors(labels, n_classes=int(n_classes))
    bad = pa.array([bool(r) for r in all_reasons], pa.bool_())
    bad_idx = np.flatnonzero(bad.to_numpy(zero_copy_only=False))
    good = table.filter(pc.invert(bad))
    bad_labels = labels.take(pa.array(bad_idx, type=pa.int64())).to_pylist()
    reasons = [all_reasons[i] for i in bad_idx]
    errors = pa.table(
        {
            "id": ids.take(pa.array(bad_idx, type=pa.int64())),
            "label": pa.array(bad_labels, type=pa.int64()),
            "reason": pa.array(reasons, type=pa.string()),
        }
    )
    return good, errors.replace_schema_metadata(table.schema.metadata)

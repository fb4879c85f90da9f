"""Reader for the CIFAR-10/100 python pickles (:func:`read_cifar_pickle`)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa

from rmd_ray.data.readers.tables import check_split, pixel_table, with_metadata

# --------------------------------------------------------------------------------------------
# CIFAR python pickles


#: The only globals a CIFAR batch file may name: what NumPy needs to rebuild its ``data`` array, and
#: ``_codecs.encode``, which protocol-2 pickles written by Python 3 use to rebuild ``bytes`` (a pure
#: function). Dicts, lists, strings and numbers need no global at all.
_ALLOWED_GLOBALS = frozenset({
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
})


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`_ALLOWED_GLOBALS`: a crafted file cannot call anything else
    (``os.system``, ``builtins.eval``, ...), so no code from the file runs."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"refused global {module}.{name}: a CIFAR batch holds only dicts, lists, bytes and NumPy arrays"
            )
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    # The official CIFAR files are Python 2 pickles: encoding="bytes" keeps their byte-string keys.
    try:
        with open(path, "rb") as fh:
            obj = _CifarUnpickler(fh, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, OSError, AttributeError, TypeError, ValueError) as err:
        raise ValueError(
            f"cannot read CIFAR file {str(path)!r}: {err}; use the published 'python version' archive"
        ) from err
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
    check_split(split)
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
    table = pixel_table(images_arr, labels_arr, ids)
    return with_metadata(table, classes=classes, source=f"{kind} python pickles {root} ({split})")

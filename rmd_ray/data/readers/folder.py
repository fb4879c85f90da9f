"""Reader for the ImageFolder layout ``root/<class>/<image>`` (:func:`read_image_folder`)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from rmd_ray.data.readers.tables import with_metadata

# --------------------------------------------------------------------------------------------
# ImageFolder layout


# torchvision.datasets.folder.IMG_EXTENSIONS, copied so that listing workers need not import
# torchvision (seconds per process); tests/data/test_readers.py checks the two stay equal.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def image_extensions() -> tuple[str, ...]:
    """The file extensions read as images (lower case, with the dot), as torchvision's ImageFolder."""
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
    classes = _resolve_classes(root, dirs, classes)
    ids, labels, paths, skipped, empty = _walk_class_dirs(root, classes, set(dirs))
    table = pa.table(
        {
            "id": pa.array(ids, type=pa.string()),
            "label": pa.array(labels, type=pa.int64()),
            "path": pa.array(paths, type=pa.string()),
        }
    )
    return with_metadata(
        table,
        classes=classes,
        source=f"image folder {root}",
        skipped_non_image=str(skipped),
        empty_classes=empty,
    )


def _resolve_classes(root: Path, dirs: list[str], classes: Sequence[str] | None) -> list[str]:
    """The class names in label order: ``dirs`` by default, else ``classes`` checked against ``dirs``.

    Warnings are attributed (``stacklevel=3``) to the caller of :func:`read_image_folder`.
    """
    if classes is None:
        if not dirs:
            raise ValueError(f"{str(root)!r} has no class sub-directories (expected root/<class>/<image>)")
        return dirs
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
            stacklevel=3,
        )
    return classes


def _walk_class_dirs(
    root: Path, classes: list[str], present: set[str]
) -> tuple[list[str], list[int], list[str], int, list[str]]:
    """Walk each present class directory (sorted, following links): ``(ids, labels, paths, skipped, empty)``.

    ``skipped`` counts non-image files, ``empty`` names the class directories without images (each
    warned about, attributed to the caller of :func:`read_image_folder`).
    """
    exts = image_extensions()
    ids: list[str] = []
    labels: list[int] = []
    paths: list[str] = []
    skipped = 0
    empty: list[str] = []
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
                stacklevel=3,
            )
    if not ids:
        raise ValueError(f"no image files under {str(root)!r} (extensions {', '.join(exts)})")
    return ids, labels, paths, skipped, empty

"""Reading published ImageNet-C folders (``<corruption>/<severity>/<wnid>/<file>``) from disk."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from rmd_ray.data.corruptions.registry import IMAGE_EXTENSIONS, SEVERITIES

# ---------------------------------------------------------------------------------------------
# ImageNet-C on disk
# ---------------------------------------------------------------------------------------------


class ImageNetCSample(NamedTuple):
    """One ImageNet-C image: ``id`` is its path relative to the root, with ``/`` separators."""

    id: str
    label: int
    corruption: str
    severity: int
    path: Path


def _read_wnids(wnids: Sequence[str] | str | os.PathLike) -> list[str]:
    if isinstance(wnids, (str, os.PathLike)):
        path = Path(wnids)
        if not path.is_file():
            raise FileNotFoundError(f"wnid list {path} does not exist; pass a file with one wnid per line")
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    else:
        names = list(wnids)
        if not all(isinstance(n, str) for n in names):
            raise TypeError("wnids must be strings such as 'n01440764'")
    if not names:
        raise ValueError("wnids is empty; pass the class ids in model output order")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"wnid {dup!r} appears twice in wnids; each class id must be listed once")
    return names


def read_imagenet_c(
    root: str | os.PathLike,
    *,
    wnids: Sequence[str] | str | os.PathLike | None = None,
    corruptions: Sequence[str] | None = None,
) -> Iterator[ImageNetCSample]:
    """List the images of an ImageNet-C tree ``<root>/<corruption>/<severity>/<wnid>/<file>``.

    Parameters
    ----------
    root : path
        Folder holding one sub-folder per corruption (files at that level are ignored).
    wnids : sequence of str, or path to a text file with one wnid per line, optional
        Class ids in model output order: the label of ``<wnid>`` is its position in this list (use
        ``wnids_all_1000_sorted.txt`` for ImageNet-1k models). Default: the sorted wnid folder names
        found under root (all corruptions and severities together), as torchvision's ImageFolder.
    corruptions : sequence of str, optional
        Only these corruption folders (each must exist).

    Returns
    -------
    iterator of ImageNetCSample ``(id, label, corruption, severity, path)``
        Ordered by corruption name, severity, wnid, file name. Files with extensions other than
        .jpeg/.jpg/.png (any case) are skipped. The folder structure is checked when this is called;
        files are listed lazily.

    Raises
    ------
    FileNotFoundError
        ``root`` (or the wnid file) does not exist.
    ValueError
        A severity folder not named 1..5, a wnid folder missing from ``wnids``, an unknown requested
        corruption, or no class folder at all.
    """
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"ImageNet-C root {base} is not a directory")
    found = sorted(d.name for d in base.iterdir() if d.is_dir())
    if corruptions is not None:
        if isinstance(corruptions, str):
            raise TypeError("corruptions must be a sequence of names, e.g. ['gaussian_noise'], not a string")
        missing = sorted(set(corruptions) - set(found))
        if missing:
            raise ValueError(f"corruption folder(s) {missing} not under {base}; found: {', '.join(found)}")
        found = sorted(set(corruptions))
    class_dirs: list[tuple[str, int, str, Path]] = []
    for corruption in found:
        for sev_dir in sorted((d for d in (base / corruption).iterdir() if d.is_dir()), key=lambda d: d.name):
            if sev_dir.name not in {str(s) for s in SEVERITIES}:
                raise ValueError(
                    f"{sev_dir} is not a severity folder (expected 1..5); the layout is "
                    "<root>/<corruption>/<severity>/<wnid>/<file>"
                )
            for wnid_dir in sorted(d for d in sev_dir.iterdir() if d.is_dir()):
                class_dirs.append((corruption, int(sev_dir.name), wnid_dir.name, wnid_dir))
    if not class_dirs:
        raise ValueError(f"no <corruption>/<severity>/<wnid> folders under {base}")
    class_dirs.sort(key=lambda t: (t[0], t[1], t[2]))
    names = _read_wnids(wnids) if wnids is not None else sorted({t[2] for t in class_dirs})
    index = {n: i for i, n in enumerate(names)}
    unknown = sorted({t[2] for t in class_dirs} - set(index))
    if unknown:
        raise ValueError(
            f"wnid folder(s) {unknown[:5]} are not in wnids ({len(unknown)} in all); pass the full list"
        )
    return _iter_imagenet_c(base, class_dirs, index)


def _iter_imagenet_c(
    base: Path, class_dirs: list[tuple[str, int, str, Path]], index: dict[str, int]
) -> Iterator[ImageNetCSample]:
    for corruption, severity, wnid, folder in class_dirs:
        for fname in sorted(os.listdir(folder)):
            path = folder / fname
            if fname.lower().endswith(IMAGE_EXTENSIONS) and path.is_file():
                sample_id = path.relative_to(base).as_posix()
                yield ImageNetCSample(sample_id, index[wnid], corruption, severity, path)

"""Planning an image folder (``folder:ROOT``, root/<class>/<image>) in balanced file ranges.

The files of all classes, in class order then name order, are cut into shards of ``shard_rows`` files
(the last one shorter), across class boundaries: a shard is a list of (class directory, label, class
name, first file, stop file) ranges. Balanced shards keep the decode tasks equally long whatever the
class sizes (one 1,300-image class no longer makes one long task beside a handful of short ones), and
the plan's size follows the number of images, not of classes.

The class directories are listed once, while planning (in threads for a local folder, in Ray tasks of
50 folders on an object store); each listing gives the image count and one 8-byte digest per image
(relative path, size, modification time), from which each shard's ``content`` digest is made: a file
rewritten, added or removed in place changes the digest of the shards it falls in. The driver holds
those 8 bytes per image while planning, never the paths. A shard's read lists its class directories
again and takes its ranges (:func:`list_images`, the same order).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence

import pyarrow.fs as pafs
import ray

from rmd_ray.data.readers import image_extensions
from rmd_ray.distributed.sources.shards import Shard, ShardedSource
from rmd_ray.io import storage

__all__ = ["folder_ranges", "image_listing", "list_images", "plan_folder"]

_DIRS_PER_COUNT_TASK = 50
_STAMP_BYTES = 8


def plan_folder(rest: str, *, shard_rows: int) -> ShardedSource:
    """Plan ``folder:REST``: shards of ``shard_rows`` images cut across class directories (module docstring).

    Ids are ``<class>/<path below the class directory>``; labels are class indices in sorted directory
    order, empty classes included (with a warning) so that class numbers stay aligned.
    """
    if not storage.is_dir(rest):
        raise ValueError(f"image folder root is not a directory: {rest!r}")
    class_dirs = storage.list_dirs(rest)
    classes = tuple(storage.basename(d) for d in class_dirs)
    if not classes:
        raise ValueError(f"{rest!r} has no class sub-directories (expected root/<class>/<image>)")
    listed = _list_class_dirs(rest, class_dirs)
    counts = [n for n, _ in listed]
    if not sum(counts):
        raise ValueError(f"no image files under {rest!r} (extensions {', '.join(image_extensions())})")
    empty = [c for c, n in zip(classes, counts) if n == 0]
    if empty:
        warnings.warn(
            f"{len(empty)} class directories under {rest!r} hold no images (e.g. {empty[0]!r}); "
            "they keep their indices so class numbers stay aligned",
            stacklevel=3,
        )
    shards = []
    for index, ranges in enumerate(folder_ranges(counts, shard_rows)):
        digest = hashlib.sha256()
        for k, start, stop in ranges:
            digest.update(f"{classes[k]}|{start}:{stop}|".encode())
            digest.update(listed[k][1][start * _STAMP_BYTES : stop * _STAMP_BYTES])
        dirs = tuple((class_dirs[k], k, classes[k], start, stop) for k, start, stop in ranges)
        shards.append(Shard(index, "folder", sum(stop - start for _, start, stop in ranges), dirs=dirs,
                            content=digest.hexdigest()[:24]))
    return ShardedSource(rest, classes, f"image folder {rest}", tuple(shards), ids_unique_by_construction=True)


def folder_ranges(counts: Sequence[int], shard_rows: int) -> list[list[tuple[int, int, int]]]:
    """Cut the images of classes holding ``counts`` images into shards of ``shard_rows`` (the last shorter).

    Returns one list per shard of ``(class index, first image, stop image)`` ranges, in class order; a
    class with no image appears in none.
    """
    if isinstance(shard_rows, bool) or not isinstance(shard_rows, int) or shard_rows < 1:
        raise ValueError(f"shard_rows must be an int >= 1, got {shard_rows!r}")
    shards: list[list[tuple[int, int, int]]] = []
    current: list[tuple[int, int, int]] = []
    room = shard_rows
    for k, n in enumerate(counts):
        start = 0
        while start < n:
            take = min(room, n - start)
            current.append((k, start, start + take))
            start, room = start + take, room - take
            if room == 0:
                shards.append(current)
                current, room = [], shard_rows
    if current:
        shards.append(current)
    return shards


def _list_class_dirs(root: str, class_dirs: list[str]) -> list[tuple[int, bytes]]:
    if storage.is_remote(root):
        # Object-store listings are paged requests: spread them over tasks, 50 folders a task.
        groups = [class_dirs[i : i + _DIRS_PER_COUNT_TASK] for i in range(0, len(class_dirs), _DIRS_PER_COUNT_TASK)]
        return [n for group in ray.get([_count_images.remote(g) for g in groups]) for n in group]
    # A local (or NFS) folder lists in milliseconds; a Ray task would only add worker start-up. One
    # folder's names at a time, in threads: memory stays one folder's names, not the dataset's.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(image_listing, class_dirs))


def list_images(class_dir: str) -> list[str]:
    """The image files below ``class_dir`` (any depth), sorted, as locations in its form."""
    files = storage.list_files(class_dir, recursive=True)
    return [f for f in files if storage.resolve(f)[1].lower().endswith(image_extensions())]


def image_listing(class_dir: str) -> tuple[int, bytes]:
    """(number of images, one 8-byte digest of relative path, size and modification time per image) below
    ``class_dir``, in :func:`list_images` order, from one listing, no reads."""
    fs, base = storage.resolve(class_dir)
    base = base.rstrip("/")
    entries = []
    for info in fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True)):
        rel = info.path[len(base):].lstrip("/")
        if (info.type == pafs.FileType.File and info.path.lower().endswith(image_extensions())
                and not any(part.startswith(".") for part in rel.split("/"))):
            entries.append((rel, info.size, info.mtime_ns))
    entries.sort()
    stamps = b"".join(
        hashlib.blake2b(f"{rel}|{size}|{mtime}".encode(), digest_size=_STAMP_BYTES).digest()
        for rel, size, mtime in entries
    )
    return len(entries), stamps


@ray.remote(num_cpus=0.25)
def _count_images(class_dirs: list[str]) -> list[tuple[int, bytes]]:
    return [image_listing(d) for d in class_dirs]

"""``webdataset:PATTERN``: WebDataset tar shards, one tar per shard, counted when planned and streamed in tasks.

PATTERN is a brace pattern (``train-{000000..000012}.tar``, ``{a,b}``; zero-padded numeric ranges and comma
lists), a glob, a directory of ``*.tar`` files, one tar, or a wids-style JSON shard index
(``index.json``: ``{"shardlist": [{"url": "train-0.tar", "nsamples": 1000}, ...]}``, urls relative to the
index's folder, or absolute paths and URIs); each local or a URI such as
``s3://bucket/x/train-{0..3}.tar?endpoint_override=...``.

A *sample* is a run of consecutive regular members sharing a key: the member name up to the first dot of
its basename, with its directory prefix (WebDataset's ``__key__``), which is the row's id. Its image is the
first of ``.jpg``, ``.jpeg``, ``.png``, ``.webp``; its label ``.cls`` (an integer as text), else ``.json``
(an object with an integer ``"label"``). A sample without an image gets a null image and one without a
readable label a null label: the decode and label stages report them in ``errors.parquet`` like a bad row
of any other source, and a member with corrupt image bytes fails at decode the same way.

Planning needs every tar's sample count (``Shard.n_rows``: a shard is done when all of its rows are written).
An index gives them without opening a tar; otherwise one Ray task per tar walks its member headers
(member data is skipped by seeking; a header read on an object store is a ranged GET, so the file is read
through a 1 MiB read-ahead buffer that serves many small members per request) and returns only integers.
Class names come from ``classes.txt`` next to the shards (one name per line) when present; otherwise the
count tasks also read the label members and K = the largest label + 1 (``classes_inferred``, judged by the
label census, :mod:`rmd_ray.distributed.sources.census`). An index without ``classes.txt`` therefore
still reads the tars' headers and label members (never their images), and its counts are checked.

Why not ``ray.data.read_webdataset``: it does not tell a row which tar it came from and gives no per-tar
counts before reading, and resumable runs need both (stable shards with known row counts).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import re
import tarfile
from collections.abc import Iterator, Sequence

import pyarrow as pa
import pyarrow.fs as pafs
import ray

from rmd_ray.distributed.sources.shards import Shard, ShardedSource
from rmd_ray.io import storage
from rmd_ray.io.location import object_store_errors, parse_location, redact

__all__ = [
    "IMAGE_EXTENSIONS", "LABEL_EXTENSIONS", "expand_braces", "iter_samples", "plan_webdataset",
    "read_webdataset_shard", "sample_label", "scan_tar", "shard_index", "tar_files",
]

#: Image member extensions, in the order one is picked when a sample has several.
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
#: Label member extensions, in the order one is used when a sample has both.
LABEL_EXTENSIONS = ("cls", "json")
CLASSES_FILE = "classes.txt"

_KEY = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # WebDataset's base_plus_ext: key, extension
_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")
_READ_AHEAD = 1 << 20
_STATS_PER_TASK = 50
_INDEX_FORMAT = '{"shardlist": [{"url": "train-0.tar", "nsamples": 1000}, ...]}'


def expand_braces(pattern: str) -> list[str]:
    """Every string a shell-style brace pattern names, in order, duplicates dropped.

    ``{a,b}`` is a comma list and ``{000..012}`` a numeric range (zero-padded to the wider end when either
    end starts with ``0``; descending when the first end is larger). Groups nest and multiply:
    ``"s-{0..1}-{a,b}.tar"`` gives four names. A pattern without braces gives ``[pattern]``.
    """
    match = _BRACE.search(pattern)
    if match is None:
        return [pattern]
    body = match.group(1)
    numeric = _RANGE.match(body)
    if numeric:
        first, last = numeric.groups()
        a, b = int(first), int(last)
        padded = any(len(s.lstrip("-")) > 1 and s.lstrip("-").startswith("0") for s in (first, last))
        width = max(len(first), len(last)) if padded else 0
        values = range(a, b + 1) if a <= b else range(a, b - 1, -1)
        options = [str(v).zfill(width) for v in values]
    else:
        options = body.split(",")
    out: list[str] = []
    head, tail = pattern[: match.start()], pattern[match.end() :]
    for option in options:
        for name in expand_braces(head + option + tail):
            if name not in out:
                out.append(name)
    return out


def _parent(uri: str) -> str:
    loc = parse_location(uri)
    if loc.scheme == "":
        return os.path.dirname(loc.path) or "."
    return loc.with_path(posixpath.dirname(loc.path.rstrip("/")))


def _is_pattern(path: str) -> bool:
    return any(ch in path for ch in "*?[")


def tar_files(location: str) -> list[str]:
    """The tars a ``webdataset:`` pattern names: a brace pattern (each name a file or a glob), a glob, a
    directory (its ``*.tar`` files, recursively), or one file; in the pattern's order (globs sorted)."""
    path = storage.resolve(location)[1]
    if "{" in path:
        files: list[str] = []
        missing = []
        for name in expand_braces(location):
            found = storage.glob(name) if _is_pattern(storage.resolve(name)[1]) else (
                [name] if storage.is_file(name) else [])
            missing += [] if found else [name]
            files += [f for f in found if f not in files]
        if missing:
            raise ValueError(f"{len(missing)} of the names {location!r} expands to match no file (e.g. "
                             f"{missing[0]!r}); fix the range or list the shards in an index.json")
        return files
    if _is_pattern(path):
        files = storage.glob(location)
        if not files:
            raise ValueError(f"no file matches {location!r}")
        return files
    if storage.is_dir(location):
        files = storage.list_files(location, suffix=".tar", recursive=True)
        if not files:
            raise ValueError(f"no .tar files under {location!r}")
        return files
    if storage.is_file(location):
        return [location]
    raise ValueError(f"webdataset source {location!r} not found (a tar, a brace pattern such as "
                     "train-{000000..000012}.tar, a glob, a directory of .tar files, or an index .json)")


def shard_index(location: str) -> tuple[list[str], list[int]]:
    """The tars and sample counts of a wids-style JSON shard index (``{"shardlist": [{"url", "nsamples"}]}``);
    a relative url is taken from the index's folder (keeping a URI's ``?query``)."""
    try:
        index = json.loads(storage.read_bytes(location))
    except FileNotFoundError:
        raise ValueError(f"shard index {location!r} not found") from None
    except ValueError as err:
        raise ValueError(f"shard index {location!r} is not JSON ({err}); expected {_INDEX_FORMAT}") from None
    entries = index.get("shardlist") if isinstance(index, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"shard index {location!r} has no non-empty 'shardlist'; expected {_INDEX_FORMAT}")
    folder, tars, counts = _parent(location), [], []
    for number, entry in enumerate(entries):
        url = entry.get("url") if isinstance(entry, dict) else None
        count = entry.get("nsamples") if isinstance(entry, dict) else None
        if not isinstance(url, str) or not url or isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"shard index {location!r} entry {number} is {entry!r}; each entry needs a 'url' "
                             "string and an 'nsamples' int >= 0")
        absolute = "://" in url or url.startswith("/")
        tars.append(url if absolute else storage.join(folder, *url.split("/")))
        counts.append(count)
    return tars, counts


def sample_key(name: str) -> tuple[str, str] | None:
    """(key, lower-case extension) of a member name, or None for a member that belongs to no sample (no
    extension, or a top-level ``__name__`` metadata member), as WebDataset splits them."""
    if "/" not in name and name.startswith("__") and name.endswith("__"):
        return None
    match = _KEY.match(name)
    return (match.group(1), match.group(2).lower()) if match else None


def iter_samples(uri: str, *, read: Sequence[str] = (), stop_after: int | None = None
                 ) -> Iterator[tuple[str, dict[str, bytes]]]:
    """The samples of one tar in order: (key, {extension: bytes}) with the bytes of the ``read`` extensions
    only (other members' data is skipped by seeking); stops after ``stop_after`` samples if given.

    ValueError naming the tar when its structure is unreadable (truncated, corrupt, not a tar).
    """
    wanted = frozenset(read)
    buffer = _READ_AHEAD if storage.is_remote(uri) else io.DEFAULT_BUFFER_SIZE
    key, members, done = None, {}, 0
    with storage.open_input(uri) as raw, io.BufferedReader(raw, buffer_size=buffer) as handle:
        try:
            tar = tarfile.open(fileobj=handle, mode="r:*")
            while (member := tar.next()) is not None:
                tar.members = []  # the walk keeps no list of headers: a tar may hold 100,000 members
                split = sample_key(member.name) if member.isreg() else None
                if split is None:
                    continue
                if split[0] != key:
                    if key is not None:
                        yield key, members
                        done += 1
                        if stop_after is not None and done >= stop_after:
                            return
                    key, members = split[0], {}
                if split[1] in wanted:
                    members[split[1]] = tar.extractfile(member).read()
                else:
                    members.setdefault(split[1], b"")
            # tarfile takes a header cut short, or one past the end of the file, for the end of the archive:
            # a tar cut inside a member would pass for a shorter one
            if tar.fileobj is handle and (tar.offset > raw.size() or (raw.size() - tar.offset) % 512):
                raise tarfile.ReadError(f"the file ends inside the member before byte {tar.offset}")
        except (tarfile.TarError, EOFError) as err:
            raise ValueError(f"{redact(uri)!r} is not a readable tar file ({err}): it is truncated or corrupt; "
                             "write the shard again") from None
    if key is not None:
        yield key, members


def sample_label(members: dict[str, bytes]) -> int | None:
    """A sample's label: ``.cls`` (an integer as text), else ``.json`` (``{"label": int}``); None when it
    has neither or the member does not hold an integer (the label stage reports it)."""
    label = None
    if "cls" in members:
        try:
            label = int(members["cls"].decode("utf-8", "replace").strip())
        except ValueError:
            return None
    elif "json" in members:
        try:
            value = json.loads(members["json"])
        except ValueError:
            return None
        label = value.get("label") if isinstance(value, dict) else None
        if isinstance(label, bool) or not isinstance(label, int):
            return None
    return label if label is not None and -(2**63) <= label < 2**63 else None


@object_store_errors
def tar_content(uri: str, n_samples: int) -> str:
    """A shard's content digest from the tar's size and modification time (what the store reports) and its
    sample count: a tar rewritten in place gets another digest, so its completion record is not reused."""
    fs, path = storage.resolve(uri)
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.File:
        raise ValueError(f"shard {redact(uri)!r} not found (a tar listed in an index must exist)")
    mtime = info.mtime_ns if info.mtime_ns is not None else ""
    return hashlib.sha256(f"{uri}|{info.size}|{mtime}|{n_samples}".encode()).hexdigest()[:24]


@object_store_errors
def scan_tar(uri: str, *, labels: bool) -> tuple[int, int, str]:
    """(samples, largest label or -1, content digest) of one tar, from its member headers; the label
    members are read only if ``labels``."""
    n, label_max = 0, -1
    for _, members in iter_samples(uri, read=LABEL_EXTENSIONS if labels else ()):
        n += 1
        if labels:
            label = sample_label(members)
            label_max = max(label_max, label if label is not None else -1)
    return n, label_max, tar_content(uri, n)


@ray.remote(num_cpus=0.25)
def _scan_task(uri: str, labels: bool) -> tuple[int, int, str]:
    return scan_tar(uri, labels=labels)


@ray.remote(num_cpus=0.25)
def _content_task(tars: list[str], counts: list[int]) -> list[str]:
    return [tar_content(t, n) for t, n in zip(tars, counts)]


def _class_names(folder: str) -> list[str] | None:
    uri = storage.join(folder, CLASSES_FILE)
    if not storage.is_file(uri):
        return None
    names = [line.strip() for line in storage.read_bytes(uri).decode().splitlines() if line.strip()]
    if not names:
        raise ValueError(f"{uri!r} is empty; write one class name per line (line k names label k) or remove it")
    return names


def _contents(tars: list[str], counts: list[int]) -> list[str]:
    if not any(storage.is_remote(t) for t in tars):
        return [tar_content(t, n) for t, n in zip(tars, counts)]  # local stats take microseconds
    step = _STATS_PER_TASK  # object-store HEADs are round trips: 50 a task, the tasks in parallel
    groups = [_content_task.remote(tars[i : i + step], counts[i : i + step]) for i in range(0, len(tars), step)]
    return [c for group in ray.get(groups) for c in group]


def plan_webdataset(rest: str, *, shard_rows: int) -> ShardedSource:
    """Plan ``webdataset:REST``: one shard per tar with a non-zero sample count (``shard_rows`` is not
    used: a tar is read whole by one task, as WebDataset shards are meant to be)."""
    del shard_rows
    indexed = storage.resolve(rest)[1].endswith(".json")
    tars, counts = shard_index(rest) if indexed else (tar_files(rest), None)
    # classes.txt sits beside the index, in the directory named, or beside the first tar of a pattern
    folder = _parent(rest) if indexed else rest if storage.is_dir(rest) else _parent(tars[0])
    classes = _class_names(folder)
    label_max = -1
    if counts is not None and classes is not None:
        contents = _contents(tars, counts)
    else:
        scans = ray.get([_scan_task.remote(t, classes is None) for t in tars])
        if counts is not None:
            stale = [(t, n, s[0]) for t, n, s in zip(tars, counts, scans) if n != s[0]]
            if stale:
                raise ValueError(f"shard index {rest!r} says {stale[0][0]!r} holds {stale[0][1]} samples, it holds "
                                 f"{stale[0][2]} ({len(stale)} tars differ); rebuild the index")
        counts = [s[0] for s in scans]
        label_max = max(s[1] for s in scans)
        contents = [s[2] for s in scans]
    kept = [(t, n, c) for t, n, c in zip(tars, counts, contents) if n]
    if not kept:
        raise ValueError(f"the {len(tars)} tar(s) of {rest!r} hold no samples (members named KEY.EXTENSION)")
    shards = tuple(Shard(i, "webdataset", n, uri=t, start=0, stop=n, content=c) for i, (t, n, c) in enumerate(kept))
    inferred = classes is None
    if inferred:
        if label_max < 0:
            raise ValueError(f"no sample of {rest!r} has an integer label in a .cls or .json member; label the "
                             f"samples, or put {CLASSES_FILE} (one class name per line) next to the shards")
        classes = [str(k) for k in range(label_max + 1)]
    described = f"webdataset {rest} ({len(shards)} tar{'s' * (len(shards) > 1)})"
    return ShardedSource(rest, tuple(classes), described, shards, ids_unique_by_construction=False,
                         classes_inferred=inferred)


def read_webdataset_shard(shard: Shard, *, ids_only: bool = False) -> pa.Table:
    """``id`` (the sample key), ``label`` (int64, null when missing) and ``image`` (bytes, null when the
    sample has no image member) of one tar, streamed in a task; ``ids_only`` reads no image bytes.

    The whole tar is read, and its sample count checked against the plan's (ValueError: the tar changed
    or the index is stale), unless the plan keeps fewer rows (``--limit``): then reading stops there.
    """
    needed = shard.rows_read if shard.id_filter_mode else shard.n_rows
    early = needed < shard.stop
    read = LABEL_EXTENSIONS if ids_only else LABEL_EXTENSIONS + IMAGE_EXTENSIONS
    ids, labels, images = [], [], []
    for key, members in iter_samples(shard.uri, read=read, stop_after=needed if early else None):
        ids.append(key)
        labels.append(sample_label(members))
        images.append(next((members[e] for e in IMAGE_EXTENSIONS if e in members), None))
    if not early and len(ids) != shard.stop:
        raise ValueError(f"{redact(shard.uri)!r} holds {len(ids)} samples, the plan counted {shard.stop}: the tar "
                         "changed since the run was planned or its index is stale; rebuild the index and run again")
    out = {"id": pa.array(ids, pa.string()), "label": pa.array(labels, pa.int64())}
    if not ids_only:
        out["image"] = pa.array(images, pa.binary())
    return pa.table(out)

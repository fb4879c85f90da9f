"""Operations on local paths and object-store URIs behind one small API, with writes never half-visible.

Locations -- local paths, ``file://`` URIs, ``s3://`` and ``gs://`` URIs with their ``?query`` options --
are parsed and resolved to a pyarrow filesystem by :mod:`rmd_ray.io.location`; this module re-exports
its public names (:func:`resolve`, :func:`is_remote`, :func:`join`, :func:`basename`) and adds the
operations: existence tests, listings, globbing, whole-file reads and atomic writes of bytes, JSON and
Parquet, and deletion. Each operation ends, on an object store that does not answer, in one
:class:`ObjectStoreUnreachable` line within the limits :mod:`rmd_ray.io.location` sets.

Because ``?`` starts an object-store URI's query, it is a glob wildcard only in local patterns; use
``[...]`` for a one-character wildcard in an object-store pattern.

Atomicity: a local write goes to a temporary file beside the target and is renamed over it
(:func:`rmd_ray.io.atomic.atomic_path`). An object store has no rename, but an object becomes visible
whole, and only once its upload completes; the payload is therefore serialised in memory first and
sent in one upload, so a failure while producing it sends nothing and the previous object stays.

This module sits in the I/O layer and imports only pyarrow, the standard library and the rest of
:mod:`rmd_ray.io`, so Ray workers, the CLI and the evaluation code can all share it cheaply.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import re
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from rmd_ray.io.atomic import atomic_path
from rmd_ray.io.location import (
    ObjectStoreUnreachable,
    basename,
    is_remote,
    join,
    object_store_errors,
    parse_location,
    redact,
    resolve,
    unsupported_location,
)

__all__ = [
    "METADATA_KEY",
    "ObjectStoreUnreachable",
    "basename",
    "delete",
    "exists",
    "glob",
    "is_dir",
    "is_file",
    "is_remote",
    "join",
    "list_dirs",
    "list_files",
    "makedirs",
    "open_input",
    "parquet_errors",
    "read_bytes",
    "read_json",
    "read_parquet",
    "read_parquet_metadata",
    "resolve",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_parquet_atomic",
]

METADATA_KEY = b"rmd_ray"

_GLOB_MAGIC = re.compile(r"[*?\[]")


@object_store_errors
def _info(uri: str | os.PathLike[str]) -> pafs.FileInfo:
    fs, path = resolve(uri)
    return fs.get_file_info(path)


def exists(uri: str | os.PathLike[str]) -> bool:
    """Whether ``uri`` is an existing file or directory (on S3: an object or a non-empty prefix)."""
    return _info(uri).type != pafs.FileType.NotFound


def is_dir(uri: str | os.PathLike[str]) -> bool:
    """Whether ``uri`` is a directory; on an object store, a bucket or a prefix with objects under it."""
    return _info(uri).type == pafs.FileType.Directory


def is_file(uri: str | os.PathLike[str]) -> bool:
    """Whether ``uri`` is a regular file (an object, on an object store)."""
    return _info(uri).type == pafs.FileType.File


@object_store_errors
def makedirs(uri: str | os.PathLike[str]) -> None:
    """Create the local directory ``uri`` and its parents; a no-op on object stores.

    Object stores have no directories, only key prefixes that exist while objects are under them;
    writing a marker object would make an empty "directory" that other tools see as a file.
    """
    fs, path = resolve(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        fs.create_dir(path, recursive=True)


def _listing(fs: pafs.FileSystem, path: str, *, recursive: bool) -> list[pafs.FileInfo]:
    try:
        return fs.get_file_info(pafs.FileSelector(path, recursive=recursive, allow_not_found=True))
    except (FileNotFoundError, NotADirectoryError):
        return []  # a file, or a local path that is not a directory: nothing "under" it


def _relative(base: str, path: str) -> str:
    return path[len(base.rstrip("/")) + 1 :] if base.rstrip("/") else path.lstrip("/")


@object_store_errors
def list_files(uri: str | os.PathLike[str], *, suffix: str | None = None, recursive: bool = False) -> list[str]:
    """Files directly under ``uri`` (all files below it if ``recursive``), as sorted locations.

    Parameters
    ----------
    uri : str or os.PathLike
        A directory (a prefix, on an object store). A missing directory gives ``[]``.
    suffix : str, optional
        Keep only names ending with it, e.g. ``".parquet"``.
    recursive : bool, default False
        Descend into subdirectories.

    Returns
    -------
    list of str
        Locations in the same form as ``uri`` (same scheme, same ``?query``), sorted by path. Names that
        start with ``.`` -- at any level -- are skipped: they are temporary files of atomic writes
        or hidden files.
    """
    fs, base = resolve(uri)
    rels = []
    for info in _listing(fs, base, recursive=recursive):
        if info.type != pafs.FileType.File:
            continue
        rel = _relative(base, info.path)
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        if suffix is not None and not rel.endswith(suffix):
            continue
        rels.append(rel)
    return [join(uri, *rel.split("/")) for rel in sorted(rels)]


@object_store_errors
def glob(pattern: str | os.PathLike[str]) -> list[str]:
    """Files matching a shell pattern, sorted by path; ``[]`` when nothing matches.

    The pattern is matched per path component with :func:`fnmatch.fnmatchcase` (``*`` does not cross
    ``/``), below the last directory without wildcards: ``"/x/train-*.parquet"`` or
    ``"s3://b/data/*/part-[0-9].parquet?endpoint_override=..."``. As in the shell, a component starting
    with ``.`` matches only a pattern component that starts with ``.``. A pattern without wildcards
    gives ``[pattern]`` if it is a file.
    """
    loc = parse_location(pattern)
    if loc.scheme == "":
        components = loc.path.replace(os.sep, "/").split("/")
    else:
        components = loc.path.split("/")
    first = next((i for i, part in enumerate(components) if _GLOB_MAGIC.search(part)), None)
    if first is None:
        return [os.fspath(pattern)] if is_file(pattern) else []
    if loc.remote and first == 0:
        raise unsupported_location(pattern, "wildcards in the bucket name are not supported")
    fixed, wild = components[:first], components[first:]
    if loc.scheme == "":
        base = "/".join(fixed) or ("/" if loc.path.startswith(("/", os.sep)) and first else "")
    else:
        base = "/".join(fixed)
    base_uri = loc.with_path(base) if loc.scheme else (base or ".")
    fs, fs_base = resolve(base_uri)
    rels = []
    for info in _listing(fs, fs_base, recursive=len(wild) > 1):
        if info.type != pafs.FileType.File:
            continue
        parts = _relative(fs_base, info.path).split("/")
        if len(parts) != len(wild):
            continue
        if all(
            fnmatch.fnmatchcase(part, pat) and (not part.startswith(".") or pat.startswith("."))
            for part, pat in zip(parts, wild)
        ):
            rels.append(parts)
    rels.sort()
    if loc.scheme == "" and not base:
        return ["/".join(parts) if os.sep == "/" else os.path.join(*parts) for parts in rels]
    return [join(base_uri, *parts) for parts in rels]


@object_store_errors
def open_input(uri: str | os.PathLike[str]) -> pa.NativeFile:
    """A seekable pyarrow file open for reading, e.g. for :class:`pyarrow.parquet.ParquetFile`.

    The caller closes it (use it as a context manager).
    """
    fs, path = resolve(uri)
    return fs.open_input_file(path)


@object_store_errors
def read_bytes(uri: str | os.PathLike[str]) -> bytes:
    """The whole content of the file ``uri``; raises :class:`FileNotFoundError` if it is missing."""
    fs, path = resolve(uri)
    with fs.open_input_stream(path) as stream:
        return stream.read()


@object_store_errors
def write_bytes_atomic(uri: str | os.PathLike[str], data: bytes | bytearray | memoryview | pa.Buffer) -> str:
    """Write ``data`` to ``uri`` so that readers see the previous content or the new one, never a mix.

    Locally the bytes go to a temporary file in the target's folder (created if needed), renamed over
    the target with :func:`os.replace`. On an object store there is no rename, and none is needed: an
    object becomes visible whole, and only when its upload completes (the single PUT, or the final
    CompleteMultipartUpload of a large object), so the bytes are sent in one upload and a failed upload
    leaves the previous object in place.

    Returns
    -------
    str
        ``uri`` as given (``os.fspath`` of a path).
    """
    fs, path = resolve(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    else:
        stream = fs.open_output_stream(path)
        # Not a "with" block: its __exit__ closes, i.e. completes the upload, even while an exception
        # propagates. The payload is whole in memory, so close() runs only once all of it is accepted.
        stream.write(data)
        stream.close()
    return os.fspath(uri)


def read_json(uri: str | os.PathLike[str]) -> Any:
    """The JSON value stored in ``uri``."""
    return json.loads(read_bytes(uri))


def write_json_atomic(uri: str | os.PathLike[str], value: Any) -> str:
    """Write ``value`` as indented JSON through :func:`write_bytes_atomic`; NumPy scalars become floats.

    The value is serialised before anything is opened, so a value JSON cannot represent raises
    :class:`TypeError` or :class:`ValueError` and leaves no file (and the previous one intact).
    """
    text = json.dumps(value, indent=2, default=float)
    return write_bytes_atomic(uri, text.encode("utf-8"))


def _with_metadata(table: pa.Table, metadata: dict[str, Any] | None) -> pa.Table:
    if metadata is None:
        return table
    existing = dict(table.schema.metadata or {})
    # default=str: provenance may hold paths and other non-JSON values.
    existing[METADATA_KEY] = json.dumps(metadata, default=str).encode()
    return table.replace_schema_metadata(existing)


@object_store_errors
def write_parquet_atomic(
    table: pa.Table, uri: str | os.PathLike[str], *, metadata: dict[str, Any] | None = None
) -> str:
    """Write ``table`` as zstd Parquet to ``uri``, never half-visible.

    Parameters
    ----------
    table : pyarrow.Table
        The rows to write.
    uri : str or os.PathLike
        Target file: a local path or an object-store URI.
    metadata : dict, optional
        Provenance stored as JSON under the schema metadata key ``rmd_ray``
        (read back by :func:`read_parquet_metadata`).

    Returns
    -------
    str
        ``uri`` as given.

    Notes
    -----
    Locally the file is written to a temporary sibling and renamed (see
    :func:`rmd_ray.io.atomic.atomic_path`). For an object store the file is first written to an
    in-memory buffer and uploaded with :func:`write_bytes_atomic`: if writing fails midway nothing is
    uploaded, and the object appears only once the upload completes.
    """
    table = _with_metadata(table, metadata)
    fs, path = resolve(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp, compression="zstd")
        return os.fspath(uri)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return write_bytes_atomic(uri, sink.getvalue())


@contextlib.contextmanager
def parquet_errors(uri: str | os.PathLike[str]) -> Iterator[None]:
    """Turn pyarrow's error for a truncated, corrupt or non-Parquet file into one line naming ``uri``."""
    try:
        yield
    except (pa.ArrowInvalid, OSError) as err:
        text = " ".join(str(err).split())
        network = any(mark in text for mark in ("AWS Error", "curlCode", "NETWORK_CONNECTION", "google::cloud"))
        if network or isinstance(err, (FileNotFoundError, PermissionError)) or "No match for FieldRef" in text:
            raise  # a store that does not answer, a missing file or column: not a damaged file
        why = "no Parquet footer" if "magic bytes" in text else text.split(". ")[0].replace("'<Buffer>'", "the data")
        why = why.rstrip(".")
        shown = redact(os.fspath(uri))
        raise ValueError(
            f"{shown!r} is not a readable Parquet file ({why}): it is truncated, corrupt or not Parquet; "
            "write it again or pass the right file"
        ) from err


@object_store_errors
def read_parquet(uri: str | os.PathLike[str], *, columns: list[str] | None = None) -> pa.Table:
    """Read one Parquet file, optionally only ``columns`` (in that order); ValueError if it is not Parquet."""
    with open_input(uri) as source, parquet_errors(uri):
        return pq.read_table(source, columns=columns)


@object_store_errors
def read_parquet_metadata(uri: str | os.PathLike[str]) -> dict[str, Any]:
    """The provenance dict written by :func:`write_parquet_atomic` (``{}`` if none); reads only the footer."""
    with open_input(uri) as source, parquet_errors(uri):
        raw = (pq.read_schema(source).metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else {}


@object_store_errors
def delete(uri: str | os.PathLike[str]) -> None:
    """Remove the file ``uri``, or the directory (prefix) ``uri`` with everything below it.

    A missing location is not an error. Deleting a whole bucket URI empties the bucket but keeps it:
    buckets are created and removed by whoever owns the account, not by rmd-ray.
    """
    fs, path = resolve(uri)
    info = fs.get_file_info(path)
    try:
        if info.type == pafs.FileType.File:
            fs.delete_file(path)
        elif info.type == pafs.FileType.Directory:
            if not isinstance(fs, pafs.LocalFileSystem) and "/" not in path:
                fs.delete_dir_contents(path)
            else:
                fs.delete_dir(path)
    except FileNotFoundError:
        pass  # removed concurrently: the outcome the caller asked for


@object_store_errors
def list_dirs(uri: str | os.PathLike[str]) -> list[str]:
    """Sub-directories directly under ``uri`` (prefixes, on an object store), as sorted locations.

    Names starting with ``.`` are skipped, as :func:`list_files` skips hidden files.
    """
    fs, base = resolve(uri)
    names = sorted(
        _relative(base, info.path)
        for info in _listing(fs, base, recursive=False)
        if info.type == pafs.FileType.Directory
    )
    return [join(uri, name) for name in names if name and not name.startswith(".")]

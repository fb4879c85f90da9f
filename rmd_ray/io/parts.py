"""Tables stored as a directory of Parquet parts plus a manifest, on any filesystem URI.

A *parts directory* ``NAME.parquet/`` holds ``part-*.parquet`` files and ``_manifest.json``::

    {"format": "rmd-ray parts 1", "parts": ["part-00000.parquet", ...], "rows": N, "metadata": {...}}

The manifest is written last, so it is the commit point: a directory without one is an unfinished
write and is refused, and only the parts it lists are read (a part left by a killed writer is never
read). The names start with ``_`` and ``.`` where they must be skipped, so pyarrow's and Ray Data's
own dataset discovery (which ignore such names) read a finished local directory correctly too.

Every reader here also accepts the single-file tables that rmd-ray wrote before parts existed.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa

from rmd_ray.io import storage
from rmd_ray.io.location import parse_location

__all__ = [
    "MANIFEST",
    "column_names",
    "is_parts_dir",
    "iter_parts",
    "part_uris",
    "read_manifest",
    "read_table",
    "read_table_metadata",
    "stats_sidecar",
    "write_manifest",
]

MANIFEST = "_manifest.json"
FORMAT = "rmd-ray parts 1"


def is_parts_dir(uri: str | os.PathLike[str]) -> bool:
    """True when ``uri`` is a directory (or object prefix) rather than one Parquet file."""
    return storage.is_dir(uri)


def write_manifest(uri: str, parts: Sequence[str], *, rows: int, metadata: dict[str, Any]) -> str:
    """Commit a parts directory: write ``_manifest.json`` (atomically) naming ``parts`` (base names)."""
    value = {"format": FORMAT, "parts": list(parts), "rows": int(rows), "metadata": metadata}
    return storage.write_json_atomic(storage.join(str(uri), MANIFEST), value)


def read_manifest(uri: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a parts directory; ValueError with the fix when it is missing or foreign."""
    uri = str(uri)
    manifest_uri = storage.join(uri, MANIFEST)
    if not storage.is_file(manifest_uri):
        raise ValueError(
            f"{uri!r} is a directory without {MANIFEST}: the run that wrote it did not finish; run the same "
            "command again (it resumes) or pass a finished output"
        )
    manifest = storage.read_json(manifest_uri)
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{manifest_uri!r} is not an rmd-ray parts manifest (format {manifest.get('format')!r})")
    return manifest


def part_uris(uri: str | os.PathLike[str]) -> list[str]:
    """URIs of the Parquet files that make the table: its listed parts, or the file itself."""
    uri = str(uri)
    if not storage.exists(uri):
        raise ValueError(f"{uri!r} not found")
    if not is_parts_dir(uri):
        return [uri]
    return [storage.join(uri, name) for name in read_manifest(uri)["parts"]]


def column_names(uri: str | os.PathLike[str]) -> list[str]:
    """The table's column names, from the first part's footer (no rows read)."""
    import pyarrow.parquet as pq

    first = part_uris(uri)[0]
    with storage.open_input(first) as source, storage.parquet_errors(first):
        return list(pq.read_schema(source).names)


def read_table_metadata(uri: str | os.PathLike[str]) -> dict[str, Any]:
    """The provenance dict of a table: the manifest's ``metadata``, or a single file's ``rmd_ray`` key."""
    uri = str(uri)
    if not storage.exists(uri):
        raise ValueError(f"{uri!r} not found")
    if is_parts_dir(uri):
        return dict(read_manifest(uri).get("metadata", {}))
    return storage.read_parquet_metadata(uri)


def iter_parts(uri: str | os.PathLike[str], *, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """Yield the table's parts one at a time (memory: one part), schema metadata dropped."""
    for part in part_uris(uri):
        yield storage.read_parquet(part, columns=columns).replace_schema_metadata(None)


def read_table(uri: str | os.PathLike[str], *, columns: list[str] | None = None) -> pa.Table:
    """The whole table (a parts directory or one file) in memory: for outputs that fit, such as scores.

    The provenance dict is attached as schema metadata under ``rmd_ray``, as single files carry it.
    """
    import json

    parts = list(iter_parts(uri, columns=columns))
    if not parts:
        raise ValueError(f"{str(uri)!r} holds no parts")
    table = pa.concat_tables(parts, promote_options="default")
    metadata = read_table_metadata(uri)
    return table.replace_schema_metadata({b"rmd_ray": json.dumps(metadata, default=str).encode()})


def stats_sidecar(part_uri: str | os.PathLike[str]) -> str:
    """Where the class statistics of a features part live: ``DIR/_stats/<part>.npz`` beside ``DIR/<part>``.

    Written by the encoder actors while they embed (docs/design.md section 7.2); under a ``_`` folder, so
    dataset discovery and the manifest never see it. A part rewritten later loses its sidecar.
    """
    loc = parse_location(part_uri)
    split = os.path if loc.scheme == "" else posixpath
    folder, name = split.split(loc.path.rstrip("/"))
    stem = name[: -len(".parquet")] if name.endswith(".parquet") else name
    path = split.join(folder, "_stats", stem + ".npz")
    return path if loc.scheme == "" else loc.with_path(path)

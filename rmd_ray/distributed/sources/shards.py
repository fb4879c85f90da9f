"""What a planned source is made of: shards, the planned source, and the fingerprints of their content.

A :class:`Shard` is the unit that is read, embedded, written and recorded as done; a
:class:`ShardedSource` is the plan of a whole source (class names, a description, the shards). Both
hold only a few numbers and names per shard, never image bytes. :func:`shard_digest` and
:func:`combine_digests` fingerprint what was read, per shard and per dataset.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["DEFAULT_SHARD_ROWS", "Shard", "ShardedSource", "combine_digests", "shard_digest"]

#: Rows per shard for sources that can be cut anywhere (Parquet row groups are never split).
DEFAULT_SHARD_ROWS = 2048


@dataclass(frozen=True)
class Shard:
    """One unit of reading and of resumption.

    ``kind`` says how :func:`read_shard` reads it: ``"parquet"`` (``uri`` a file, ``row_groups``, and
    rows ``start:stop`` of a row group larger than a shard), ``"hf-parquet"`` (the same fields),
    ``"webdataset"`` (``uri`` a tar; ``stop`` its sample count, ``n_rows`` the rows kept),
    ``"folder"`` (``dirs``: ranges of consecutive class directories' sorted images as (uri, label, class
    name, first image, stop image); a shard holds ``shard_rows`` images across class boundaries),
    ``"val"`` (``uri`` the image folder, ``labels_uri`` the label file, rows ``start:stop`` of its
    name-sorted lines) or ``"table"`` (``table_ref`` an object ref of a table slice).

    A *view* of a shard (:mod:`rmd_ray.distributed.sources.holdout`: the training and validation parts of a
    split) keeps its index and read recipe and adds a row filter by id: ``id_filter_mode`` ``"only"``
    keeps the rows whose id is in ``id_filter``, ``"exclude"`` drops them; the first ``rows_read``
    rows are read before filtering and ``n_rows`` counts the rows kept. The ids are the shard's
    validation ids only (about ``fraction`` of its rows), so a split of ImageNet's 1.28 M training rows
    at fraction 0.1 carries about 128,000 short strings (a few MB), shipped with the plan.

    ``content`` digests what the planner sees of the shard's bytes without reading them (Parquet: the
    file's size and modification time and its row groups' footer metadata; a tar: its size, modification
    time and sample count; a folder shard: its images' relative paths, sizes and modification times); a
    completion record made from other content is stale, so a source changed in place is embedded again,
    never reused.
    Empty when the planner cannot tell (the check is then skipped).

    ``id_prefix``: what names the shard's file in ids made from a position (``hf-parquet`` rows
    without ``image.path`` are ``<id_prefix>:<row in file>``).
    """

    index: int
    kind: str
    n_rows: int
    uri: str = ""
    row_groups: tuple[int, ...] = ()
    dirs: tuple[tuple[str, int, str, int, int], ...] = ()
    labels_uri: str = ""
    start: int = 0
    stop: int = 0
    table_ref: Any = field(default=None, compare=False)
    columns: tuple[str, ...] = ()
    id_filter: tuple[str, ...] = ()
    id_filter_mode: str = ""
    rows_read: int = 0
    content: str = field(default="", compare=False)
    id_prefix: str = ""

    def key(self) -> str:
        """What identifies the shard's content across runs (no object refs)."""
        parts = [self.kind, self.uri, ",".join(map(str, self.row_groups)), repr(self.dirs),
                 self.labels_uri, f"{self.start}:{self.stop}", str(self.n_rows), ",".join(self.columns),
                 self.id_prefix]
        if self.id_filter_mode:  # a view: the same rows under another filter are other content
            digest = hashlib.sha256("\n".join(sorted(self.id_filter)).encode()).hexdigest()[:16]
            parts.append(f"{self.id_filter_mode}:{digest}:{self.rows_read}")
        return "|".join(parts)


@dataclass(frozen=True)
class ShardedSource:
    """A planned source: class names, a description and the shards (no data)."""

    spec: str
    classes: tuple[str, ...]
    description: str
    shards: tuple[Shard, ...]
    ids_unique_by_construction: bool
    classes_inferred: bool = False  # no class names given: K = the largest label + 1

    @property
    def n_rows(self) -> int:
        return sum(s.n_rows for s in self.shards)

    def plan_fingerprint(self) -> str:
        """sha256 over the shard keys and class names: the same plan gives the same fingerprint."""
        digest = hashlib.sha256("\n".join(self.classes).encode())
        for shard in self.shards:
            digest.update(b"\x00" + shard.key().encode())
        return digest.hexdigest()[:16]


def shard_digest(table: pa.Table) -> str:
    """sha256 over a shard's (id, label) pairs in id order: recorded per shard, combined per dataset."""
    ordered = table.select(["id", "label"]).sort_by("id")
    digest = hashlib.sha256()
    digest.update("\n".join(ordered.column("id").to_pylist()).encode())
    digest.update(pc.fill_null(ordered.column("label"), -1).to_numpy(zero_copy_only=False).astype(np.int64).tobytes())
    return digest.hexdigest()[:16]


def combine_digests(digests: Sequence[str]) -> str:
    """The dataset fingerprint: sha256 over the per-shard digests in shard order."""
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()[:16]

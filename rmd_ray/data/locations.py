"""Sources addressed by location (local paths or object-store URIs): the Parquet files a ``parquet:``
spec names, ImageNet's validation label file, and a few rows fetched by id from any source spec
(galleries and label-issue grids read only the images they show).

Used by the lazy sources of :mod:`rmd_ray.distributed.sources.plan` and by the torch-layer tools alike;
nothing here reads a whole split except the small in-memory readers (Fashion-MNIST, CIFAR pickles).
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from rmd_ray.data.readers import read_source
from rmd_ray.io import storage

__all__ = ["fetch_rows_by_id", "parquet_files", "read_val_labels", "val_classes", "val_label_file"]

_VAL_LABEL_FILES = ("LOC_val_solution.csv", "val_labels.txt", "val_labels.csv", "ILSVRC2012_val_labels.txt")


def parquet_files(location: str) -> list[str]:
    """The Parquet files a ``parquet:`` source names: a file, a directory (recursive), a glob, any URI.

    Names starting with ``.`` or ``_`` are skipped (temporary files, manifests), as pyarrow's and
    Ray Data's own dataset discovery do.
    """
    def hidden(uri: str) -> bool:
        return storage.basename(uri).startswith((".", "_"))

    if any(ch in storage.resolve(location)[1] for ch in "*?["):
        files = [f for f in storage.glob(location) if not hidden(f)]
        if not files:
            raise ValueError(f"no file matches {location!r}")
        return files
    if storage.is_dir(location):
        files = [f for f in storage.list_files(location, suffix=".parquet", recursive=True) if not hidden(f)]
        if not files:
            raise ValueError(f"no .parquet files under {location!r}")
        return files
    if storage.is_file(location):
        return [location]
    raise ValueError(
        f"parquet source {location!r} not found (a file, a directory of .parquet files, a glob or a URI)"
    )


def read_val_labels(labels_uri: str) -> list[tuple[str, str]]:
    """(file name, wnid) pairs of an ImageNet validation label file, sorted by name.

    Two layouts: ``LOC_val_solution.csv`` (``ImageId,PredictionString`` whose first token is the
    wnid; names get ``.JPEG``) and whitespace-separated ``<file name> <wnid>`` lines.
    """
    text = storage.read_bytes(labels_uri).decode()
    pairs = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.lower().startswith("imageid"):
            continue
        if "," in line:
            name, _, boxes = line.partition(",")
            wnid = boxes.strip().strip('"').split()[0] if boxes.strip() else ""
        else:
            fields = line.split()
            name, wnid = (fields + [""])[:2]
        if not name or not wnid:
            raise ValueError(f"{labels_uri!r} line {number}: expected '<name> <wnid>' or 'ImageId,wnid ...'")
        if "." not in name.rsplit("/", 1)[-1]:
            name += ".JPEG"
        pairs.append((name.strip(), wnid.strip()))
    return sorted(pairs)


def val_label_file(root: str) -> str:
    """The label file of an ImageNet validation folder; ValueError naming the accepted files."""
    for name in _VAL_LABEL_FILES:
        uri = storage.join(root, name)
        if storage.is_file(uri):
            return uri
    raise ValueError(
        f"no label file in {root!r}: put LOC_val_solution.csv (ImageId,PredictionString) or val_labels.txt "
        "('<file name> <wnid>' per line) beside the images"
    )


def val_classes(root: str, pairs: Sequence[tuple[str, str]]) -> list[str]:
    """``ROOT/wnids.txt`` (one wnid per line, in class-index order) if present, else the sorted wnids."""
    wnids_file = storage.join(root, "wnids.txt")
    if storage.is_file(wnids_file):
        classes = [w.strip() for w in storage.read_bytes(wnids_file).decode().splitlines() if w.strip()]
        unknown = sorted({w for _, w in pairs} - set(classes))
        if unknown:
            raise ValueError(f"{len(unknown)} wnids of the label file are not in {wnids_file!r} (e.g. {unknown[0]!r})")
        return classes
    return sorted({w for _, w in pairs})


def fetch_rows_by_id(spec: str, ids: Sequence[str]) -> pa.Table:
    """The reader rows (``id``, ``label``, image column) of ``ids`` only, from a source spec.

    Folder and ImageNet-validation sources build the paths from the ids (an id is the path under the
    root); Parquet sources are read one row group at a time, the ``id`` column first and the label and image
    columns only of the row groups that hold a wanted id (:func:`_parquet_rows`); the in-memory readers are
    read and filtered. Ids not in the source are simply absent.
    """
    wanted = sorted({str(i) for i in ids})
    scheme, _, rest = spec.partition(":")
    if scheme == "folder":
        classes = [storage.basename(d) for d in storage.list_dirs(rest)]
        index = {c: k for k, c in enumerate(classes)}
        paths = [(i, storage.join(rest, *i.split("/"))) for i in wanted if i.split("/", 1)[0] in index]
        present = [(i, p) for i, p in paths if storage.is_file(p)]
        return pa.table({
            "id": pa.array([i for i, _ in present], pa.string()),
            "label": pa.array([index[i.split("/", 1)[0]] for i, _ in present], pa.int64()),
            "path": pa.array([p for _, p in present], pa.string()),
        })
    if scheme == "imagenet-val":
        pairs = read_val_labels(val_label_file(rest))
        classes = val_classes(rest, pairs)
        index = {c: k for k, c in enumerate(classes)}
        labels = dict(pairs)
        present = [i for i in wanted if i in labels]
        return pa.table({
            "id": pa.array(present, pa.string()),
            "label": pa.array([index[labels[i]] for i in present], pa.int64()),
            "path": pa.array([storage.join(rest, i) for i in present], pa.string()),
        })
    if scheme == "parquet":
        value_set = pa.array(wanted, pa.string())
        found = [t for f in parquet_files(rest) for t in _parquet_rows(f, value_set)]
        if not found:
            return pa.table({"id": pa.array([], pa.string()), "label": pa.array([], pa.int64()),
                             "image": pa.array([], pa.binary())})
        return pa.concat_tables(found)
    table = read_source(spec)
    return table.filter(pc.is_in(table.column("id"), pa.array(wanted, pa.string()))).replace_schema_metadata(None)


def _parquet_rows(uri: str, wanted: pa.Array) -> list[pa.Table]:
    """The rows of the Parquet file ``uri`` whose id is in ``wanted``, one table per row group holding one.

    Only the ``id`` column of every row group is read; the ``label`` and ``image`` column chunks are read
    only in the row groups that hold a wanted id, so a grid of 64 suspects reads at most 64 row groups'
    images, not the whole image column (an id filter pushed into a dataset scan reads the image column of
    every row group whose id statistics do not rule it out, which for unsorted ids is all of them).
    """
    import pyarrow.parquet as pq

    found = []
    with storage.open_input(uri) as handle, storage.parquet_errors(uri):
        parquet = pq.ParquetFile(handle)
        for group in range(parquet.num_row_groups):
            ids = parquet.read_row_group(group, columns=["id"]).column("id").cast(pa.string())
            hits = pc.indices_nonzero(pc.is_in(ids.combine_chunks(), value_set=wanted))
            if not len(hits):
                continue
            rows = parquet.read_row_group(group, columns=["label", "image"]).take(hits)
            found.append(pa.table({
                "id": ids.take(hits),
                "label": rows.column("label").cast(pa.int64()),
                "image": rows.column("image").cast(pa.binary()),
            }))
    return found

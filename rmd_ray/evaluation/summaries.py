"""Predictions read batch by batch and reduced to per-row summaries, so evaluation memory does not grow
with K: the driver never holds an N x K logits matrix (ImageNet's validation logits are 200 MB in
float32, a 128k-row split of them 500 MB, and every float64 copy doubles that).

A predictions directory written by rmd-ray's prediction actors already holds each row's summaries
(:func:`rmd_ray.distributed.inference.stages.prediction_summaries`, computed where the logits were):
:func:`summarise_predictions` then reads those columns only, never the K logits of a row. Any other
predictions table is summarised from its logits as below, with the same result.

Each batch of a predictions table (a parts directory or one file, any URI; one part or row-group
batch at a time) is validated here, once, for both readers: :func:`iter_prediction_batches` yields
``(ids, labels, logits)`` per batch, which :func:`rmd_ray.evaluation.evaluate.load_predictions`
stacks (for callers that need the logits) and :func:`summarise_predictions` reduces with
:func:`rmd_ray.core.metrics.row_summaries` as it goes (what :func:`~rmd_ray.evaluation.evaluate.evaluate_run`
uses). Repeated ids (padded distributed evaluation) are dropped on the summaries: two rows of one id
count as the same prediction when their labels and argmax are equal and confidence, NLL, Brier,
entropy and max logit agree within the tolerance.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rmd_ray.core.metrics import SUMMARY_COLUMNS, row_summaries
from rmd_ray.io import storage
from rmd_ray.io.parts import part_uris

__all__ = ["BATCH_VALUES", "PredictionSummaries", "SkippedRowsWarning", "iter_prediction_batches",
           "summarise_predictions"]

#: logits per batch read (rows = this // K, at least 1): 2,048 rows of 1,000 classes, 16 MB as float64;
#: each working copy of a batch (probabilities, log-probabilities) is that size again
BATCH_VALUES = 2**21
REQUIRED_COLUMNS = ("id", "label", "logits")
_FLOAT_SUMMARIES = ("confidence", "nll", "brier", "entropy", "max_logit")


class SkippedRowsWarning(UserWarning):
    """Rows a prediction run could not predict (an undecodable image, a bad label), left out of the metrics."""


@dataclass(frozen=True)
class PredictionSummaries:
    """Per-row summaries of a predictions table: ``ids`` (object, (M,)), ``labels`` (int64, (M,)),
    ``columns`` (:data:`rmd_ray.core.metrics.SUMMARY_COLUMNS`, (M,) each), ``n_classes`` K and the
    rows dropped as repeats."""

    ids: np.ndarray
    labels: np.ndarray
    columns: dict[str, np.ndarray]
    n_classes: int
    n_dropped: int


def iter_prediction_batches(path: str, *, batch_rows: int | None = None) -> Iterator[tuple[np.ndarray, ...]]:
    """``(ids, labels, logits float64 (n, K))`` of each batch of the predictions table at ``path``.

    Rows with a non-empty ``error`` (a predictions directory of
    :func:`rmd_ray.distributed.prediction.predict.predict_source`) are left out with one
    :class:`SkippedRowsWarning` for the table. Raises ValueError naming the file and the row for a
    missing column, null ids / labels / logits, non-integer labels, logits of different lengths, and
    a table without rows.
    """
    k, offset, failed, first = None, 0, 0, None
    for part in part_uris(path):
        with storage.open_input(part) as handle, storage.parquet_errors(part):  # a damaged file: one line
            parquet = pq.ParquetFile(handle)
            names = parquet.schema_arrow.names
            missing = [c for c in REQUIRED_COLUMNS if c not in names]
            if missing:
                raise ValueError(
                    f"{str(path)!r} is missing column(s) {missing} (has {names}); a predictions file "
                    "needs id (str), label (int64) and logits (list<float32>)"
                )
            wanted = list(REQUIRED_COLUMNS) + ["error"] * ("error" in names)
            rows = batch_rows or max(1, BATCH_VALUES // max(k or _logits_width(parquet), 1))
            for batch in parquet.iter_batches(batch_size=rows, columns=wanted):
                table = pa.Table.from_batches([batch])
                if "error" in table.column_names:
                    bad = pc.fill_null(pc.not_equal(table.column("error"), ""), False)
                    n_bad = int(pc.sum(bad).as_py() or 0)
                    if n_bad:
                        first = first or table.filter(bad).slice(0, 1).to_pylist()[0]
                        failed += n_bad
                        table = table.filter(pc.invert(bad))
                if table.num_rows == 0:
                    continue
                ids, labels, logits = checked_batch(table, path, offset=offset, k=k)
                k, offset = logits.shape[1], offset + len(ids)
                yield ids, labels, logits
    if failed:
        warnings.warn(
            f"{path!r}: {failed} row(s) could not be predicted and are left out (e.g. id {first['id']!r}: "
            f"{first['error']})", SkippedRowsWarning, stacklevel=3,
        )
    if offset == 0:
        raise ValueError(f"{str(path)!r} has no rows; nothing to evaluate")


def _logits_width(parquet: pq.ParquetFile) -> int:
    """K from the first row group's logits values count (no data read), or a guess of 1,000."""
    meta = parquet.metadata
    if meta.num_row_groups == 0 or meta.row_group(0).num_rows == 0:
        return 1000
    names = [meta.schema.column(i).path for i in range(meta.num_columns)]
    index = next((i for i, n in enumerate(names) if n.startswith("logits.")), None)
    if index is None:
        return 1000
    return max(1, meta.row_group(0).column(index).num_values // meta.row_group(0).num_rows)


def checked_batch(table: pa.Table, path: str, *, offset: int, k: int | None) -> tuple[np.ndarray, ...]:
    """``(ids object, labels int64, logits float64 (n, K))`` of one batch, validated; rows are numbered
    from ``offset`` in messages and every row needs ``k`` logits (the first batch's, when given)."""
    id_col, label_col = table.column("id"), table.column("label")
    if id_col.null_count or label_col.null_count:
        raise ValueError(f"{str(path)!r}: id or label is null in some rows; every row needs both")
    if not pa.types.is_integer(label_col.type):
        raise ValueError(f"{str(path)!r}: label must be an integer column, got {label_col.type}")
    column = table.column("logits")
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
            or pa.types.is_fixed_size_list(column.type)):
        raise ValueError(f"{str(path)!r}: column 'logits' must be a list of floats per row, got {column.type}")
    if column.null_count:
        raise ValueError(f"{str(path)!r}: {column.null_count} row(s) have no logits (null)")
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    expected = lengths[0] if k is None else k
    if (lengths != expected).any():
        row = int(np.flatnonzero(lengths != expected)[0])
        raise ValueError(
            f"{str(path)!r}: logits have {expected} entries in row 0 but {lengths[row]} in row {offset + row}; "
            "every row needs one logit per class"
        )
    values = pc.list_flatten(column)
    if values.null_count:
        raise ValueError(f"{str(path)!r}: logits hold {values.null_count} null value(s)")
    if not (pa.types.is_floating(values.type) or pa.types.is_integer(values.type)):
        raise ValueError(f"{str(path)!r}: logits must be numbers, got {values.type}")
    logits = values.to_numpy(zero_copy_only=False).astype(np.float64).reshape(len(lengths), int(expected))
    ids = np.asarray(id_col.cast(pa.string()).to_pylist(), dtype=object)
    return ids, label_col.to_numpy().astype(np.int64), logits


def summarise_predictions(path: str, *, rtol: float = 1e-5, atol: float = 1e-6,
                          batch_rows: int | None = None) -> PredictionSummaries:
    """Read ``path`` batch by batch into per-row summaries, repeats of an id dropped (module docstring).

    Memory: one batch of logits (``batch_rows``, default :data:`BATCH_VALUES` // K) plus about 60 bytes
    a row. Raises ValueError as
    :func:`iter_prediction_batches`, and for an id repeated with a different label or prediction.
    """
    ids, labels, parts, k = [], [], [], 0
    stored = stored_summaries(path)
    if stored is not None:  # the prediction actors' summaries: K logits a row are never read
        k, batches = stored
    else:
        batches = ((i, y, row_summaries(z, y), z.shape[1])
                   for i, y, z in iter_prediction_batches(path, batch_rows=batch_rows))
    for batch_ids, batch_labels, summary, *width in batches:
        ids.append(batch_ids)
        labels.append(batch_labels)
        parts.append(summary)
        k = width[0] if width else k
    all_ids, all_labels = np.concatenate(ids), np.concatenate(labels)
    columns = {c: np.concatenate([p[c] for p in parts]) for c in SUMMARY_COLUMNS}
    keep = first_occurrences(all_ids, all_labels, columns, rtol=rtol, atol=atol)
    return PredictionSummaries(all_ids[keep], all_labels[keep], {c: v[keep] for c, v in columns.items()}, k,
                               int(all_ids.shape[0] - keep.shape[0]))


def stored_summaries(path: str) -> tuple[int, Iterator[tuple[np.ndarray, np.ndarray, dict]]] | None:
    """``(K, batches of (ids, labels, summaries))`` read from the summary columns the prediction actors
    wrote (:func:`rmd_ray.distributed.inference.stages.prediction_summaries`), or None when some part
    lacks them (a predictions file from elsewhere: its logits are summarised instead)."""
    parts = part_uris(path)
    k = None
    for part in parts:
        schema = _schema(part)
        names = schema.names
        logits = schema.field("logits").type if "logits" in names else None
        if any(c not in names for c in (*SUMMARY_COLUMNS, "id", "label")) or logits is None \
                or not pa.types.is_fixed_size_list(logits):
            return None
        k = logits.list_size
    return k, _stored_batches(path, parts)


def _schema(part: str) -> pa.Schema:
    with storage.open_input(part) as handle, storage.parquet_errors(part):  # the footer only
        return pq.read_schema(handle)


def _stored_batches(path: str, parts: list[str]) -> Iterator[tuple[np.ndarray, np.ndarray, dict]]:
    failed, first, offset = 0, None, 0
    for part in parts:
        columns = ["id", "label", *SUMMARY_COLUMNS] + ["error"] * ("error" in _schema(part).names)
        table = storage.read_parquet(part, columns=columns)
        if "error" in table.column_names:
            bad = pc.fill_null(pc.not_equal(table.column("error"), ""), False)
            n_bad = int(pc.sum(bad).as_py() or 0)
            if n_bad:
                first = first or table.filter(bad).slice(0, 1).to_pylist()[0]
                failed += n_bad
                table = table.filter(pc.invert(bad))
        if table.column("id").null_count or table.column("label").null_count:
            raise ValueError(f"{str(path)!r}: id or label is null in some rows; every row needs both")
        summary = {c: table.column(c).to_numpy(zero_copy_only=False) for c in SUMMARY_COLUMNS}
        missing = np.flatnonzero(np.isnan(summary["confidence"]))
        if missing.size:
            row = int(missing[0])
            raise ValueError(
                f"{str(path)!r}: row {offset + row} (id {table.column('id')[row].as_py()!r}) has label "
                f"{table.column('label')[row].as_py()}, not one of the model's classes; labels must be 0..K-1"
            )
        offset += table.num_rows
        if table.num_rows:
            yield (np.asarray(table.column("id").cast(pa.string()).to_pylist(), dtype=object),
                   table.column("label").to_numpy().astype(np.int64), summary)
    if failed:
        warnings.warn(
            f"{path!r}: {failed} row(s) could not be predicted and are left out (e.g. id {first['id']!r}: "
            f"{first['error']})", SkippedRowsWarning, stacklevel=4,
        )
    if offset == 0:
        raise ValueError(f"{str(path)!r} has no rows; nothing to evaluate")


def first_occurrences(ids: np.ndarray, labels: np.ndarray, columns: dict[str, np.ndarray], *,
                      rtol: float, atol: float) -> np.ndarray:
    """Sorted row positions of each id's first occurrence; ValueError when a repeat differs."""
    _, first, inverse = np.unique(ids.astype(str), return_index=True, return_inverse=True)
    ref = first[inverse]
    floats = np.stack([columns[c] for c in _FLOAT_SUMMARIES], axis=1)
    same = np.isclose(floats, floats[ref], rtol=rtol, atol=atol, equal_nan=True).all(axis=1)
    same &= columns["prediction"] == columns["prediction"][ref]
    conflict = (labels != labels[ref]) | ~same
    if conflict.any():
        rows = np.flatnonzero(conflict)
        row = int(rows[0])
        what = "label" if labels[row] != labels[ref[row]] else "logits"
        raise ValueError(
            f"id {ids[row]!r} appears more than once with different {what} (rows {int(ref[row])} and {row}); "
            f"{np.unique(ids[rows].astype(str)).size} id(s) conflict in all. Duplicates from padded evaluation "
            "are identical: these are different samples sharing an id, or predictions of different models in one file"
        )
    return np.sort(first)

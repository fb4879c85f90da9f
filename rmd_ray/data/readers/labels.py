"""Labels of reader tables: :func:`label_errors` (a reason per row) and :func:`validate_labels` (good rows /
error rows). The range rule and its wording are :func:`rmd_ray.core.validation.label_reason`."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rmd_ray.core.validation import label_reason

# --------------------------------------------------------------------------------------------
# validation


def label_errors(labels: pa.Array | pa.ChunkedArray, *, n_classes: int) -> list[str]:
    """Per label, ``""`` when it is in ``0 .. n_classes - 1``, else the reason (``"label missing"``,
    ``"label 12 outside 0..9"``): the one wording of a bad label, in the errors table and everywhere."""
    return [label_reason(v, n_classes=n_classes) for v in labels.to_pylist()]


def validate_labels(table: pa.Table, *, n_classes: int) -> tuple[pa.Table, pa.Table]:
    """Split a reader table into rows with a valid label and error rows; never drops a row.

    Parameters
    ----------
    table : pyarrow.Table
        With ``id`` and ``label`` columns.
    n_classes : int
        Valid labels are ``0 .. n_classes - 1``.

    Returns
    -------
    good : pyarrow.Table
        The rows with a valid label, same columns and metadata.
    errors : pyarrow.Table
        ``id`` string, ``label`` int64 (null if missing), ``reason`` string, e.g.
        ``"label 12 outside 0..9"`` or ``"label missing"``. ``len(good) + len(errors) == len(table)``.

    Raises
    ------
    ValueError
        Missing ``id``/``label`` column, non-integer labels, ``n_classes < 1``, duplicate ids
        (the message names one: results are joined by id, so ids must be unique).
    """
    if not isinstance(table, pa.Table):
        raise TypeError(f"table must be a pyarrow.Table, got {type(table).__name__}")
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 1:
        raise ValueError(f"n_classes must be an int >= 1, got {n_classes!r}")
    for col in ("id", "label"):
        if col not in table.column_names:
            raise ValueError(f"table lacks column {col!r}; its columns are {table.column_names}")
    if not pa.types.is_integer(table.schema.field("label").type):
        raise ValueError(f"label column must be integer, got {table.schema.field('label').type}")
    ids = table.column("id").cast(pa.string())
    if pc.count_distinct(ids, mode="all").as_py() != len(table):
        counts = pc.value_counts(ids)
        dup = counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"].as_py()
        raise ValueError(f"duplicate ids in table (e.g. {dup!r}); ids must be unique")
    labels = table.column("label").cast(pa.int64())
    all_reasons = label_errors(labels, n_classes=int(n_classes))
    bad = pa.array([bool(r) for r in all_reasons], pa.bool_())
    bad_idx = np.flatnonzero(bad.to_numpy(zero_copy_only=False))
    good = table.filter(pc.invert(bad))
    bad_labels = labels.take(pa.array(bad_idx, type=pa.int64())).to_pylist()
    reasons = [all_reasons[i] for i in bad_idx]
    errors = pa.table(
        {
            "id": ids.take(pa.array(bad_idx, type=pa.int64())),
            "label": pa.array(bad_labels, type=pa.int64()),
            "reason": pa.array(reasons, type=pa.string()),
        }
    )
    return good, errors.replace_schema_metadata(table.schema.metadata)

"""Per-sample difficulty weights joined by id at any scale, without a Python dict of N entries.

:func:`build_weight_index` reads the scores (a ``scores.parquet`` directory or file, any URI, or a
table) in a Ray task, checks it (unique ids; finite weights in [0, 1]) and leaves two sorted arrays
in the object store: the ids as fixed-width UTF-8 bytes and their float32 weights (about 40 bytes
a row: 50 MB for ImageNet-1k). Decode tasks fetch them once per worker process and look each
batch up by binary search (:func:`lookup_weights`); an id that is not there is an error that
names it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from rmd_ray.core.difficulty import source_column, weights_from_columns
from rmd_ray.core.weights import WeightConfig
from rmd_ray.distributed.training.errors import IngestError

__all__ = ["WeightIndex", "build_weight_index", "join_weights", "lookup_weights", "reweighted"]

WeightIndex = tuple[np.ndarray, np.ndarray]  # (sorted ids as bytes 'S<w>', float32 weights)
DifficultyChoice = tuple[str, WeightConfig, int]  # (difficulty source, weight map, seed)


def _index_from_table(scores: pa.Table) -> WeightIndex:
    missing = [c for c in ("id", "weight") if c not in scores.column_names]
    if missing:
        raise ValueError(f"scores has no column(s) {missing}; pass the scores.parquet of rmd-ray score")
    ids = pc.cast(scores.column("id"), pa.string())
    if ids.null_count:
        raise ValueError("scores has null ids; each row needs an id")
    # a null weight becomes NaN here and is reported below with its id
    weights = pc.cast(scores.column("weight"), pa.float64()).to_numpy(zero_copy_only=False)
    bad = ~np.isfinite(weights) | (weights < 0) | (weights > 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"weight of id {ids[i].as_py()!r} is {float(weights[i])!r}; weights must be finite and in "
            f"[0, 1] ({int(bad.sum())} bad)"
        )
    keys = np.asarray(ids.to_numpy(zero_copy_only=False).astype(str), dtype=object)
    keys = np.char.encode(keys.astype(str), "utf-8") if len(keys) else np.array([], dtype="S1")
    order = np.argsort(keys, kind="stable")
    keys, weights = keys[order], weights[order]
    dup = np.flatnonzero(keys[1:] == keys[:-1])
    if dup.size:
        raise ValueError(
            f"scores has duplicate ids ({dup.size}, e.g. {keys[dup[0]].decode()!r}); each id needs exactly one weight"
        )
    return keys, weights.astype(np.float32)


def reweighted(table: pa.Table, difficulty: DifficultyChoice) -> pa.Table:
    """``id, weight`` with the weights recomputed from ``difficulty = (source, WeightConfig, seed)``.

    The table needs ``id`` and the column the source reads (``rmd_ray.core.difficulty``).
    """
    source, config, seed = difficulty
    column = source_column(source)
    # a missing column is left out, and weights_from_columns's error names it and how to get it
    columns = {
        name: pc.cast(table.column(name), pa.float64()).to_numpy(zero_copy_only=False)
        for name in (column,) if name in table.column_names
    }
    weights = weights_from_columns(columns, source=source, config=config, seed=seed)
    return pa.table({"id": table.column("id"), "weight": weights})


@ray.remote(num_cpus=0.5, scheduling_strategy="DEFAULT")  # never captured by a Tune trial's placement group
def _build(scores: Any, difficulty: DifficultyChoice | None) -> WeightIndex:
    from rmd_ray.io.parts import column_names, read_table

    if difficulty is None:
        table = scores if isinstance(scores, pa.Table) else read_table(scores, columns=["id", "weight"])
        return _index_from_table(table)
    if not isinstance(scores, pa.Table):
        column = source_column(difficulty[0])
        wanted = ["id"] + [column] * (column in column_names(scores))
        scores = read_table(scores, columns=wanted)
    return _index_from_table(reweighted(scores, difficulty))


def build_weight_index(scores: str | pa.Table, *, difficulty: DifficultyChoice | None = None) -> tuple[Any, int]:
    """Check and index ``scores`` in a task; return (object ref of the :data:`WeightIndex`, rows).

    ``difficulty``: None indexes the stored ``weight`` column; ``(source, WeightConfig, seed)``
    recomputes the weights from that source's column first (:func:`reweighted`).

    Raises ValueError (duplicate ids, a weight outside [0, 1], the source's column missing) before any
    training starts.
    """
    if not isinstance(scores, (str, pa.Table)):
        raise TypeError(f"scores must be a scores.parquet path / URI or a pyarrow.Table, got {type(scores).__name__}")
    ref = _build.remote(scores, difficulty)
    try:
        keys, _ = ray.get(ref)  # small next to the images; the driver only looks at its length
    except ray.exceptions.RayTaskError as err:
        cause = getattr(err, "cause", None)
        raise (cause if isinstance(cause, ValueError) else err) from None
    return ref, len(keys)


_CACHE: dict[str, WeightIndex] = {}


def lookup_weights(index: Any, ids: pa.Array | pa.ChunkedArray | Sequence[str]) -> np.ndarray:
    """Weights of ``ids`` (float32, same order) from a :data:`WeightIndex` or an object ref of one.

    Raises
    ------
    ValueError
        Some ids have no weight: the message gives how many and the first few.
    """
    if not isinstance(index, tuple):
        key = index.hex()
        if key not in _CACHE:
            _CACHE.clear()  # one run's index per process at a time
            _CACHE[key] = ray.get(index)
        index = _CACHE[key]
    keys, weights = index
    wanted = np.char.encode(np.asarray([str(i) for i in _as_list(ids)], dtype=str), "utf-8")
    if not len(wanted):
        return np.zeros(0, np.float32)
    pos = np.searchsorted(keys, wanted)
    found = pos < len(keys)
    found[found] = keys[pos[found]] == wanted[found]
    if not found.all():
        absent = [w.decode() for w in wanted[~found][:5]]
        raise IngestError(
            f"{int((~found).sum())} of {len(wanted)} training ids have no weight in scores (e.g. {absent}); "
            "score the same training source (rmd-ray score) or drop those rows"
        )
    return weights[pos]


def _as_list(ids: Any) -> list:
    if isinstance(ids, (pa.Array, pa.ChunkedArray)):
        return ids.to_pylist()
    return list(ids)


def join_weights(ids: Sequence[str], scores: pa.Table) -> np.ndarray:
    """Weights for ``ids`` joined by id from a scores table (in-process; for small tables and tests).

    The same checks and lookup the distributed path runs (:func:`build_weight_index` then
    :func:`lookup_weights`), without Ray.
    """
    if not isinstance(scores, pa.Table):
        raise TypeError(f"scores must be a pyarrow.Table (read scores.parquet), got {type(scores).__name__}")
    try:
        return lookup_weights(_index_from_table(scores), ids)
    except ValueError as err:
        raise ValueError(str(err)) from None

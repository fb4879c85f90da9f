"""Per-sample difficulty weights joined by id at any scale, without a Python dict of N entries.

:func:`build_weight_index` reads the scores (a ``scores.parquet`` directory or file, any URI, or a
table) in a Ray task, checks it (unique ids; finite weights in [0, 1]) and leaves two sorted arrays
in the object store: the ids as fixed-width UTF-8 bytes, their float32 weights and the labels they
were scored with (about 50 bytes a row: 64 MB for ImageNet-1k). Decode tasks fetch them once per
worker process and look each batch up by binary search (:func:`lookup_weights`); an id that is not
there, or a row whose label is not the one it was scored with (labels fixed after scoring: the
weights are stale), is an error that names it.
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
from rmd_ray.distributed.sources.plan import Shard, ShardedSource, read_shard
from rmd_ray.distributed.training.errors import IngestError

__all__ = ["WeightIndex", "build_weight_index", "check_weights_cover", "join_weights", "lookup_weights", "reweighted"]

#: (sorted ids as bytes 'S<w>', float32 weights, int64 scored labels or None when scores has no label)
WeightIndex = tuple[np.ndarray, np.ndarray, np.ndarray | None]
DifficultyChoice = tuple[str, WeightConfig, int]  # (difficulty source, weight map, seed)
NO_LABEL = np.iinfo(np.int64).min  # a null label on either side: equal only to another null


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
    labels = None
    if "label" in scores.column_names:
        labels = pc.fill_null(pc.cast(scores.column("label"), pa.int64()), NO_LABEL)
        labels = labels.to_numpy(zero_copy_only=False).astype(np.int64)[order]
    dup = np.flatnonzero(keys[1:] == keys[:-1])
    if dup.size:
        raise ValueError(
            f"scores has duplicate ids ({dup.size}, e.g. {keys[dup[0]].decode()!r}); each id needs exactly one weight"
        )
    return keys, weights.astype(np.float32), labels


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
    out = {"id": table.column("id"), "weight": weights}
    if "label" in table.column_names:
        out["label"] = table.column("label")
    return pa.table(out)


@ray.remote(num_cpus=0.5, scheduling_strategy="DEFAULT")  # never captured by a Tune trial's placement group
def _build(scores: Any, difficulty: DifficultyChoice | None) -> WeightIndex:
    from rmd_ray.io.parts import column_names, read_table

    if difficulty is None:
        if isinstance(scores, pa.Table):
            return _index_from_table(scores)
        present = column_names(scores)
        return _index_from_table(read_table(scores, columns=["id", "weight"] + ["label"] * ("label" in present)))
    if not isinstance(scores, pa.Table):
        column = source_column(difficulty[0])
        present = column_names(scores)
        wanted = ["id"] + [column] * (column in present) + ["label"] * ("label" in present)
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
        keys, _, _ = ray.get(ref)  # small next to the images; the driver only looks at its length
    except ray.exceptions.RayTaskError as err:
        cause = getattr(err, "cause", None)
        raise (cause if isinstance(cause, ValueError) else err) from None
    return ref, len(keys)


@ray.remote(num_cpus=0.25, scheduling_strategy="DEFAULT")
def _check_shard(index: list, shard: Shard, classes: tuple[str, ...]) -> None:
    table = read_shard(shard, classes=classes, ids_only=True)
    lookup_weights(index[0], table.column("id"), labels=table.column("label"))


def check_weights_cover(weights_ref: Any, source: ShardedSource) -> None:
    """Look up the ids and labels of the source's first and last shards in tasks (ids and labels only,
    no image bytes): scores of another dataset, or scored before labels were fixed, fail here in
    seconds with one message, not inside a decode task once training has started."""
    shards = list(dict.fromkeys(s for s in (source.shards[:1] + source.shards[-1:])))
    refs = [_check_shard.remote([weights_ref], shard, source.classes) for shard in shards]
    try:
        ray.get(refs)
    except ray.exceptions.RayTaskError as err:
        cause = getattr(err, "cause", None)
        raise (cause if isinstance(cause, ValueError) else err) from None


_CACHE: dict[str, WeightIndex] = {}


def lookup_weights(index: Any, ids: pa.Array | pa.ChunkedArray | Sequence[str], *,
                   labels: pa.Array | pa.ChunkedArray | Sequence[int] | None = None) -> np.ndarray:
    """Weights of ``ids`` (float32, same order) from a :data:`WeightIndex` or an object ref of one.

    ``labels``: the rows' labels as read now; each must equal the label its id was scored with (when
    the scores carry labels), else the weights were computed for other labels and are stale.

    Raises
    ------
    ValueError
        Some ids have no weight, or some labels changed since scoring: the message gives how many,
        the first few, and the fix.
    """
    if not isinstance(index, tuple):
        key = index.hex()
        if key not in _CACHE:
            _CACHE.clear()  # one run's index per process at a time
            _CACHE[key] = ray.get(index)
        index = _CACHE[key]
    keys, weights, scored = index
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
    if labels is not None and scored is not None:
        now = np.asarray(_as_list(labels), dtype=object)
        now = np.array([NO_LABEL if v is None else int(v) for v in now], dtype=np.int64)
        changed = np.flatnonzero(scored[pos] != now)
        if changed.size:
            i = int(changed[0])
            raise IngestError(
                f"{changed.size} of {len(wanted)} training rows have a label other than the one they were scored "
                f"with (e.g. id {wanted[i].decode()!r}: scored {int(scored[pos[i]])}, now {int(now[i])}): the "
                "weights are stale; rescore the training source (rmd-ray score re-embeds only what changed)"
            )
    return weights[pos]


def _as_list(ids: Any) -> list:
    if isinstance(ids, (pa.Array, pa.ChunkedArray)):
        return ids.to_pylist()
    return list(ids)


def join_weights(ids: Sequence[str], scores: pa.Table, *, labels: Sequence[int] | None = None) -> np.ndarray:
    """Weights for ``ids`` joined by id from a scores table (in-process; for small tables and tests).

    The same checks and lookup the distributed path runs (:func:`build_weight_index` then
    :func:`lookup_weights`), without Ray.
    """
    if not isinstance(scores, pa.Table):
        raise TypeError(f"scores must be a pyarrow.Table (read scores.parquet), got {type(scores).__name__}")
    try:
        return lookup_weights(_index_from_table(scores), ids, labels=labels)
    except ValueError as err:
        raise ValueError(str(err)) from None

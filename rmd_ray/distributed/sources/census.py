"""The label census of a planned source, before any image is decoded: rows per class, read from the label
columns in Ray tasks (Parquet reads no image bytes; folder and validation shards know their labels from
the plan), and the checks that need the whole source.

Why before embedding: a class count inferred from the largest label turns one stray label into a class
of one sample, whose extreme RMD compresses every other min-max weight; a ``--limit`` on a source sorted
by class leaves one class, where RMD is 0 for every row. Both used to surface only as a warning after
the encoder had run.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import ray

from rmd_ray.distributed.sources.read import read_shard
from rmd_ray.distributed.sources.shards import Shard, ShardedSource

__all__ = ["MIN_INFERRED_CLASS_ROWS", "check_census", "label_census"]

#: A class that exists only because the class count was inferred from the largest label, and holds
#: fewer rows than this, is taken for a stray label (an error naming the fix), not a class.
MIN_INFERRED_CLASS_ROWS = 5
_TASKS_PER_CPU = 2


@ray.remote(num_cpus=0.5)
def _count(shards: Sequence[Shard], classes: Sequence[str]) -> np.ndarray:
    n = len(classes)
    counts = np.zeros(n + 1, dtype=np.int64)  # the last bin: labels missing or outside 0..n-1
    for shard in shards:
        labels = read_shard(shard, classes=classes, ids_only=True).column("label").to_numpy(zero_copy_only=False)
        labels = np.where(np.isnan(labels.astype(np.float64)), -1, labels).astype(np.int64)
        valid = (labels >= 0) & (labels < n)
        counts[:n] += np.bincount(labels[valid], minlength=n)
        counts[n] += int((~valid).sum())
    return counts


def label_census(source: ShardedSource) -> np.ndarray:
    """Rows per class, shape (K + 1,): ``counts[k]`` rows labelled k, ``counts[K]`` rows whose label is
    missing or outside 0..K-1 (they become reported rows). Folder shards are counted from the plan."""
    n = len(source.classes)
    counts = np.zeros(n + 1, dtype=np.int64)
    to_read = []
    for shard in source.shards:
        if shard.kind == "folder" and not shard.id_filter_mode:
            left = shard.n_rows  # a shard cut by --limit keeps its first rows, in directory order
            for _, label, _, start, stop in shard.dirs:
                counts[label] += min(stop - start, left)
                left -= min(stop - start, left)
        elif shard.n_rows:
            to_read.append(shard)
    if to_read:
        tasks = max(1, min(len(to_read), int(_TASKS_PER_CPU * ray.cluster_resources().get("CPU", 1))))
        groups = [to_read[i::tasks] for i in range(tasks)]
        counts += np.sum(ray.get([_count.remote(g, source.classes) for g in groups]), axis=0)
    return counts


def check_census(counts: np.ndarray, source: ShardedSource, *, limit: int | None = None) -> None:
    """ValueError, naming the class and the fix, when the labels cannot give meaningful Gaussians: a class
    that exists only by inference from a stray label, or fewer than two classes with rows."""
    n = len(source.classes)
    per_class = counts[:n]
    # the class the count was inferred from is the largest label, n - 1; under --limit few rows of any
    # class are expected, so only a whole source is judged
    if source.classes_inferred and limit is None and n:
        top = n - 1
        if per_class[top] < MIN_INFERRED_CLASS_ROWS:
            raise ValueError(
                f"label {top} occurs in {int(per_class[top])} row(s) of {source.spec!r}, which has no class names "
                f"in its metadata, so the class count was inferred as {n} from the largest label; pass "
                f"--num-classes K (labels outside 0..K-1 become reported rows) or write the class names into "
                "the schema metadata (key 'classes')"
            )
    present = np.flatnonzero(per_class)
    if present.size < 2:
        which = f"only class {source.classes[present[0]]!r} has" if present.size else "no class has"
        hint = (f" --limit {limit} keeps the first rows, and a source sorted by class then holds one class; "
                "drop --limit or score a shuffled copy" if limit else "")
        raise ValueError(
            f"{which} rows in {source.description}: difficulty (RMD) needs at least two classes with rows;{hint}"
        )

"""Resumable passes: run signatures, per-shard completion records, and the stall watchdog.

What makes a killed or stalled pass resumable (docs/design.md 7.4): ``_run.json`` records what a
directory's rows were made with (a different run is refused, naming ``--fresh``); a shard whose
rows have all been written gets ``_shards/<shard>.json``; at the end, rows that killed attempts
wrote for shards they never finished are dropped, so no row is lost or doubled. The watchdog stops
an execution that writes nothing for too long (a block lost with a node can hang Ray Data) so the
caller can resume it from the records.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from rmd_ray.distributed.sources.plan import ShardedSource
from rmd_ray.io import storage
from rmd_ray.io.parts import stats_sidecar

__all__ = ["EmbeddingStalled", "RUN_RECORD", "SHARDS_DIR", "drop_unfinished_rows", "load_records", "prepare",
           "record", "run_signature", "same_run", "stale_records", "watched"]

RUN_RECORD = "_run.json"
SHARDS_DIR = "_shards"


def run_signature(source: ShardedSource, encoder: Any, extract: Any, resolution: int) -> dict:
    """What a pass's rows depend on: the encoder (an ``EncoderSpec`` or ``ClassifierSpec``), views, seed, plan."""
    return {
        "encoder": encoder.name,
        "checkpoint": encoder.checkpoint,
        "pretrained": encoder.pretrained,
        "resolution": resolution,
        "n_views": extract.n_views,
        "seed": extract.seed,
        "draft_decode": extract.draft_decode and extract.n_views == 1,
        "plan": source.plan_fingerprint(),
        "classes": list(source.classes),
    }


def load_records(features_dir: str) -> dict[int, dict[str, Any]]:
    shards_dir = storage.join(features_dir, SHARDS_DIR)
    if not storage.is_dir(shards_dir):
        return {}
    records = {}
    for uri in storage.list_files(shards_dir, suffix=".json"):
        record = storage.read_json(uri)
        records[int(record["shard"])] = record
    return records


def same_run(features_dir: str, signature: dict) -> bool:
    """Whether ``features_dir`` holds (part of) a pass with this very signature: a rerun resumes it."""
    run_uri = storage.join(features_dir, RUN_RECORD)
    return storage.is_file(run_uri) and storage.read_json(run_uri) == signature


def prepare(features_dir: str, signature: dict, *, fresh: bool) -> dict[int, dict[str, Any]]:
    """Start or resume: check the run record, return the completion records already there."""
    run_uri = storage.join(features_dir, RUN_RECORD)
    if fresh and storage.exists(features_dir):
        storage.delete(features_dir)
    if storage.is_file(run_uri):
        before = storage.read_json(run_uri)
        differ = {k: (before.get(k), v) for k, v in signature.items() if before.get(k) != v}
        if differ:
            parts = []
            if "classes" in differ:
                there, now = (len(c or []) for c in differ.pop("classes"))
                differ.pop("plan", None)  # the plan fingerprint covers the classes: name them, not it
                parts.append(f"other classes: K = {there} there, {now} now, e.g. a --num-classes added")
            parts += [f"{k}: there {a!r} vs now {b!r}" for k, (a, b) in differ.items()]
            detail = "; ".join(parts)
            raise ValueError(
                f"{features_dir!r} holds features of another run ({detail}); pass --fresh "
                "(fresh=True) to re-embed into it, or another --output"
            )
        return load_records(features_dir)
    storage.makedirs(features_dir)
    storage.write_json_atomic(run_uri, signature)
    return {}


def record(features_dir: str, shard: int, *, attempt: str, rows: int, digest: str, content: str = "") -> None:
    """Write shard ``shard``'s completion record: the attempt whose parts hold its rows, their count, the
    (id, label) digest of what was read and the planner's ``content`` digest of the shard's bytes."""
    value = {"shard": shard, "attempt": attempt, "rows": rows, "digest": digest, "content": content}
    storage.write_json_atomic(storage.join(features_dir, SHARDS_DIR, f"{shard:07d}.json"), value)


def stale_records(records: dict[int, dict[str, Any]], source: ShardedSource) -> list[int]:
    """Shards whose completion record was made from other content than the source now holds (a file
    rewritten in place): they must be embedded again. Shards the planner cannot fingerprint are kept."""
    content = {s.index: s.content for s in source.shards}
    # a record without a "content" key predates content digests: it is kept, as an unfingerprinted shard is
    return sorted(i for i, r in records.items()
                  if content.get(i) and "content" in r and r["content"] != content[i])


class EmbeddingStalled(RuntimeError):
    """No writer output for ``ExtractConfig.stall_seconds`` (``startup_seconds`` before the first): resume it."""


def watched(ds: Any, *, stall_seconds: float, startup_seconds: float) -> Iterator[dict[str, np.ndarray]]:
    """``ds.iter_batches`` with a watchdog: a stalled execution is shut down and raises.

    Ray Data can wait forever for a block that lived on a lost node (seen here when a worker node
    was removed mid-run). The batches are pumped by a thread; when none arrives for
    ``stall_seconds`` the execution is shut down and :class:`EmbeddingStalled` raised, and the
    caller resumes from the completion records like any failed execution.

    The first batch gets ``max(startup_seconds, stall_seconds)`` instead: before it, the encoder
    actors are still starting (a process importing torch and loading weights took over 45 s on a
    loaded 2-core CI machine), and stopping them then only restarts the same slow start (CI saw a
    run stop twice that way without writing a row).
    """
    import queue
    import threading

    outbox: queue.Queue = queue.Queue(maxsize=8)

    def pump() -> None:
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                outbox.put(("batch", batch))
            outbox.put(("done", None))
        except BaseException as err:  # noqa: BLE001 - handed to the consuming thread, which raises it
            outbox.put(("error", err))

    threading.Thread(target=pump, name="rmd-ray-embed-consumer", daemon=True).start()
    timeout = max(startup_seconds, stall_seconds)
    while True:
        try:
            kind, item = outbox.get(timeout=timeout)
        except queue.Empty:
            # Ray Data has no public call that stops a streaming execution; the Dataset's own executor
            # handle is what its garbage collection shuts down, so we call the same shutdown.
            executor = getattr(ds, "_current_executor", None)
            if executor is not None:
                executor.shutdown(force=True)
            raise EmbeddingStalled(f"no features written for {timeout:g} s; execution stopped") from None
        timeout = stall_seconds
        if kind == "done":
            return
        if kind == "error":
            raise item
        yield item


@ray.remote(num_cpus=0.25, scheduling_strategy="DEFAULT")  # also runs inside Tune trials (prediction)
def _filter_part(uri: str, keep_attempt_by_shard: dict[int, str], attempt: str) -> int:
    """Keep the rows of a killed attempt's part whose shard that attempt finished; return rows kept."""
    table = storage.read_parquet(uri)
    shards = table.column("shard").to_numpy()
    keep = np.asarray([keep_attempt_by_shard.get(int(s)) == attempt for s in shards], dtype=bool)
    if keep.all():
        return table.num_rows
    storage.delete(stats_sidecar(uri))  # the statistics of rows about to go: pass 2 recomputes them
    if not keep.any():
        storage.delete(uri)
        return 0
    storage.write_parquet_atomic(table.filter(pa.array(keep)), uri)
    return int(keep.sum())


def drop_unfinished_rows(features_dir: str, records: dict[int, dict[str, Any]]) -> list[str]:
    """Make every row appear once: filter the parts of earlier attempts by the shard records."""
    names = [storage.basename(u) for u in storage.list_files(features_dir, suffix=".parquet")]
    names = [n for n in names if n.startswith("part-")]
    attempts = {n: n.split("-")[1] for n in names}
    finishing = {r["attempt"] for r in records.values()}
    keep_by_shard = {shard: r["attempt"] for shard, r in records.items()}
    # Parts of the newest attempt hold only shards it finished; older attempts may hold unfinished ones.
    check = [n for n in names if len(finishing) > 1 or attempts[n] not in finishing]
    if check:
        kept = ray.get([
            _filter_part.remote(storage.join(features_dir, n), keep_by_shard, attempts[n]) for n in check
        ])
        names = [n for n in names if n not in check] + [n for n, k in zip(check, kept) if k]
    return sorted(names)

"""Pass 1 of scoring: embed every shard of a source with Ray Data and write the features as parts.

Data flow (an ``id`` column travels end to end; Ray Data does not keep order, docs/design.md section 6)::

    shard plan --read (tasks: Parquet row groups, class-directory listings)--> rows + label errors
      --decode + geometry (CPU tasks, uint8 out)--> embed (actor pool, GPU when present)
      --write (tasks)--> features.parquet/part-<attempt>-<hash>.parquet ; (shard, rows) back to the driver
    driver: a shard's rows all written -> features.parquet/_shards/<shard>.json (the completion record)

A run killed at any point and started again with the same command skips every shard that has a
completion record and embeds the rest; rows that a killed attempt wrote for a shard it never
finished are dropped from its parts at the end (a row is kept only if its part's attempt is the one
named by its shard's record), so no row is lost or doubled. ``fresh=True`` starts over.
"""

from __future__ import annotations

import logging
import time
import uuid
import warnings
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import ray

from rmd_ray.distributed.inference.config import EmbedResult, EncoderSpec, ExtractConfig, actor_resources
from rmd_ray.distributed.inference.resume import (
    EmbeddingStalled,
    drop_unfinished_rows,
    prepare,
    record,
    run_signature,
    stale_records,
    watched,
)
from rmd_ray.distributed.inference.stages import EmbedActor, feature_column, read_decode_stage, write_stage
from rmd_ray.distributed.sources.plan import Shard, ShardedSource, combine_digests, shard_digest
from rmd_ray.io.parts import write_manifest

log = logging.getLogger("rmd_ray.scoring")

__all__ = [
    "EmbedActor", "EmbedResult", "EncoderSpec", "ExtractConfig", "actor_resources", "embed_source",
    "embedding_pipeline", "feature_column",
]


def embedding_pipeline(
    shards: list[Shard],
    *,
    classes: tuple[str, ...],
    features_dir: str,
    encoder: EncoderSpec,
    extract: ExtractConfig,
    attempt: str,
    column: str = "features",
    stats_classes: int | None = None,
) -> Any:
    """The lazy Dataset of one execution: decode tasks -> encoder actor pool -> writer tasks.

    ``stats_classes``: K, to have the actors also hand back each part's class statistics (scoring).
    ``column == "logits"`` (a classifier): the actors add each row's prediction summaries
    (:data:`rmd_ray.core.metrics.SUMMARY_COLUMNS`), which evaluation reads instead of the logits.
    """
    actors, gpus = actor_resources(extract)
    ds = ray.data.from_items([{"shard": s.index} for s in shards], override_num_blocks=len(shards))
    # Read and decode in one generator task per shard, yielding encoder-sized batches: as two map
    # stages Ray Data fuses them and bundles every shard into one task by the decode batch size, which
    # serialises the whole run (one task, one block, no overlap with the encoder).
    # max_calls=0 is Ray's default (a task worker is reused without limit); it is spelled out because Ray Data
    # fuses a task stage into the next actor stage whose remote arguments are equal, which with CPU encoders
    # (1 CPU each, decode_cpus 1) moved decoding into the encoder actors: no decode beside encoding, and on a
    # cluster no decoding on the CPU-only nodes (docs/benchmarks.md, extract_throughput).
    ds = ds.map_batches(
        read_decode_stage,
        fn_kwargs={"plan": {s.index: s for s in shards}, "classes": classes, "spec": encoder,
                   "n_views": extract.n_views, "seed": extract.seed, "batch_size": extract.batch_size,
                   "draft": extract.draft_decode},
        batch_size=1, batch_format="pyarrow", num_cpus=extract.decode_cpus, max_calls=0,
    )
    # The encoder actors go one per node before two on one (every node's CPUs/GPUs work) by Ray Data's own
    # default, "SPREAD": Ray 2.60 deprecates passing a scheduling strategy to map_batches or its DataContext
    # ("Ray Data manages scheduling internally"); the two-node test checks that both nodes embed.
    # One actor call is one features part (no larger than a shard, so completion records follow the work
    # instead of arriving in bursts): the encoder runs over it batch_size images at a time and, when scoring,
    # forms the part's class statistics where the features are (docs/design.md section 7.2).
    write_rows = max(1, min(extract.write_rows, max(s.n_rows for s in shards)))
    actor_kwargs = {"spec": encoder, "chunk": extract.batch_size, "stats_classes": stats_classes,
                    "summaries": column == "logits"}
    ds = ds.map_batches(
        EmbedActor, fn_constructor_kwargs=actor_kwargs,
        compute=ray.data.ActorPoolStrategy(size=actors), batch_size=write_rows, batch_format="numpy",
        num_cpus=0 if gpus else 1, num_gpus=gpus,
    )
    # The writes ask for no CPU (I/O only: never starved by decode), so nothing but this cap bounds how many
    # run at once; uncapped, Ray Data ran 15 at once on a 2-node cluster here, each in a fresh worker process
    # (writes waited 21 s on average to start, 50 s for 384 rows). Two per encoder keep up with the encoders.
    # The cap is an upper bound: a small run whose encoder output arrives as fewer blocks than the cap is fine,
    # and Ray Data's warning about it would only alarm the user. Matched to this operator only; set per call
    # (the executor warns from its own thread, under whatever filters the process has then).
    warnings.filterwarnings(
        "ignore", message=r"The maximum number of concurrent tasks for 'MapBatches\(write_stage\)'",
        category=UserWarning,
    )
    return ds.map_batches(
        write_stage, fn_kwargs={"features_dir": features_dir, "attempt": attempt, "column": column},
        batch_size=None, batch_format="numpy", num_cpus=0, compute=ray.data.TaskPoolStrategy(size=2 * actors),
    )


def _embed_pending(
    ds: Any,
    *,
    features_dir: str,
    extract: ExtractConfig,
    attempt: str,
    records: dict[int, dict[str, Any]],
    contents: dict[int, str],
    on_rows: Callable[[int, str], None],
) -> None:
    """Run one execution of :func:`embedding_pipeline`; completion records are written as shards finish."""
    counts: dict[int, int] = {}
    for batch in watched(ds, stall_seconds=extract.stall_seconds, startup_seconds=extract.startup_seconds):
        for shard, rows, shard_rows, digest, nodes in zip(
            batch["shard"], batch["rows"], batch["shard_rows"], batch["digest"], batch["nodes"]
        ):
            shard, rows, shard_rows = int(shard), int(rows), int(shard_rows)
            counts[shard] = counts.get(shard, 0) + rows
            on_rows(rows, str(nodes))
            if counts[shard] == shard_rows:
                record(features_dir, shard, attempt=attempt, rows=shard_rows, digest=str(digest),
                       content=contents.get(shard, ""))
                records[shard] = {"shard": shard, "attempt": attempt, "rows": shard_rows, "digest": str(digest),
                                  "content": contents.get(shard, "")}
            elif counts[shard] > shard_rows:
                raise RuntimeError(f"shard {shard} produced {counts[shard]} rows for {shard_rows} inputs")


def embed_source(
    source: ShardedSource,
    *,
    features_dir: str,
    encoder: EncoderSpec,
    extract: ExtractConfig,
    resolution: int,
    feature_dim: int,
    fresh: bool = False,
    progress: Callable[[int, int], None] | None = None,
    max_attempts: int = 3,
    column: str = "features",
    metadata: dict[str, Any] | None = None,
    stats_classes: int | None = None,
) -> EmbedResult:
    """Embed every shard of ``source`` not yet done into ``features_dir`` (any URI); resumable.

    Returns once every shard has a completion record, the parts hold each row exactly once and the
    directory's manifest is written. When an execution fails part-way (a node lost with blocks Ray
    cannot rebuild, say), it is started again on the shards still without a record, up to
    ``max_attempts`` executions in all, exactly as a rerun of the command would. ``column`` names
    the output column (``logits`` when the "encoder" is a trained classifier); ``metadata`` is added
    to the manifest's. ``stats_classes`` (K): each part also gets its class statistics as a sidecar
    (:func:`rmd_ray.io.parts.stats_sidecar`), formed by the encoder actors, which pass 2 of scoring reads
    instead of the features.
    """
    start = time.perf_counter()
    signature = run_signature(source, encoder, extract, resolution)
    records = prepare(features_dir, signature, fresh=fresh)
    changed = stale_records(records, source)
    for index in changed:  # made from content the source no longer holds: embed again
        del records[index]
    if changed:
        log.warning("%d shards changed since the earlier run: embedding them again", len(changed))
    plan = {s.index for s in source.shards}
    contents = {s.index: s.content for s in source.shards}
    done_before = {i for i in records if i in plan}
    total = source.n_rows
    state = {"rows": sum(records[i]["rows"] for i in done_before)}
    nodes: set[str] = set()

    def on_rows(rows: int, node_list: str) -> None:
        state["rows"] += rows
        nodes.update(n for n in node_list.split(",") if n)
        if progress is not None:
            progress(state["rows"], total)

    attempts = []
    for execution in range(max_attempts):
        pending = [s for s in source.shards if s.index not in records and s.n_rows > 0]
        if not pending:
            break
        attempt = uuid.uuid4().hex[:12]
        attempts.append(attempt)
        log.info("embedding %d shards (%d done before) with %s", len(pending), len(records), encoder.name)
        state["rows"] = sum(r["rows"] for i, r in records.items() if i in plan)
        try:
            ds = embedding_pipeline(pending, classes=source.classes, features_dir=features_dir, encoder=encoder,
                                     extract=extract, attempt=attempt, column=column, stats_classes=stats_classes)
            _embed_pending(ds, features_dir=features_dir, extract=extract, attempt=attempt, records=records,
                           contents=contents, on_rows=on_rows)
        except (ray.exceptions.RayError, OSError, EmbeddingStalled) as err:
            if execution + 1 == max_attempts:
                raise
            log.warning("embedding stopped (%s); resuming from the completion records", type(err).__name__)
    attempt = attempts[-1] if attempts else uuid.uuid4().hex[:12]
    metadata = _finish(source, features_dir, records, attempt=attempt, signature=signature, feature_dim=feature_dim,
                       extra=metadata)
    fingerprint = metadata["dataset_fingerprint"]
    return EmbedResult(
        features_dir, attempt, len(done_before), len(source.shards) - len(done_before), metadata["rows"],
        fingerprint, tuple(sorted(nodes)), time.perf_counter() - start, metadata, shards_changed=len(changed),
    )


def _finish(source: ShardedSource, features_dir: str, records: dict[int, dict[str, Any]], *, attempt: str,
            signature: dict, feature_dim: int, extra: dict[str, Any] | None) -> dict[str, Any]:
    """Record the empty shards, drop rows of unfinished attempts, write the manifest; its metadata."""
    empty_digest = shard_digest(pa.table({"id": pa.array([], pa.string()), "label": pa.array([], pa.int64())}))
    for shard in source.shards:
        if shard.index in records:
            continue
        if shard.n_rows:
            raise RuntimeError(f"shard {shard.index} ({shard.key()}) has no completion record after the run")
        record(features_dir, shard.index, attempt=attempt, rows=0, digest=empty_digest, content=shard.content)
        records[shard.index] = {"shard": shard.index, "attempt": attempt, "rows": 0, "digest": empty_digest,
                                "content": shard.content}
    parts = drop_unfinished_rows(features_dir, records)
    fingerprint = combine_digests([records[s.index]["digest"] for s in source.shards])
    metadata = {
        **signature,
        "feature_dim": feature_dim,
        "dataset_fingerprint": fingerprint,
        "source": source.description,
        "rows": sum(records[s.index]["rows"] for s in source.shards),
        **(extra or {}),
    }
    write_manifest(features_dir, parts, rows=metadata["rows"], metadata=metadata)
    return metadata

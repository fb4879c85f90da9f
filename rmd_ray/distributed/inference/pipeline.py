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

import functools
import hashlib
import logging
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from rmd_ray.data.readers import label_errors
from rmd_ray.distributed.inference.resume import (
    EmbeddingStalled,
    drop_unfinished_rows,
    prepare,
    record,
    run_signature,
    watched,
)
from rmd_ray.distributed.runtime.cluster import physical_cpus, worker_setup
from rmd_ray.distributed.sources.plan import Shard, ShardedSource, combine_digests, read_shard, shard_digest
from rmd_ray.io import storage
from rmd_ray.io.parts import write_manifest
from rmd_ray.nn.encoders import DEFAULT_ENCODER, Encoder, build_encoder

log = logging.getLogger("rmd_ray.scoring")

__all__ = ["EmbedActor", "EmbedResult", "EncoderSpec", "ExtractConfig", "embed_source", "feature_column"]



# ------------------------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class EncoderSpec:
    """What every actor needs to rebuild the same frozen encoder (the model itself never travels)."""

    name: str = DEFAULT_ENCODER
    checkpoint: str | None = None
    image_size: int | None = None
    pretrained: bool = True

    def build(self) -> Encoder:
        return build_encoder(
            self.name, checkpoint=self.checkpoint, image_size=self.image_size, pretrained=self.pretrained
        )


@dataclass(frozen=True)
class ExtractConfig:
    """How feature extraction is spread over the cluster.

    Parameters
    ----------
    batch_size : int
        Images per encoder call.
    num_actors : int, optional
        Encoder actors; default one per GPU when the cluster has GPUs, else three quarters of the
        CPUs (at least one core is left to decoding).
    gpus_per_actor : float, optional
        Default 1 when the cluster has GPUs, else 0.
    n_views : int
        1: each image once, unaugmented. V > 1: V augmented views per image (random resized crop +
        flip, seeded by (id, view)); the Gaussians are fitted on all views and scores averaged.
    seed : int
        Base seed of the view augmentations.
    write_rows : int
        Rows per features part file.
    decode_cpus : float
        Logical CPUs each decode task asks for.
    stall_seconds : float
        An execution that writes no features for this long (a block lost with a node, say) is
        stopped and resumed from the completion records.
    startup_seconds : float
        How long an execution may take to write its first features (its actors load the encoder)
        before it counts as stalled; ``stall_seconds`` if that is longer.
    """

    batch_size: int = 64
    num_actors: int | None = None
    gpus_per_actor: float | None = None
    n_views: int = 1
    seed: int = 0
    write_rows: int = 4096
    decode_cpus: float = 1.0
    stall_seconds: float = 600.0
    startup_seconds: float = 600.0

    def __post_init__(self) -> None:
        for name in ("batch_size", "n_views", "write_rows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if self.num_actors is not None and (not isinstance(self.num_actors, int) or self.num_actors < 1):
            raise ValueError(f"num_actors must be an int >= 1 or None, got {self.num_actors!r}")
        if self.gpus_per_actor is not None and not (0 <= self.gpus_per_actor):
            raise ValueError(f"gpus_per_actor must be >= 0, got {self.gpus_per_actor!r}")
        if not 0 < self.decode_cpus <= 64:
            raise ValueError(f"decode_cpus must be in (0, 64], got {self.decode_cpus!r}")
        for name in ("stall_seconds", "startup_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class EmbedResult:
    """What pass 1 left in ``features_dir`` and how it got there."""

    features_dir: str
    attempt: str
    shards_done_before: int
    shards_embedded: int
    rows: int
    dataset_fingerprint: str
    nodes: tuple[str, ...]
    seconds: float
    metadata: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ stages
def _read_stage(batch: pa.Table, *, plan: dict[int, Shard], classes: tuple[str, ...]) -> pa.Table:
    """Shard indices -> their rows, with ``error``/``stage`` for invalid labels and the shard's digest."""
    tables = []
    for index in batch.column("shard").to_pylist():
        table = read_shard(plan[index], classes=classes)
        reasons = label_errors(table.column("label"), n_classes=len(classes))
        table = table.append_column("error", pa.array(reasons, pa.string()))
        table = table.append_column("stage", pa.array(["label" if r else "" for r in reasons], pa.string()))
        digest = shard_digest(table)
        tables.append(table.append_column("shard_digest", pa.array([digest] * table.num_rows, pa.string())))
    return pa.concat_tables(tables, promote_options="default")


@functools.lru_cache(maxsize=4)
def _preprocessing(spec: EncoderSpec) -> tuple[Any, Callable[..., Any]]:
    # Cached per worker process (Ray reuses them): the encoder is built once for its preprocessing
    # and only the transforms are kept, so the model's memory is released.
    from rmd_ray.nn.encoders import split_preprocess

    preprocess = spec.build().preprocess
    return split_preprocess(preprocess), preprocess


def _read_decode_stage(
    batch: pa.Table, *, plan: dict[int, Shard], classes: tuple[str, ...], spec: EncoderSpec, n_views: int,
    seed: int, batch_size: int,
) -> Iterator[dict[str, np.ndarray]]:
    """One shard index in, its rows out as decoded batches of ``batch_size`` (a generator: streams)."""
    rows = _read_stage(batch, plan=plan, classes=classes)
    for start in range(0, rows.num_rows, batch_size):
        yield _decode_stage(rows.slice(start, batch_size), spec=spec, n_views=n_views, seed=seed)


def _decode_stage(batch: pa.Table, *, spec: EncoderSpec, n_views: int, seed: int) -> dict[str, np.ndarray]:
    """CPU stage: decode, augment views, resize/crop to uint8; undecodable rows come out flagged."""
    from rmd_ray.data.decode import DecodeError, augment, decode_image, view_seed

    worker_setup()
    split, preprocess = _preprocessing(spec)
    rows = batch.drop_columns([c for c in ("shard_rows", "shard_digest") if c in batch.column_names]).to_pylist()
    errors = batch.column("error").to_pylist()
    stages = batch.column("stage").to_pylist()
    images: list[np.ndarray | None] = []
    for i, row in enumerate(rows):
        if errors[i]:
            images.append(None)
            continue
        try:
            image = decode_image(row)
        except DecodeError as err:
            errors[i], stages[i] = str(err), "decode"
            images.append(None)
            continue
        views = [image] if n_views == 1 else [
            augment(image, seed=view_seed(row["id"], v, seed=seed)) for v in range(n_views)
        ]
        images.append(np.stack([split.to_uint8(v) if split else preprocess(v).numpy() for v in views]))
    shape, dtype = _image_shape(spec, n_views, split)
    stacked = np.zeros((len(rows), *shape), dtype=dtype)
    for i, image in enumerate(images):
        if image is not None:
            stacked[i] = image
    return {
        "id": np.asarray(batch.column("id").to_pylist(), dtype=object),
        "label": batch.column("label").fill_null(-1).to_numpy(),
        "shard": batch.column("shard").to_numpy(),
        "shard_rows": batch.column("shard_rows").to_numpy(),
        "shard_digest": np.asarray(batch.column("shard_digest").to_pylist(), dtype=object),
        "image": stacked,
        "error": np.asarray(errors, dtype=object),
        "stage": np.asarray(stages, dtype=object),
    }


@functools.lru_cache(maxsize=4)
def _image_shape(spec: EncoderSpec, n_views: int, split: Any) -> tuple[tuple[int, ...], Any]:
    from PIL import Image

    _, preprocess = _preprocessing(spec)
    probe = Image.new("RGB", (spec.image_size or 224, spec.image_size or 224))
    if split is not None:
        return (n_views, *split.to_uint8(probe).shape), np.uint8
    return (n_views, *preprocess(probe).shape), np.float32


class EmbedActor:
    """Callable class for ``map_batches``: the encoder is built once per actor, in ``__init__``."""

    def __init__(self, spec: EncoderSpec) -> None:
        import torch

        from rmd_ray.nn.encoders import split_preprocess

        worker_setup()
        self.encoder = spec.build()
        self.split = split_preprocess(self.encoder.preprocess)
        self.device = torch.device("cuda" if torch.cuda.is_available() and ray.get_gpu_ids() else "cpu")
        self.encoder.model.to(self.device)
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        ok = batch["error"] == ""
        n, n_views = len(ok), batch["image"].shape[1]
        dim = self.encoder.feature_dim
        features = np.zeros((n, n_views * dim), dtype=np.float32)
        if ok.any():
            images = np.ascontiguousarray(batch["image"][ok])
            images = torch.from_numpy(images.reshape(-1, *images.shape[2:])).to(self.device, non_blocking=True)
            if self.split is not None:
                images = self.split.normalize(images)
            with torch.inference_mode(), torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
                out = self.encoder.model(images)
            features[ok] = out.float().cpu().numpy().reshape(int(ok.sum()), n_views * dim)
        out_batch = {k: v for k, v in batch.items() if k != "image"}
        out_batch["features"] = features
        out_batch["node"] = np.asarray([self.node] * n, dtype=object)
        return out_batch


def feature_column(features: np.ndarray) -> pa.FixedSizeListArray:
    """(N, D) float32 -> fixed_size_list<float32>[D]."""
    features = np.ascontiguousarray(features, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(features.reshape(-1)), features.shape[1])


def _write_stage(
    batch: dict[str, np.ndarray], *, features_dir: str, attempt: str, column: str = "features"
) -> dict[str, np.ndarray]:
    """Write one part (model outputs under ``column``); return (shard, rows, digest) per shard and the nodes."""
    ids = [str(i) for i in batch["id"]]
    labels = batch["label"].astype(np.int64)
    table = pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "label": pa.array(labels, pa.int64(), mask=labels < 0),
            "shard": pa.array(batch["shard"].astype(np.int64)),
            column: feature_column(batch["features"]),
            "error": pa.array([str(e) for e in batch["error"]], pa.string()),
            "stage": pa.array([str(s) for s in batch["stage"]], pa.string()),
        }
    )
    # The name hashes the rows, so a retried task (a node lost mid-run) rewrites the same file.
    name = f"part-{attempt}-{hashlib.sha256(chr(0).join(ids).encode()).hexdigest()[:16]}.parquet"
    storage.write_parquet_atomic(table, storage.join(features_dir, name))
    shards, first, counts = np.unique(batch["shard"], return_index=True, return_counts=True)
    nodes = ",".join(sorted({str(n) for n in batch["node"]}))
    return {
        "shard": shards.astype(np.int64),
        "rows": counts.astype(np.int64),
        "shard_rows": batch["shard_rows"][first].astype(np.int64),
        "digest": np.asarray([batch["shard_digest"][i] for i in first], dtype=object),
        "nodes": np.asarray([nodes] * len(shards), dtype=object),
    }


# -------------------------------------------------------------------------------------------- driver
def _actor_resources(extract: ExtractConfig) -> tuple[int, float]:
    resources = ray.cluster_resources()
    gpus = extract.gpus_per_actor
    if gpus is None:
        gpus = 1.0 if resources.get("GPU", 0) > 0 else 0.0
    if extract.num_actors:
        return extract.num_actors, gpus
    if gpus:
        return max(1, int(resources["GPU"] // gpus)), gpus
    cpus = int(resources.get("CPU", 1))
    nodes = max(1, sum(1 for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0))
    if nodes == 1:
        # Leave a quarter of the cores (at least one) to decoding: on 2 cores one encoder actor and the
        # decode tasks beat two actors (benchmarks/extract_throughput.py).
        cores = physical_cpus()
        return max(1, min(cores - max(1, cores // 4), cpus - 1)), 0.0
    return max(1, cpus - cpus // 4 - nodes), 0.0


def _embedding_pipeline(
    shards: list[Shard],
    *,
    classes: tuple[str, ...],
    features_dir: str,
    encoder: EncoderSpec,
    extract: ExtractConfig,
    attempt: str,
    column: str = "features",
) -> Any:
    """The lazy Dataset of one execution: decode tasks -> encoder actor pool -> writer tasks."""
    actors, gpus = _actor_resources(extract)
    ds = ray.data.from_items([{"shard": s.index} for s in shards], override_num_blocks=len(shards))
    # Read and decode in one generator task per shard, yielding encoder-sized batches: as two map
    # stages Ray Data fuses them and bundles every shard into one task by the decode batch size, which
    # serialises the whole run (measured: 1 task, 1 block of 10,000 rows, no overlap with the encoder).
    # max_calls=0 is Ray's default (a task worker is reused without limit); it is spelled out because Ray Data
    # fuses a task stage into the next actor stage whose remote arguments are equal, which with CPU encoders
    # (1 CPU each, decode_cpus 1) moved decoding into the encoder actors: no decode beside encoding, and on a
    # cluster no decoding on the CPU-only nodes (extract_throughput 1.00x, one run 24.8 s against 12-16 s).
    ds = ds.map_batches(
        _read_decode_stage,
        fn_kwargs={"plan": {s.index: s for s in shards}, "classes": classes, "spec": encoder,
                   "n_views": extract.n_views, "seed": extract.seed, "batch_size": extract.batch_size},
        batch_size=1, batch_format="pyarrow", num_cpus=extract.decode_cpus, max_calls=0,
    )
    # The encoder actors go one per node before two on one (every node's CPUs/GPUs work) by Ray Data's own
    # default, "SPREAD": Ray 2.60 deprecates passing a scheduling strategy to map_batches or its DataContext
    # ("Ray Data manages scheduling internally"); the two-node test checks that both nodes embed.
    ds = ds.map_batches(
        EmbedActor, fn_constructor_kwargs={"spec": encoder}, compute=ray.data.ActorPoolStrategy(size=actors),
        batch_size=extract.batch_size, batch_format="numpy", num_cpus=0 if gpus else 1, num_gpus=gpus,
    )
    # Parts no larger than a shard, so completion records follow the work instead of arriving in bursts.
    write_rows = max(1, min(extract.write_rows, max(s.n_rows for s in shards)))
    # The writes ask for no CPU (I/O only: never starved by decode), so nothing but this cap bounds how many
    # run at once; uncapped, Ray Data ran 15 at once on a 2-node cluster here, each in a fresh worker process
    # (writes waited 21 s on average to start, 50 s for 384 rows). Two per encoder keep up with the encoders.
    # The cap is an upper bound: a small run whose encoder output arrives as fewer blocks than the cap is fine,
    # and Ray Data's warning about it would only alarm the user. Matched to this operator only; set per call
    # (the executor warns from its own thread, under whatever filters the process has then).
    warnings.filterwarnings(
        "ignore", message=r"The maximum number of concurrent tasks for 'MapBatches\(_write_stage\)'",
        category=UserWarning,
    )
    return ds.map_batches(
        _write_stage, fn_kwargs={"features_dir": features_dir, "attempt": attempt, "column": column},
        batch_size=write_rows, batch_format="numpy", num_cpus=0, compute=ray.data.TaskPoolStrategy(size=2 * actors),
    )


def _embed_pending(
    ds: Any,
    *,
    features_dir: str,
    extract: ExtractConfig,
    attempt: str,
    records: dict[int, dict[str, Any]],
    on_rows: Callable[[int, str], None],
) -> None:
    """Run one execution of :func:`_embedding_pipeline`; completion records are written as shards finish."""
    counts: dict[int, int] = {}
    for batch in watched(ds, stall_seconds=extract.stall_seconds, startup_seconds=extract.startup_seconds):
        for shard, rows, shard_rows, digest, nodes in zip(
            batch["shard"], batch["rows"], batch["shard_rows"], batch["digest"], batch["nodes"]
        ):
            shard, rows, shard_rows = int(shard), int(rows), int(shard_rows)
            counts[shard] = counts.get(shard, 0) + rows
            on_rows(rows, str(nodes))
            if counts[shard] == shard_rows:
                record(features_dir, shard, attempt=attempt, rows=shard_rows, digest=str(digest))
                records[shard] = {"shard": shard, "attempt": attempt, "rows": shard_rows, "digest": str(digest)}
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
) -> EmbedResult:
    """Embed every shard of ``source`` not yet done into ``features_dir`` (any URI); resumable.

    Returns once every shard has a completion record, the parts hold each row exactly once and the
    directory's manifest is written. When an execution fails part-way (a node lost with blocks Ray
    cannot rebuild, say), it is started again on the shards still without a record, up to
    ``max_attempts`` executions in all, exactly as a rerun of the command would. ``column`` names
    the output column (``logits`` when the "encoder" is a trained classifier); ``metadata`` is added
    to the manifest's.
    """
    start = time.perf_counter()
    signature = run_signature(source, encoder, extract, resolution)
    records = prepare(features_dir, signature, fresh=fresh)
    plan = {s.index for s in source.shards}
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
            ds = _embedding_pipeline(pending, classes=source.classes, features_dir=features_dir, encoder=encoder,
                                     extract=extract, attempt=attempt, column=column)
            _embed_pending(ds, features_dir=features_dir, extract=extract, attempt=attempt, records=records,
                           on_rows=on_rows)
        except (ray.exceptions.RayError, OSError, EmbeddingStalled) as err:
            if execution + 1 == max_attempts:
                raise
            log.warning("embedding stopped (%s); resuming from the completion records", type(err).__name__)
    attempt = attempts[-1] if attempts else uuid.uuid4().hex[:12]
    empty_digest = shard_digest(pa.table({"id": pa.array([], pa.string()), "label": pa.array([], pa.int64())}))
    for shard in source.shards:
        if shard.index in records:
            continue
        if shard.n_rows:
            raise RuntimeError(f"shard {shard.index} ({shard.key()}) has no completion record after the run")
        record(features_dir, shard.index, attempt=attempt, rows=0, digest=empty_digest)
        records[shard.index] = {"shard": shard.index, "attempt": attempt, "rows": 0, "digest": empty_digest}
    parts = drop_unfinished_rows(features_dir, records)
    fingerprint = combine_digests([records[s.index]["digest"] for s in source.shards])
    metadata = {
        **signature,
        "feature_dim": feature_dim,
        "dataset_fingerprint": fingerprint,
        "source": source.description,
        "rows": sum(records[s.index]["rows"] for s in source.shards),
        **(metadata or {}),
    }
    write_manifest(features_dir, parts, rows=metadata["rows"], metadata=metadata)
    return EmbedResult(
        features_dir, attempt, len(done_before), len(source.shards) - len(done_before), metadata["rows"],
        fingerprint, tuple(sorted(nodes)), time.perf_counter() - start, metadata,
    )



"""The stages of the batch-inference pipeline, each a Ray Data map function: read + decode (a generator
task per shard), the model actor (``EmbedActor``) and the part writer."""

from __future__ import annotations

import functools
import hashlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from rmd_ray.core.array_api import module_for_device
from rmd_ray.core.metrics import SUMMARY_COLUMNS
from rmd_ray.core.stats import (
    ClassStats,
    batch_stats_unchecked,
    empty_stats,
    merge_all,
    stats_from_bytes,
    stats_to_bytes,
)
from rmd_ray.data.readers import label_errors
from rmd_ray.distributed.inference.config import EncoderSpec
from rmd_ray.distributed.runtime.cluster import worker_device, worker_setup
from rmd_ray.distributed.sources.plan import Shard, read_shard, shard_digest
from rmd_ray.io import storage
from rmd_ray.io.parts import stats_sidecar

__all__ = [
    "EmbedActor", "MISSING_LABEL", "feature_column", "merged_part_stats", "part_stats", "prediction_summaries",
    "read_decode_stage", "write_stage",
]

#: Stands for a missing label between the decode and write stages (NumPy batches have no nulls): written
#: back as null, while any label the source gave, -1 included, is kept as given in ``errors.parquet``.
MISSING_LABEL = np.iinfo(np.int64).min


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
def _preprocessing(spec: EncoderSpec) -> tuple[Any, Callable[..., Any], int]:
    # Cached per worker process (Ray reuses them). The spec says its preprocessing without building the
    # model (an encoder's registry entry, a classifier's recorded geometry): no weights are read here.
    from rmd_ray.nn.encoders import split_preprocess

    prep = spec.preprocessing()
    preprocess = prep.transform()
    return split_preprocess(preprocess), preprocess, prep.min_side


def read_decode_stage(
    batch: pa.Table, *, plan: dict[int, Shard], classes: tuple[str, ...], spec: EncoderSpec, n_views: int,
    seed: int, batch_size: int, draft: bool = False,
) -> Iterator[dict[str, np.ndarray]]:
    """One shard index in, its rows out as decoded batches of ``batch_size`` (a generator: streams).

    ``draft``: large JPEGs decoded at reduced size (``ExtractConfig.draft_decode``; single views only).
    """
    rows = _read_stage(batch, plan=plan, classes=classes)
    for start in range(0, rows.num_rows, batch_size):
        yield _decode_stage(rows.slice(start, batch_size), spec=spec, n_views=n_views, seed=seed, draft=draft)


def _decode_stage(
    batch: pa.Table, *, spec: EncoderSpec, n_views: int, seed: int, draft: bool
) -> dict[str, np.ndarray]:
    """CPU stage: decode, augment views, resize/crop to uint8; undecodable rows come out flagged."""
    from rmd_ray.data.decode import DecodeError, augment, decode_image, view_seed

    worker_setup()
    split, preprocess, min_side = _preprocessing(spec)
    min_side = min_side if draft and n_views == 1 else None
    rows = batch.drop_columns([c for c in ("shard_rows", "shard_digest") if c in batch.column_names]).to_pylist()
    errors = batch.column("error").to_pylist()
    stages = batch.column("stage").to_pylist()
    images: list[np.ndarray | None] = []
    for i, row in enumerate(rows):
        if errors[i]:
            images.append(None)
            continue
        try:
            image = decode_image(row, min_side=min_side)
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
        "label": batch.column("label").fill_null(MISSING_LABEL).to_numpy(),
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

    _, preprocess, _ = _preprocessing(spec)
    probe = Image.new("RGB", (spec.image_size or 224, spec.image_size or 224))
    if split is not None:
        return (n_views, *split.to_uint8(probe).shape), np.uint8
    return (n_views, *preprocess(probe).shape), np.float32


class EmbedActor:
    """Callable class for ``map_batches``: the encoder is built once per actor, in ``__init__``.

    Each call takes one features part's rows (up to ``write_rows``), runs the encoder over them
    ``chunk`` images at a time and, with ``stats_classes`` set, also returns the part's class
    statistics (:func:`rmd_ray.core.stats.batch_stats`) computed where the features are: on the GPU
    through CuPy (the encoder's output handed over by DLPack, no copy) or with NumPy on CPU, the same
    code either way. They ride in the batch as one serialised cell (``stats`` of row 0, the rest empty)
    plus a ``stats_key`` per row, so the writer can tell a part that arrived whole from one Ray Data
    split (docs/design.md section 7.2).
    """

    def __init__(
        self, spec: EncoderSpec, *, chunk: int | None = None, stats_classes: int | None = None,
        summaries: bool = False,
    ) -> None:

        from rmd_ray.nn.encoders import split_preprocess

        worker_setup()
        self.encoder = spec.build()
        self.split = split_preprocess(self.encoder.preprocess)
        self.device = worker_device()
        self.encoder.model.to(self.device)
        self.node = ray.get_runtime_context().get_node_id()
        self.chunk, self.stats_classes, self.summaries = chunk, stats_classes, summaries

    def _forward(self, images: np.ndarray) -> Any:
        """(m, V, ...) images -> (m * V, dim) float32 features, on the actor's device."""
        import torch

        flat = images.reshape(-1, *images.shape[2:])
        chunk = (self.chunk or len(images)) * images.shape[1]
        outs = []
        for start in range(0, len(flat), chunk):
            x = torch.from_numpy(np.ascontiguousarray(flat[start : start + chunk])).to(self.device, non_blocking=True)
            if self.split is not None:
                x = self.split.normalize(x)
            with torch.inference_mode(), torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
                outs.append(self.encoder.model(x).float())
        return torch.cat(outs)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = batch["error"] == ""
        n, n_views = len(ok), batch["image"].shape[1]
        features = np.zeros((n, n_views * self.encoder.feature_dim), dtype=np.float32)
        on_device = None
        if ok.any():
            on_device = self._forward(batch["image"][ok])
            features[ok] = on_device.cpu().numpy().reshape(int(ok.sum()), -1)
        out_batch = {k: v for k, v in batch.items() if k != "image"}
        out_batch["features"] = features
        out_batch["node"] = np.asarray([self.node] * n, dtype=object)
        if self.summaries:  # a classifier's logits: what evaluation needs per row, so it never reads K logits
            out_batch.update(prediction_summaries(features, batch["label"], ok))
        if self.stats_classes is not None:
            labels = np.repeat(batch["label"][ok].astype(np.int64), n_views)
            stats = part_stats(on_device, labels, n_classes=self.stats_classes, dim=self.encoder.feature_dim)
            key = uuid.uuid4().hex
            out_batch["stats"] = np.asarray([stats_to_bytes(stats, rows=n)] + [b""] * (n - 1), dtype=object)
            out_batch["stats_key"] = np.asarray([key] * n, dtype=object)
        return out_batch


def prediction_summaries(logits: np.ndarray, labels: np.ndarray, ok: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`rmd_ray.core.metrics.row_summaries` of the rows that were predicted and whose label is one of
    the model's K classes; the other rows get NaN (and prediction -1, correct False), which evaluation
    reports as an error, as it does for their logits."""
    from rmd_ray.core.metrics import row_summaries

    n, k = logits.shape
    labels = labels.astype(np.int64)
    valid = ok & (labels >= 0) & (labels < k)
    out = {c: np.full(n, np.nan) for c in SUMMARY_COLUMNS}
    out["prediction"], out["correct"] = np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=bool)
    if valid.any():
        for name, values in row_summaries(logits[valid].astype(np.float64), labels[valid]).items():
            out[name][valid] = values
    return out


def part_stats(features: Any, labels: np.ndarray, *, n_classes: int, dim: int) -> ClassStats:
    """Class statistics of one part's (m * V, dim) features, a torch tensor (or None for no rows).

    On CUDA with CuPy installed the tensor is viewed as a CuPy array through DLPack (zero-copy) and the
    statistics are formed on the device; otherwise NumPy on a host view. Returned on the host.
    """
    if features is None:
        return empty_stats(n_classes, dim)
    xp = module_for_device("auto") if features.is_cuda else np
    if xp is np:
        values = np.from_dlpack(features.detach().cpu())
    else:  # pragma: no cover - GPU only (benchmarks/gpu_check.py)
        values = xp.from_dlpack(features.detach())
    return batch_stats_unchecked(values, xp.asarray(labels), n_classes).to_numpy()


def merged_part_stats(batch: dict[str, np.ndarray]) -> ClassStats | None:
    """The statistics of a writer batch when every row's actor batch arrived whole in it, else None."""
    if "stats" not in batch:
        return None
    keys, counts = np.unique(batch["stats_key"].astype(str), return_counts=True)
    found = {}
    for key, blob in zip(batch["stats_key"], batch["stats"]):
        if len(blob):
            stats, extra = stats_from_bytes(bytes(blob))
            found[str(key)] = (stats, extra["rows"])
    if set(found) != set(keys) or any(found[k][1] != c for k, c in zip(keys, counts)):
        return None  # an actor batch split across writer batches: pass 2 computes this part's statistics
    return merge_all(s for s, _ in found.values())


def feature_column(features: np.ndarray) -> pa.FixedSizeListArray:
    """(N, D) float32 -> fixed_size_list<float32>[D]."""
    features = np.ascontiguousarray(features, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(features.reshape(-1)), features.shape[1])


def write_stage(
    batch: dict[str, np.ndarray], *, features_dir: str, attempt: str, column: str = "features"
) -> dict[str, np.ndarray]:
    """Write one part (model outputs under ``column``); return (shard, rows, digest) per shard and the nodes."""
    ids = [str(i) for i in batch["id"]]
    labels = batch["label"].astype(np.int64)
    table = pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "label": pa.array(labels, pa.int64(), mask=labels == MISSING_LABEL),
            "shard": pa.array(batch["shard"].astype(np.int64)),
            column: feature_column(batch["features"]),
            "error": pa.array([str(e) for e in batch["error"]], pa.string()),
            "stage": pa.array([str(s) for s in batch["stage"]], pa.string()),
        }
    )
    for name in SUMMARY_COLUMNS:
        if name in batch:
            table = table.append_column(name, pa.array(batch[name]))
    # The name hashes the rows, so a retried task (a node lost mid-run) rewrites the same file.
    name = f"part-{attempt}-{hashlib.sha256(chr(0).join(ids).encode()).hexdigest()[:16]}.parquet"
    uri = storage.join(features_dir, name)
    stats = merged_part_stats(batch)
    if stats is not None:  # before the part: a part is never seen with a sidecar of other rows
        storage.write_bytes_atomic(stats_sidecar(uri), stats_to_bytes(stats))
    storage.write_parquet_atomic(table, uri)
    shards, first, counts = np.unique(batch["shard"], return_index=True, return_counts=True)
    nodes = ",".join(sorted({str(n) for n in batch["node"]}))
    return {
        "shard": shards.astype(np.int64),
        "rows": counts.astype(np.int64),
        "shard_rows": batch["shard_rows"][first].astype(np.int64),
        "digest": np.asarray([batch["shard_digest"][i] for i in first], dtype=object),
        "nodes": np.asarray([nodes] * len(shards), dtype=object),
    }


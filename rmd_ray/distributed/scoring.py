"""Distributed difficulty scoring on Ray.

Data flow (one id column travels end to end; Ray Data does not preserve order, DESIGN.md section 6)::

    reader table --validate_labels--> good rows + label errors
    good rows --Ray Data: decode/augment (CPU tasks)--> embed (actor pool, GPU when present)--> features
    features (materialised blocks) --per-block ClassStats (tasks; CuPy on GPU)--> merge (Chan) --> scorer
    features blocks --score (tasks)--> md, md0 per (id, view) --mean over views--> rmd --> weights

Every input row ends either in the scores table or in the errors table, never in neither:
``rows_in == rows_scored + rows_in_errors`` is checked before anything is written.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from rmd_ray import __version__
from rmd_ray.core import CovarianceConfig, DifficultyScorer, WeightConfig, difficulty_weights
from rmd_ray.core._xp import module_for_device
from rmd_ray.core.stats import _batch_stats, merge_all
from rmd_ray.data.io import read_metadata, write_parquet_atomic
from rmd_ray.data.readers import table_classes, validate_labels
from rmd_ray.distributed.runtime import physical_cpus, worker_setup
from rmd_ray.nn.encoders import DEFAULT_ENCODER, Encoder, build_encoder

log = logging.getLogger("rmd_ray.scoring")

ERROR_SCHEMA = pa.schema([("id", pa.string()), ("label", pa.int64()), ("stage", pa.string()), ("reason", pa.string())])


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
        Encoder actors; default one per GPU when the cluster has GPUs, else one per physical CPU.
    gpus_per_actor : float, optional
        Default 1 when the cluster has GPUs, else 0.
    n_views : int
        1: each image once, unaugmented. V > 1: V augmented views per image (random resized crop +
        flip, seeded by (id, view)); the Gaussians are fitted on all views and scores averaged.
    blocks : int, optional
        Input blocks; default 4 per actor so every actor stays busy.
    seed : int
        Base seed of the view augmentations.
    """

    batch_size: int = 64
    num_actors: int | None = None
    gpus_per_actor: float | None = None
    n_views: int = 1
    blocks: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("batch_size", "n_views"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if self.num_actors is not None and (not isinstance(self.num_actors, int) or self.num_actors < 1):
            raise ValueError(f"num_actors must be an int >= 1 or None, got {self.num_actors!r}")
        if self.blocks is not None and (not isinstance(self.blocks, int) or self.blocks < 1):
            raise ValueError(f"blocks must be an int >= 1 or None, got {self.blocks!r}")
        if self.gpus_per_actor is not None and not (0 <= self.gpus_per_actor):
            raise ValueError(f"gpus_per_actor must be >= 0, got {self.gpus_per_actor!r}")


@dataclass(frozen=True)
class ScoringResult:
    """Where the outputs are and how every input row was accounted for."""

    scores_path: Path
    errors_path: Path
    features_path: Path | None
    scorer_path: Path
    rows_in: int
    rows_scored: int
    rows_error: int
    seconds: dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------------------------- Ray Data stages
@functools.lru_cache(maxsize=4)
def _preprocess_for(spec: EncoderSpec) -> Any:
    # Cached per worker process (Ray reuses them): the encoder is built once for its preprocessing,
    # and only the transform is kept, so the model's memory is released.
    return spec.build().preprocess


def _decode_stage(batch: pa.Table, *, spec: EncoderSpec, n_views: int, seed: int) -> dict[str, np.ndarray]:
    """CPU stage: decode (+ augment) and preprocess; undecodable rows come out flagged, never dropped."""
    from rmd_ray.data.decode import decode_batch

    worker_setup()
    preprocess = _preprocess_for(spec)
    labels = dict(zip(batch.column("id").to_pylist(), batch.column("label").to_pylist()))
    ids, views, images, errors = [], [], [], []
    failed: list[tuple[str, int, str]] = []
    for view in range(n_views):
        tensor, ok_ids, bad = decode_batch(batch, preprocess=preprocess, view=None if n_views == 1 else view, seed=seed)
        images.append(tensor.numpy())
        ids += ok_ids
        views += [view] * len(ok_ids)
        errors += [""] * len(ok_ids)
        if view == 0:
            failed = bad
    shape = images[0].shape[1:]
    for image_id, _, reason in failed:
        ids.append(image_id)
        views.append(0)
        errors.append(reason)
    pad = np.zeros((len(failed), *shape), dtype=np.float32)
    return {
        "id": np.asarray(ids, dtype=object),
        "view": np.asarray(views, dtype=np.int32),
        "label": np.asarray([labels[i] for i in ids], dtype=np.int64),
        "image": np.concatenate(images + [pad]).astype(np.float32, copy=False),
        "error": np.asarray(errors, dtype=object),
    }


class EmbedActor:
    """Callable class for ``map_batches``: the encoder is built once per actor, in ``__init__``."""

    def __init__(self, spec: EncoderSpec) -> None:
        import torch

        worker_setup()
        self.encoder = spec.build()
        self.device = torch.device("cuda" if torch.cuda.is_available() and ray.get_gpu_ids() else "cpu")
        self.encoder.model.to(self.device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        ok = batch["error"] == ""
        features = np.zeros((len(ok), self.encoder.feature_dim), dtype=np.float32)
        if ok.any():
            images = torch.from_numpy(np.ascontiguousarray(batch["image"][ok])).to(self.device, non_blocking=True)
            with torch.inference_mode(), torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
                out = self.encoder.model(images)
            features[ok] = out.float().cpu().numpy()
        return {
            "id": batch["id"],
            "view": batch["view"],
            "label": batch["label"],
            "features": features,
            "error": batch["error"],
        }


def _split_blocks(table: pa.Table, blocks: int) -> list[pa.Table]:
    blocks = max(1, min(blocks, table.num_rows))
    bounds = np.linspace(0, table.num_rows, blocks + 1).astype(int)
    return [table.slice(a, b - a) for a, b in zip(bounds[:-1], bounds[1:])]


def error_table(rows: pa.Table, *, stage: str, reason_column: str) -> pa.Table:
    """Rows that could not be scored, in the errors-table schema (id, label, stage, reason)."""
    return pa.table(
        {
            "id": rows.column("id"),
            "label": rows.column("label"),
            "stage": pa.array([stage] * rows.num_rows, pa.string()),
            "reason": rows.column(reason_column),
        },
        schema=ERROR_SCHEMA,
    )


def extract_features(
    table: pa.Table, *, encoder: EncoderSpec = EncoderSpec(), config: ExtractConfig = ExtractConfig()
) -> tuple[pa.Table, pa.Table]:
    """Embed every row of a reader table with a Ray Data pipeline.

    Parameters
    ----------
    table : pyarrow.Table
        A reader table (``id``, ``label`` and an image column) whose labels are already valid.

    Returns
    -------
    features : pyarrow.Table
        ``id`` string, ``view`` int32, ``label`` int64, ``features`` fixed_size_list<float32>[D];
        one row per (decodable image, view).
    errors : pyarrow.Table
        ``id``, ``label``, ``stage`` ("decode"), ``reason``: one row per image that did not decode.
    """
    if table.num_rows == 0:
        raise ValueError("no rows to embed: the source is empty (or every label was invalid, see the errors table)")
    resources = ray.cluster_resources()
    has_gpu = resources.get("GPU", 0) > 0
    gpus = config.gpus_per_actor if config.gpus_per_actor is not None else (1.0 if has_gpu else 0.0)
    actors = config.num_actors or (int(resources["GPU"] // max(gpus, 1e-9)) if gpus else physical_cpus())
    actors = max(1, actors)
    blocks = config.blocks or 4 * actors
    image_columns = [c for c in ("image", "path", "pixels", "shape") if c in table.column_names]
    slim = table.select(["id", "label", *image_columns])
    ds = ray.data.from_arrow(_split_blocks(slim, blocks))
    ds = ds.map_batches(
        _decode_stage,
        fn_kwargs={"spec": encoder, "n_views": config.n_views, "seed": config.seed},
        batch_size=config.batch_size,
        batch_format="pyarrow",
        num_cpus=0.5,  # light stage: leave room for the actors on small machines
    )
    ds = ds.map_batches(
        EmbedActor,
        fn_constructor_kwargs={"spec": encoder},
        compute=ray.data.ActorPoolStrategy(size=actors),
        batch_size=config.batch_size,
        batch_format="numpy",
        num_cpus=0 if gpus else 1,
        num_gpus=gpus,
    )
    parts = [ray.get(ref) for ref in ds.materialize().to_arrow_refs()]
    merged = pa.concat_tables([_canonical_features(p) for p in parts if p.num_rows])
    is_error = pc.not_equal(merged.column("error"), "")
    errors = error_table(merged.filter(is_error), stage="decode", reason_column="error")
    features = merged.filter(pc.invert(is_error)).drop_columns(["error"])
    return features.sort_by([("id", "ascending"), ("view", "ascending")]), errors


def _canonical_features(part: pa.Table) -> pa.Table:
    """Ray's tensor extension column -> a plain fixed_size_list<float32> (Parquet-friendly)."""
    feats = _tensor_column_to_numpy(part.column("features"))
    return pa.table(
        {
            "id": pa.array(part.column("id").to_pylist(), pa.string()),
            "view": pa.array(part.column("view").to_numpy(), pa.int32()),
            "label": pa.array(part.column("label").to_numpy(), pa.int64()),
            "features": feature_column(feats),
            "error": pa.array(part.column("error").to_pylist(), pa.string()),
        }
    )


def _tensor_column_to_numpy(column: pa.ChunkedArray) -> np.ndarray:
    # Ray stores (B, D) numpy outputs as its ArrowTensorArray extension type; its to_numpy() is the
    # supported way back to an ndarray.
    chunks = [chunk.to_numpy() for chunk in column.chunks]
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)


def feature_column(features: np.ndarray) -> pa.FixedSizeListArray:
    """(N, D) float32 -> fixed_size_list<float32>[D]."""
    features = np.ascontiguousarray(features, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(features.reshape(-1)), features.shape[1])


def feature_matrix(table: pa.Table) -> np.ndarray:
    """The ``features`` column of a features table as an (N, D) float32 array (zero-copy when possible)."""
    column = table.column("features").combine_chunks()
    dim = column.type.list_size
    return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)


# ------------------------------------------------------------------------------- stats and scoring tasks
@ray.remote
def _block_stats(block: pa.Table, n_classes: int) -> Any:
    xp = module_for_device("auto")  # CuPy when this task was given a GPU, NumPy otherwise
    # float64 here: the encoder dominates the run time, so the scatter GEMM can afford full precision
    # and the result does not depend on how rows fall into blocks beyond float64 rounding.
    features = xp.asarray(feature_matrix(block), dtype=xp.float64)
    labels = xp.asarray(block.column("label").to_numpy())
    return _batch_stats(features, labels, n_classes).to_numpy()


@ray.remote
def _block_fourth_moments(block: pa.Table, scorer: DifficultyScorer) -> tuple[float, float]:
    return scorer.fourth_moments(feature_matrix(block), block.column("label").to_numpy())


@ray.remote
def _block_scores(block: pa.Table, scorer: DifficultyScorer) -> pa.Table:
    features = feature_matrix(block)
    labels = block.column("label").to_numpy()
    md, md0 = scorer.score_parts(features, labels)
    distances = scorer.class_distances(features)
    nearest = distances.argmin(axis=1)
    return pa.table(
        {
            "id": block.column("id"),
            "view": block.column("view"),
            "label": block.column("label"),
            "md": md,
            "md0": md0,
            "kmeans": scorer.kmeans_distance(features, labels),
            "nearest_class": nearest.astype(np.int64),
            "nearest_md": distances[np.arange(len(nearest)), nearest],
        }
    )


def fit_and_score(
    features: pa.Table,
    *,
    n_classes: int,
    covariance: CovarianceConfig = CovarianceConfig(),
    blocks: int = 4,
    shuffle_blocks: int | None = None,
) -> tuple[DifficultyScorer, pa.Table]:
    """Fit the Gaussians from per-block statistics merged across blocks, then score every row.

    Parameters
    ----------
    features : pyarrow.Table
        A features table (see :func:`extract_features`).
    blocks : int
        Blocks the rows are split into; each block's statistics are computed by its own Ray task.
    shuffle_blocks : int, optional
        Seed to shuffle the block order before merging (results must not depend on it).

    Returns
    -------
    scorer : DifficultyScorer
    per_row : pyarrow.Table
        ``id, view, label, md, md0, kmeans, nearest_class, nearest_md`` for every row, sorted by (id, view).
    """
    parts = _split_blocks(features, blocks)
    if shuffle_blocks is not None:
        random.Random(shuffle_blocks).shuffle(parts)
    refs = [ray.put(p) for p in parts]
    stats = merge_all(ray.get([_block_stats.remote(r, n_classes) for r in refs]))
    scorer = DifficultyScorer(n_classes=n_classes, covariance=covariance).merge(stats)
    fourth = None
    if covariance.shrinkage == "ledoit_wolf":
        scorer_ref = ray.put(scorer)
        fourth = tuple(np.sum(ray.get([_block_fourth_moments.remote(r, scorer_ref) for r in refs]), axis=0))
    scorer.finalize(fourth_moments=fourth)
    return scorer, _score_blocks(refs, scorer)


def _score_blocks(refs: list[Any], scorer: DifficultyScorer) -> pa.Table:
    scorer_ref = ray.put(scorer)
    scored = pa.concat_tables(ray.get([_block_scores.remote(r, scorer_ref) for r in refs]))
    return scored.sort_by([("id", "ascending"), ("view", "ascending")])


def score_with(features: pa.Table, scorer: DifficultyScorer, *, blocks: int = 4) -> pa.Table:
    """Score every row with an already-fitted scorer (e.g. a validation set, for the proxy test).

    Same output as :func:`fit_and_score`'s ``per_row``; the scorer's Gaussians are not refitted.
    """
    return _score_blocks([ray.put(p) for p in _split_blocks(features, blocks)], scorer)


def _check_fitted_scorer(scorer: DifficultyScorer, *, encoder: str, resolution: int, classes: list[str]) -> None:
    """A scorer fitted on other features or classes would give meaningless distances: compare its provenance."""
    meta = getattr(scorer, "provenance_", None) or {}
    now = {"encoder": encoder, "resolution": resolution, "classes": classes}
    differ = [f"{k}: scorer {meta[k]!r} vs now {v!r}" for k, v in now.items() if k in meta and meta[k] != v]
    if differ:
        raise ValueError(
            f"the scorer was fitted on other features ({'; '.join(differ)}); score with the encoder and "
            "image size it was fitted with"
        )


def aggregate_views(per_row: pa.Table, *, n_views: int, weights: WeightConfig) -> pa.Table:
    """One row per id: md, md0, rmd averaged over views (per-view lists when n_views > 1) and the weight."""
    per_row = per_row.append_column("rmd", pc.subtract(per_row.column("md"), per_row.column("md0")))
    if n_views > 1:
        grouped = per_row.group_by(["id", "label"], use_threads=False).aggregate(
            [(c, "mean") for c in ("md", "md0", "rmd", "kmeans")]
            + [(c, "list") for c in ("md", "rmd")]
            + [("nearest_class", "min"), ("view", "count")]
        )
        table = pa.table(
            {
                "id": grouped["id"],
                "label": grouped["label"],
                "md": grouped["md_mean"],
                "md0": grouped["md0_mean"],
                "rmd": grouped["rmd_mean"],
                "kmeans": grouped["kmeans_mean"],
                "nearest_class": grouped["nearest_class_min"],
                "md_views": grouped["md_list"],
                "rmd_views": grouped["rmd_list"],
            }
        ).sort_by("id")
    else:
        table = per_row.select(["id", "label", "md", "md0", "rmd", "kmeans", "nearest_class"])
    rmd = table.column("rmd").to_numpy()
    return table.append_column("weight", pa.array(difficulty_weights(rmd, config=weights)))


# ------------------------------------------------------------------------------------------- the job
def dataset_fingerprint(table: pa.Table) -> str:
    """sha256 over the (id, label) pairs sorted by id: the same data gives the same fingerprint."""
    ordered = table.select(["id", "label"]).sort_by("id")
    digest = hashlib.sha256()
    for batch in ordered.to_batches(max_chunksize=65536):
        digest.update("\n".join(batch.column(0).to_pylist()).encode())
        digest.update(batch.column(1).to_numpy(zero_copy_only=False).astype(np.int64).tobytes())
    return digest.hexdigest()[:16]


def run_scoring(
    table: pa.Table,
    *,
    output_dir: str | Path,
    encoder: EncoderSpec = EncoderSpec(),
    extract: ExtractConfig = ExtractConfig(),
    covariance: CovarianceConfig = CovarianceConfig(),
    weights: WeightConfig = WeightConfig(),
    n_classes: int | None = None,
    features_cache: str | Path | None = None,
    score_blocks: int | None = None,
    scorer: DifficultyScorer | str | Path | None = None,
) -> ScoringResult:
    """Score every row of a reader table and write ``scores.parquet``, ``errors.parquet``,
    ``features.parquet`` (the cache) and ``scorer.npz`` to ``output_dir``.

    With ``features_cache`` (a ``features.parquet`` from an earlier run on the same data), extraction
    is skipped: rescoring with another T, normalisation or shrinkage does not re-embed.

    With ``scorer`` (a fitted :class:`DifficultyScorer` or the ``scorer.npz`` of a training-set run),
    nothing is fitted: the rows are scored under the training set's Gaussians, which is what the
    difficulty proxy test needs for a validation set. ``covariance`` is then ignored (the scorer's
    own is used) and its encoder and resolution must match ``encoder``. The weights are still
    normalised over the rows scored here.
    """
    output_dir = Path(output_dir)
    if scorer is not None and not isinstance(scorer, DifficultyScorer):
        path = Path(scorer)
        if not path.is_file():
            raise ValueError(f"scorer file {str(path)!r} not found; pass the scorer.npz of a `rmd-ray score` run")
        scorer = DifficultyScorer.load(path)
    # Build the encoder once on the driver: a bad name or checkpoint fails here, before any Ray stage,
    # and the provenance records the resolution actually used.
    built = encoder.build()
    resolution, feature_dim = built.image_size, built.feature_dim
    del built
    classes = table_classes(table)
    if scorer is not None:
        _check_fitted_scorer(scorer, encoder=encoder.name, resolution=resolution, classes=classes)
        covariance = scorer.covariance
        n_classes = scorer.n_classes
    n_classes = n_classes or len(classes)
    timings: dict[str, float] = {}
    fingerprint = dataset_fingerprint(table)
    start = time.perf_counter()
    good, label_errors = validate_labels(table, n_classes=n_classes)
    label_errors = error_table(label_errors, stage="label", reason_column="reason")
    if features_cache is not None:
        features, decode_errors = _read_cache(
            Path(features_cache),
            fingerprint=fingerprint,
            encoder=encoder.name,
            resolution=resolution,
            n_views=extract.n_views,
        )
        log.info("read %d cached feature rows from %s", features.num_rows, features_cache)
    else:
        log.info("embedding %d images with %s (n_views=%d)", good.num_rows, encoder.name, extract.n_views)
        features, decode_errors = extract_features(good, encoder=encoder, config=extract)
    timings["extract"] = time.perf_counter() - start
    errors = pa.concat_tables([label_errors, decode_errors])

    start = time.perf_counter()
    actors = extract.num_actors or physical_cpus()
    blocks = score_blocks or max(2, actors)
    fitted_on = None
    if scorer is None:
        scorer, per_row = fit_and_score(features, n_classes=n_classes, covariance=covariance, blocks=blocks)
    else:
        per_row = score_with(features, scorer, blocks=blocks)
        fitted_on = (getattr(scorer, "provenance_", None) or {}).get("dataset_fingerprint", "unknown")
    scores = aggregate_views(per_row, n_views=extract.n_views, weights=weights)
    timings["fit_and_score"] = time.perf_counter() - start

    rows_in, rows_scored, rows_error = table.num_rows, scores.num_rows, errors.num_rows
    if rows_in != rows_scored + rows_error:  # the accounting invariant: nothing is lost without a record
        raise RuntimeError(f"row accounting broken: {rows_in} in, {rows_scored} scored, {rows_error} errors")

    metadata = {
        "encoder": encoder.name,
        "checkpoint": encoder.checkpoint,
        "resolution": resolution,
        "feature_dim": feature_dim,
        "n_views": extract.n_views,
        "temperature": weights.temperature,
        "c": weights.c,
        "normalization": weights.normalization,
        "shrinkage": covariance.shrinkage,
        "shrinkage_coefficients": scorer.shrinkage_,
        "n_classes": n_classes,
        "classes": classes,
        "dataset_fingerprint": fingerprint,
        "scorer_fitted_on": fitted_on or fingerprint,  # another dataset's fingerprint for validation scores
        "source": (table.schema.metadata or {}).get(b"source", b"").decode(),
        "package_version": __version__,
        "rows_in": rows_in,
        "rows_scored": rows_scored,
        "rows_error": rows_error,
        "rmd_range": [float(pc.min(scores["rmd"]).as_py()), float(pc.max(scores["rmd"]).as_py())],
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    scores_path = write_parquet_atomic(scores, output_dir / "scores.parquet", metadata=metadata)
    errors_path = write_parquet_atomic(errors, output_dir / "errors.parquet", metadata=metadata)
    features_path = None
    if features_cache is None:
        cache_meta = {k: metadata[k] for k in ("encoder", "checkpoint", "resolution", "n_views", "dataset_fingerprint")}
        cache_meta["decode_errors"] = decode_errors.to_pylist()
        features_path = write_parquet_atomic(features, output_dir / "features.parquet", metadata=cache_meta)
    provenance_keys = ("encoder", "resolution", "n_views", "dataset_fingerprint", "classes")
    provenance = {k: metadata[k] for k in provenance_keys}
    if fitted_on is not None:  # a given scorer keeps the record of the data it was fitted on
        provenance.update(
            {k: v for k, v in (getattr(scorer, "provenance_", None) or {}).items() if k in provenance_keys}
        )
    scorer_path = scorer.save(output_dir / "scorer.npz", provenance=provenance)
    return ScoringResult(
        scores_path, errors_path, features_path, scorer_path, rows_in, rows_scored, rows_error, timings
    )


def _read_cache(
    path: Path, *, fingerprint: str, encoder: str, resolution: int, n_views: int
) -> tuple[pa.Table, pa.Table]:
    import pyarrow.parquet as pq

    if not path.is_file():
        raise ValueError(f"features cache {str(path)!r} not found; run without --features-cache once to create it")
    table = pq.read_table(path)
    meta = read_metadata(path)
    expected = {"dataset_fingerprint": fingerprint, "encoder": encoder, "n_views": n_views, "resolution": resolution}
    mismatched = {k: (meta.get(k), v) for k, v in expected.items() if meta.get(k) != v}
    if mismatched:
        detail = ", ".join(f"{k}: cache {a!r} vs now {b!r}" for k, (a, b) in mismatched.items())
        raise ValueError(
            f"features cache {str(path)!r} was made for other inputs ({detail}); drop --features-cache to re-embed"
        )
    errors = pa.Table.from_pylist(meta.get("decode_errors", []), schema=ERROR_SCHEMA)
    return table.replace_schema_metadata(None), errors


__all__ = [
    "EmbedActor",
    "EncoderSpec",
    "ExtractConfig",
    "ScoringResult",
    "aggregate_views",
    "dataset_fingerprint",
    "extract_features",
    "feature_column",
    "feature_matrix",
    "fit_and_score",
    "run_scoring",
    "score_with",
]

"""Shared by the scoring tests: small real-format Parquet sources, and what an uninterrupted scoring run
gives, computed in the test's own process (the encoder run here on the same images, the core fitted here
on the written features), so a test compares a distributed run against the layers below it."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from rmd_ray.core import CovarianceConfig, DifficultyScorer
from rmd_ray.data.decode import decode_image
from rmd_ray.data.readers import read_parquet_images
from rmd_ray.io.parts import read_table
from rmd_ray.nn.encoders import build_encoder


def jpeg(rng: np.random.Generator, label: int, size: int = 20) -> bytes:
    """A random JPEG whose channel ``label % 3`` is set by the label, so the class Gaussians differ."""
    pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    pixels[..., label % 3] = (200 + 53 * label) % 256
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def parquet_dir(root: Path, *, files=3, rows=40, row_group=10, classes=("a", "b", "c", "d"), seed=0) -> Path:
    """``files`` Parquet files of ``rows`` rows each (id, label, image, and an ``extra`` column no reader
    should project), ids ``f<file>/<row>``, class names in the schema metadata."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    meta = {b"classes": str(list(classes)).replace("'", '"').encode()}
    for f in range(files):
        labels = rng.integers(0, len(classes), rows)
        table = pa.table({
            "id": [f"f{f}/{i:03d}" for i in range(rows)],
            "label": pa.array(labels, pa.int16()),
            "image": [jpeg(rng, int(k)) for k in labels],
            "extra": np.arange(rows),
        }).replace_schema_metadata(meta)
        pq.write_table(table, root / f"train-{f}.parquet", row_group_size=row_group)
    return root


def reference_scores(root: Path, features_path, *, encoder: str, image_size: int, covariance: CovarianceConfig,
                     n_classes: int = 4) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """(source rows, md, rmd) of an uninterrupted run, in source row order, after asserting that the
    features written at ``features_path`` hold every source row once (none lost, none doubled) and equal
    the encoder run in this process on the same image (float32: the batch composition moves the last
    bits, hence rtol 1e-4). md and rmd are the core's, fitted here on the written features."""
    import torch

    rows = read_parquet_images(root).to_pylist()
    written = read_table(features_path, columns=["id", "label", "features"]).to_pylist()
    ids = [r["id"] for r in written]
    assert len(ids) == len(set(ids)) and sorted(ids) == sorted(r["id"] for r in rows)
    by_id = {r["id"]: r for r in written}
    feats = np.asarray([by_id[r["id"]]["features"] for r in rows], dtype=np.float64)
    model = build_encoder(encoder, image_size=image_size)
    with torch.inference_mode():
        here = model.model(torch.stack([model.preprocess(decode_image(r)) for r in rows])).numpy()
    np.testing.assert_allclose(feats, here, rtol=1e-4, atol=1e-5)
    labels = np.asarray([r["label"] for r in rows])
    md, rmd = DifficultyScorer(n_classes=n_classes, covariance=covariance).fit(feats, labels).score(feats, labels)
    return rows, md, rmd

"""The read + decode stage of batch inference, run in-process: it learns its preprocessing without building
the model, and decodes large JPEGs at reduced size when asked."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from rmd_ray.data.decode import decode_image
from rmd_ray.distributed.inference.config import EncoderSpec, ExtractConfig
from rmd_ray.distributed.inference.stages import read_decode_stage
from rmd_ray.distributed.prediction.predict import ClassifierSpec
from rmd_ray.distributed.sources.plan import open_source, read_shard
from rmd_ray.nn.encoders import encoder_preprocessing


def _photo(w: int, h: int, seed: int) -> Image.Image:
    yy, xx = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    base = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 127 // (w + h)], axis=-1)
    noise = rng.integers(0, 24, (h, w, 3))
    return Image.fromarray((base + noise).clip(0, 255).astype(np.uint8))


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "train"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    _photo(1200, 900, 0).save(root / "a" / "big.JPEG", quality=90)  # shorter side 900 >= 2 * 256
    _photo(300, 200, 1).save(root / "a" / "small.JPEG", quality=90)
    _photo(700, 600, 2).save(root / "b" / "big.png")  # large, but not a JPEG
    return root


def _decode(root, spec, *, draft: bool, n_views: int = 1):
    source = open_source(f"folder:{root}")
    assert len(source.shards) == 1
    out = list(read_decode_stage(pa.table({"shard": [0]}), plan={0: source.shards[0]}, classes=source.classes,
                                 spec=spec, n_views=n_views, seed=0, batch_size=64, draft=draft))
    assert len(out) == 1 and list(out[0]["error"]) == ["", "", ""]
    return source, out[0]


def _refuse(*args, **kwargs):
    raise AssertionError("the decode stage built the model")


def test_the_decode_stage_never_builds_the_encoder_and_drafts_only_large_jpegs(folder, monkeypatch):
    monkeypatch.setattr(EncoderSpec, "build", _refuse)
    spec = EncoderSpec("efficientnet_lite0")
    source, full = _decode(folder, spec, draft=False)
    _, drafted = _decode(folder, spec, draft=True)
    assert list(full["id"]) == ["a/big.JPEG", "a/small.JPEG", "b/big.png"]
    assert full["image"].shape == drafted["image"].shape == (3, 1, 224, 224, 3) and full["image"].dtype == np.uint8
    # without draft: the registry's geometry on the full-size decode, pixel for pixel
    geometry = encoder_preprocessing("efficientnet_lite0").geometry()
    rows = read_shard(source.shards[0], classes=source.classes).to_pylist()
    for i, row in enumerate(rows):
        np.testing.assert_array_equal(full["image"][i, 0], geometry(decode_image(row)))
    # with draft: only the large JPEG (decoded at 1/2: 600x450, still >= the 256 the resize needs) moves,
    # and only a little (the DCT-domain reduction stands in for the first half of the downscale)
    assert decode_image(rows[0], min_side=geometry.min_side).size == (600, 450)
    diff = np.abs(full["image"].astype(int) - drafted["image"].astype(int))
    assert diff[1:].max() == 0
    assert 0 < diff[0].mean() < 2.0


def test_augmented_views_decode_at_full_size(folder, monkeypatch):
    monkeypatch.setattr(EncoderSpec, "build", _refuse)
    spec = EncoderSpec("tiny_cnn", image_size=16)
    _, a = _decode(folder, spec, draft=True, n_views=2)
    _, b = _decode(folder, spec, draft=False, n_views=2)
    assert a["image"].shape == (3, 2, 16, 16, 3)
    np.testing.assert_array_equal(a["image"], b["image"])


def test_a_classifier_decode_stage_never_loads_the_checkpoint(folder, monkeypatch):
    monkeypatch.setattr(ClassifierSpec, "build", _refuse)
    spec = ClassifierSpec(checkpoint=str(folder / "no-such-model.pt"), preset="imagenet", image_size=64,
                          mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    _, out = _decode(folder, spec, draft=True)
    assert out["image"].shape == (3, 1, 64, 64, 3) and out["image"].dtype == np.uint8


def test_draft_decode_is_validated_and_in_the_run_signature():
    from rmd_ray.distributed.inference.resume import run_signature

    with pytest.raises(TypeError, match="draft_decode must be True or False"):
        ExtractConfig(draft_decode=1)

    class Source:
        classes = ("a",)

        def plan_fingerprint(self):
            return "p"

    spec = EncoderSpec("tiny_cnn")
    assert run_signature(Source(), spec, ExtractConfig(), 32)["draft_decode"] is True
    assert run_signature(Source(), spec, ExtractConfig(draft_decode=False), 32)["draft_decode"] is False
    assert run_signature(Source(), spec, ExtractConfig(n_views=2), 32)["draft_decode"] is False


def test_png_bytes_are_never_drafted():
    buf = io.BytesIO()
    _photo(700, 600, 3).save(buf, format="PNG")
    assert decode_image({"id": "x", "label": 0, "image": buf.getvalue()}, min_side=100).size == (700, 600)

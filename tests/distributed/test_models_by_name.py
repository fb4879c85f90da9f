"""Any classifier by name: ``timm:<name>`` and ``torchvision:<name>`` train through the same Ray path as the
built-in ResNets (random init or ``--model-weights``, width 1, no CIFAR stem), and their checkpoints rebuild by
name."""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
import pytest
import torch

from rmd_ray.data.readers import from_arrays
from rmd_ray.distributed.training import TrainConfig
from rmd_ray.io.parts import read_table, read_table_metadata
from rmd_ray.nn.engine import model_from_checkpoint
from rmd_ray.nn.models import build_model, check_model_name


def _colours(n: int, seed: int):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    colours = np.array([[220, 20, 20], [20, 220, 20], [20, 20, 220]])
    images = np.clip(rng.integers(0, 60, (n, 16, 16, 3)) + colours[labels][:, None, None, :], 0, 255)
    return from_arrays(images.astype(np.uint8), labels, ids=[f"c{seed}_{i}" for i in range(n)],
                       classes=["r", "g", "b"])


@pytest.mark.parametrize("name", ["timm:resnet18", "torchvision:resnet18"])
def test_an_external_model_is_built_as_its_library_defines_it(name):
    model = build_model(name, num_classes=7, cifar_stem=True)
    assert model.rmd_spec.name == name and model.rmd_spec.cifar_stem is False and model.rmd_spec.width == 1.0
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 7)
    reference = sum(p.numel() for p in build_model("resnet18", num_classes=7, cifar_stem=False).parameters())
    assert sum(p.numel() for p in model.parameters()) == reference  # the same ResNet-18, any library


def test_unknown_names_and_widths_say_what_to_use():
    with pytest.raises(ValueError, match=r"timm has no model 'resnet1000' \(closest: "):
        check_model_name("timm:resnet1000")
    with pytest.raises(ValueError, match=r"unknown library 'keras'; use timm:<name> or torchvision:<name>"):
        check_model_name("keras:resnet50")
    with pytest.raises(ValueError, match=r"unknown model 'resnet19'; valid names: .*resnet18"):
        check_model_name("resnet19")
    with pytest.raises(ValueError, match=r"width 0.125 applies to the built-in models.*--width 1"):
        TrainConfig(model="timm:resnet18", width=0.125)


def test_the_cli_builds_external_models_at_width_one():
    from rmd_ray.cli.main import build_parser
    from rmd_ray.cli.train import train_config

    args = build_parser().parse_args(["train", "--train-source", "fashion-mnist:train", "--model", "timm:resnet18",
                                      "--output", "out"])
    assert train_config(args, loss="ce", hparams={}).width == 1.0
    args = build_parser().parse_args(["train", "--train-source", "fashion-mnist:train", "--output", "out"])
    assert train_config(args, loss="ce", hparams={}).width == args.default_width
    assert isinstance(args, argparse.Namespace)


def _parquet(path, n: int, seed: int) -> str:
    """``parquet:<path>``: :func:`_colours` as PNG rows with their class list, for the CLI."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    table = _colours(n, seed)
    pixels = table.column("pixels").to_pylist()
    pngs = []
    for row in pixels:
        buffer = io.BytesIO()
        Image.fromarray(np.frombuffer(row, np.uint8).reshape(16, 16, 3)).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    out = pa.table({"id": table.column("id"), "label": table.column("label").cast(pa.int64()), "image": pngs})
    pq.write_table(out.replace_schema_metadata({b"classes": b'["r", "g", "b"]'}), path, row_group_size=32)
    return f"parquet:{path}"


def test_the_driver_check_fits_the_head_and_refuses_other_architectures(tmp_path, caplog):
    from rmd_ray.distributed.training.inputs import check_initial_weights

    torch.manual_seed(1)
    state = build_model("timm:resnet18", num_classes=10).state_dict()
    torch.save(state, tmp_path / "r18.pth")
    config = TrainConfig(loss="ce", model="timm:resnet18", model_weights=tmp_path / "r18.pth")
    assert config.model_weights == str(tmp_path / "r18.pth")
    with caplog.at_level("WARNING", logger="rmd_ray.training"):
        fitted = check_initial_weights(config, 3)
    assert fitted.keys() == {k for k in state if not k.startswith("fc.")}
    assert "classifier head fc.weight (10x512 -> 3x512), fc.bias (10 -> 3) not loaded" in caplog.text
    assert check_initial_weights(TrainConfig(loss="ce"), 3) is None
    other = replace(config, model="torchvision:mobilenet_v3_small")
    with pytest.raises(ValueError, match=r"does not fit model 'torchvision:mobilenet_v3_small': keys missing"):
        check_initial_weights(other, 3)
    with pytest.raises(ValueError, match=r"--model-weights '.*absent\.pth' not found: pass a state dict file"):
        check_initial_weights(replace(config, model_weights=str(tmp_path / "absent.pth")), 3)
    with pytest.raises(ValueError, match=r"TrainConfig.model_weights must be None or the path / URI of a state dict"):
        TrainConfig(loss="ce", model_weights="")


def test_the_cli_refuses_missing_and_pickled_weights_before_ray_starts(tmp_path, capsys):
    from rmd_ray.cli import main

    head = ["train", "--loss", "ce", "--model", "timm:resnet18", "--output", str(tmp_path / "out")]
    assert main([*head, "--model-weights", str(tmp_path / "absent.pth")]) == 2
    err = capsys.readouterr().err
    assert err == (f"rmd-ray train: error: --model-weights {str(tmp_path / 'absent.pth')!r} not found: pass a state "
                   "dict file (.pt, .pth or .safetensors)\n")
    torch.save(build_model("timm:resnet18", num_classes=3), tmp_path / "whole.pt")  # a pickled module
    assert main([*head, "--model-weights", str(tmp_path / "whole.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rmd-ray train: error: checkpoint ") and err.count("\n") == 1
    assert "holds pickled Python objects (Unsupported global: GLOBAL timm.models.resnet.ResNet)" in err


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_timm_model_trains_from_local_weights_through_the_cli(ray_local, tmp_path, capsys):
    from rmd_ray.cli import main

    torch.manual_seed(123)  # not the run's seed: the run's own random init differs from these weights
    saved = build_model("timm:resnet18", num_classes=1000).state_dict()  # an ImageNet-shaped head
    torch.save(saved, tmp_path / "r18.pth")
    out = tmp_path / "out"
    assert main(["train", "--model", "timm:resnet18", "--model-weights", str(tmp_path / "r18.pth"),
                 "--train-source", _parquet(tmp_path / "train.parquet", 96, 0),
                 "--val-source", _parquet(tmp_path / "val.parquet", 48, 1),
                 "--test-source", _parquet(tmp_path / "test.parquet", 48, 2), "--loss", "ce", "--epochs", "1",
                 "--train-batch-size", "32", "--cpus-per-worker", "0.5", "--run-name", "timm",
                 "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert "classifier head fc.weight (1000x512 -> 3x512), fc.bias (1000 -> 3) not loaded" in err
    predictions = read_table(str(out / "timm" / "predictions_test.parquet"))
    assert sorted(predictions.column("id").to_pylist()) == sorted(f"c2_{i}" for i in range(48))
    assert read_table_metadata(str(out / "timm" / "predictions_test.parquet"))["model_weights"] == str(
        tmp_path / "r18.pth")
    model, info = model_from_checkpoint(next((out / "timm").glob("epoch_0001_*")))
    assert info["signature"]["model"] == "timm:resnet18" and model.rmd_spec.name == "timm:resnet18"
    trained = model.state_dict()
    assert trained["fc.weight"].shape == (3, 512)
    torch.manual_seed(0)  # the run's seed: the random init the weights replaced
    random_init = build_model("timm:resnet18", num_classes=3).state_dict()
    # three SGD steps move the weights a little from where they started: the saved ones, not the random init
    for key in ("conv1.weight", "layer4.1.conv2.weight"):
        from_saved = (trained[key] - saved[key]).norm()
        assert from_saved < 0.25 * (trained[key] - random_init[key]).norm(), key

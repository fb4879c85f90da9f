"""Any classifier by name: ``timm:<name>`` and ``torchvision:<name>`` train through the same Ray path as the
built-in ResNets (random init, width 1, no CIFAR stem), and their checkpoints rebuild by name."""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
import pytest
import torch

from rmd_ray.data.readers import from_arrays
from rmd_ray.distributed.training import TrainConfig, run_training
from rmd_ray.io.parts import read_table
from rmd_ray.nn.engine import OptimConfig, model_from_checkpoint
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


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_timm_model_trains_and_predicts_through_ray_train(ray_local, tmp_path):
    config = TrainConfig(loss="ce", model="timm:resnet18", batch_size=32, cpus_per_worker=0.5, max_failures=0,
                         optim=OptimConfig(lr=0.05, momentum=0.9, epochs=1))
    result = run_training(_colours(96, 0), val=_colours(48, 1), test=_colours(48, 2), config=replace(config),
                          output_dir=tmp_path, run_name="timm")
    predictions = read_table(result.predictions["test"])
    assert sorted(predictions.column("id").to_pylist()) == sorted(f"c2_{i}" for i in range(48))
    model, info = model_from_checkpoint(result.last_checkpoint)
    assert info["signature"]["model"] == "timm:resnet18" and model.rmd_spec.name == "timm:resnet18"

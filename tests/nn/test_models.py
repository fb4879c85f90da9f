"""Model builders: exact match with torchvision at width 1, CIFAR stem, width scaling, validation."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from rmd_ray.nn.models import MODELS, ModelSpec, build_model

torch.set_num_threads(1)

NAMES = ["densenet121", "resnet101", "resnet18", "resnet34", "resnet50", "wide_resnet50_2"]
# torchvision's published parameter counts (1000 classes), e.g. ResNet18_Weights.IMAGENET1K_V1.meta
TORCHVISION_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "wide_resnet50_2": 68_883_240,
    "densenet121": 7_978_856,
}


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_names():
    assert MODELS.names() == NAMES


def test_resnet18_param_count_equals_torchvision():
    model = build_model("resnet18", num_classes=1000)
    assert _n_params(model) == 11_689_512 == _n_params(torchvision.models.resnet18(weights=None))


@pytest.mark.parametrize("name", NAMES)
def test_width_one_is_torchvision_architecture(name):
    # built on the meta device: same module tree and shapes without allocating 69M parameters
    with torch.device("meta"):
        ours = build_model(name, num_classes=1000)
        theirs = getattr(torchvision.models, name)(weights=None)
    ours_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    theirs_shapes = {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    assert ours_shapes == theirs_shapes
    assert _n_params(ours) == TORCHVISION_PARAMS[name]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("cifar_stem", [False, True])
def test_output_shapes_32_and_64_px(name, cifar_stem):
    model = build_model(name, num_classes=7, cifar_stem=cifar_stem, width=0.125).eval()
    with torch.no_grad():
        for px in (32, 64):
            out = model(torch.randn(2, 3, px, px))
            assert out.shape == (2, 7)
            assert torch.isfinite(out).all()


def test_cifar_stem_resnet():
    model = build_model("resnet18", num_classes=10, cifar_stem=True, width=0.25)
    conv = model.conv1
    assert conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
    assert conv.in_channels == 3 and conv.out_channels == 16 and conv.bias is None
    assert isinstance(model.maxpool, nn.Identity)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    # stride 1 stem, no pool: layer1 sees the full 32 x 32 input, the last stage 4 x 4
    feats = {}
    model.layer1.register_forward_hook(lambda m, i, o: feats.__setitem__("l1", o.shape))
    model.layer4.register_forward_hook(lambda m, i, o: feats.__setitem__("l4", o.shape))
    model.eval()(torch.randn(1, 3, 32, 32))
    assert feats == {"l1": (1, 16, 32, 32), "l4": (1, 128, 4, 4)}


def test_imagenet_stem_resnet():
    model = build_model("resnet18", num_classes=10, width=0.25)
    assert model.conv1.kernel_size == (7, 7) and model.conv1.stride == (2, 2)
    assert isinstance(model.maxpool, nn.MaxPool2d)
    feats = {}
    model.layer1.register_forward_hook(lambda m, i, o: feats.__setitem__("l1", o.shape))
    model.eval()(torch.randn(1, 3, 32, 32))
    assert feats["l1"] == (1, 16, 8, 8)


def test_cifar_stem_densenet():
    model = build_model("densenet121", num_classes=10, cifar_stem=True, width=0.125)
    conv = model.features.conv0
    assert conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
    assert conv.out_channels == 8
    assert isinstance(model.features.pool0, nn.Identity)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())


def test_cifar_stem_changes_only_the_stem_parameters():
    plain = build_model("resnet18", num_classes=10, width=0.5)
    cifar = build_model("resnet18", num_classes=10, width=0.5, cifar_stem=True)
    # 7x7 -> 3x3 kernel on 3 -> 32 channels
    assert _n_params(plain) - _n_params(cifar) == 32 * 3 * (49 - 9)


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "densenet121"])
def test_width_quarter_reduces_parameters_about_16x(name):
    full = _n_params(build_model(name, num_classes=10))
    quarter = _n_params(build_model(name, num_classes=10, width=0.25))
    assert 14.0 < full / quarter < 17.0


def test_width_scales_channels():
    model = build_model("resnet50", num_classes=10, width=0.125)
    assert model.conv1.out_channels == 8
    assert model.fc.in_features == 64 * 4  # 512 * width * expansion
    wide = build_model("wide_resnet50_2", num_classes=10, width=0.125)
    assert wide.layer1[0].conv1.out_channels == 16  # bottleneck width doubled
    dense = build_model("densenet121", num_classes=10, width=0.25)
    assert dense.features.denseblock1.denselayer1.conv2.out_channels == 8  # growth 32 -> 8


def test_spec_attached():
    model = build_model("resnet34", num_classes=5, cifar_stem=True, width=0.5)
    assert model.rmd_spec == ModelSpec(name="resnet34", num_classes=5, cifar_stem=True, width=0.5)
    assert build_model("resnet18", num_classes=3, width=1).rmd_spec.width == 1.0


def test_initialisation_matches_torchvision_recipe():
    model = build_model("resnet18", num_classes=10, width=0.5)
    assert torch.equal(model.bn1.weight, torch.ones(32)) and torch.equal(model.bn1.bias, torch.zeros(32))
    # kaiming normal, fan_out, relu: std = sqrt(2 / (out_channels * k * k))
    w = model.layer3[0].conv1.weight  # 64 -> 128, 3x3
    expected_std = (2.0 / (128 * 9)) ** 0.5
    assert abs(w.std().item() / expected_std - 1) < 0.05


def test_unknown_name_lists_names():
    with pytest.raises(
        ValueError, match=r"unknown model 'vgg16'; valid names: densenet121, resnet101, resnet18"
    ):
        build_model("vgg16", num_classes=10)


@pytest.mark.parametrize("bad", [0, -3, 2.0, True, None, "10"])
def test_num_classes_validation(bad):
    with pytest.raises(ValueError, match=r"num_classes must be an int >= 1, got"):
        build_model("resnet18", num_classes=bad)


@pytest.mark.parametrize("bad", [0.0, -1.0, 0.01, float("nan"), float("inf")])
def test_width_validation(bad):
    with pytest.raises(ValueError, match=r"width must be a finite number >= 1/32"):
        build_model("resnet18", num_classes=10, width=bad)


@pytest.mark.parametrize("bad", ["0.5", True, None])
def test_width_type(bad):
    with pytest.raises(TypeError, match="width must be a number"):
        build_model("resnet18", num_classes=10, width=bad)


def test_cifar_stem_type():
    with pytest.raises(TypeError, match="cifar_stem must be a bool"):
        build_model("resnet18", num_classes=10, cifar_stem=1)


def test_smallest_width_builds():
    model = build_model("densenet121", num_classes=2, width=1 / 32, cifar_stem=True).eval()
    assert model.features.conv0.out_channels == 2
    assert model(torch.randn(1, 3, 16, 16)).shape == (1, 2)


def test_numpy_integer_num_classes_accepted():
    import numpy as np

    model = build_model("resnet18", num_classes=np.int64(5), width=0.125)
    assert model.fc.out_features == 5 and type(model.rmd_spec.num_classes) is int

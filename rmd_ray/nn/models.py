"""Classifier backbones built from torchvision, with a CIFAR stem and a channel-width multiplier.

``build_model(name, num_classes=..., cifar_stem=..., width=...)`` is the one entry point; names live in
the ``MODELS`` registry. Architectures are torchvision's (``torchvision.models.resnet`` /
``densenet``), randomly initialised (``weights=None``: the method trains from scratch):

- ``cifar_stem=True`` swaps the ImageNet stem (7x7 stride-2 conv + 3x3 stride-2 max-pool, which
  shrinks a 32-px image to 8 px before the first block) for a 3x3 stride-1 conv and no pool, as in
  the usual CIFAR ResNets (He et al. 2016, Sec. 4.2) and in the paper's CIFAR runs.
- ``width`` multiplies every channel count (ResNet stem and stage planes; DenseNet growth rate and
  initial features). ``width=1`` is exactly torchvision's model; small widths (e.g. 0.125) make CPU
  tests fast. The number of parameters scales roughly with ``width**2``.

Every built model carries ``model.rmd_spec`` (a :class:`ModelSpec`), which the engine stores in
checkpoints so that loading a checkpoint into a different architecture fails with a clear message.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn
from torchvision.models.densenet import DenseNet
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from rmd_ray.core.registry import Registry

__all__ = ["EXTERNAL_PREFIXES", "MODELS", "ModelSpec", "build_model", "check_model_name", "MIN_WIDTH"]

#: Prefixes that name a classifier of another library, built at its own definition (random init):
#: ``timm:<name>`` (``timm.create_model``) and ``torchvision:<name>`` (``torchvision.models.get_model``).
EXTERNAL_PREFIXES = ("timm:", "torchvision:")

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")

# Smallest multiplier for which every scaled channel count (smallest base count: DenseNet's
# growth rate 32) is still >= 1.
MIN_WIDTH = 1.0 / 32.0


@dataclass(frozen=True)
class ModelSpec:
    """What :func:`build_model` was called with; attached to the model as ``model.rmd_spec``."""

    name: str
    num_classes: int
    cifar_stem: bool
    width: float


def _ch(base: int, width: float) -> int:
    return max(1, int(round(base * width)))


class _ScaledResNet(ResNet):
    """torchvision's ``ResNet`` with every channel count multiplied by ``width``.

    torchvision hard-codes the stem width (64) and the stage planes (64, 128, 256, 512) inside
    ``ResNet.__init__``, and ``width_per_group`` only widens the inside of Bottleneck blocks (BasicBlock
    rejects it), so neither argument can shrink a ResNet-18. Only ``__init__`` is rewritten here: it
    mirrors torchvision's line for line with scaled counts and reuses torchvision's ``BasicBlock``,
    ``Bottleneck``, ``_make_layer``, ``forward`` and weight initialisation. At ``width=1`` the module
    tree and every parameter shape equal torchvision's (tested against ``torchvision.models``).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: list[int],
        *,
        num_classes: int,
        width: float,
        width_per_group: int = 64,
    ) -> None:
        nn.Module.__init__(self)  # skip ResNet.__init__ on purpose (see class docstring)
        norm_layer = nn.BatchNorm2d
        self._norm_layer = norm_layer
        self.inplanes = _ch(64, width)
        self.dilation = 1
        self.groups = 1
        self.base_width = width_per_group
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, _ch(64, width), layers[0])
        self.layer2 = self._make_layer(block, _ch(128, width), layers[1], stride=2)
        self.layer3 = self._make_layer(block, _ch(256, width), layers[2], stride=2)
        self.layer4 = self._make_layer(block, _ch(512, width), layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(_ch(512, width) * block.expansion, num_classes)
        # torchvision's initialisation (zero_init_residual=False, its default)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)


def _cifar_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)


def _resnet(block, layers, *, num_classes, cifar_stem, width, width_per_group=64) -> nn.Module:
    model = _ScaledResNet(
        block, layers, num_classes=num_classes, width=width, width_per_group=width_per_group
    )
    if cifar_stem:
        model.conv1 = _cifar_conv(3, model.conv1.out_channels)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        model.maxpool = nn.Identity()
    return model


@MODELS.register("resnet18")
def _resnet18(**kw) -> nn.Module:
    return _resnet(BasicBlock, [2, 2, 2, 2], **kw)


@MODELS.register("resnet34")
def _resnet34(**kw) -> nn.Module:
    return _resnet(BasicBlock, [3, 4, 6, 3], **kw)


@MODELS.register("resnet50")
def _resnet50(**kw) -> nn.Module:
    return _resnet(Bottleneck, [3, 4, 6, 3], **kw)


@MODELS.register("resnet101")
def _resnet101(**kw) -> nn.Module:
    return _resnet(Bottleneck, [3, 4, 23, 3], **kw)


@MODELS.register("wide_resnet50_2")
def _wide_resnet50_2(**kw) -> nn.Module:
    return _resnet(Bottleneck, [3, 4, 6, 3], width_per_group=128, **kw)


@MODELS.register("densenet121")
def _densenet121(*, num_classes, cifar_stem, width) -> nn.Module:
    # torchvision's DenseNet takes the growth rate and initial width as arguments, so the
    # multiplier needs no subclass; width=1 is exactly torchvision.models.densenet121.
    model = DenseNet(
        growth_rate=_ch(32, width),
        block_config=(6, 12, 24, 16),
        num_init_features=_ch(64, width),
        num_classes=num_classes,
    )
    if cifar_stem:
        conv0 = model.features.conv0
        model.features.conv0 = _cifar_conv(3, conv0.out_channels)
        nn.init.kaiming_normal_(model.features.conv0.weight)  # DenseNet's own conv init
        model.features.pool0 = nn.Identity()
    return model


def check_model_name(name: str) -> None:
    """ValueError, listing the choices, unless ``name`` is a built-in, ``timm:<a timm model>`` or
    ``torchvision:<a torchvision classification model>``."""
    if not isinstance(name, str):
        raise TypeError(f"model must be a name, got {type(name).__name__}")
    library, _, model = name.partition(":")
    if not model:
        MODELS.get(name)  # ValueError listing the built-ins
        return
    if f"{library}:" not in EXTERNAL_PREFIXES:
        raise ValueError(f"model {name!r}: unknown library {library!r}; use timm:<name> or torchvision:<name>")
    known = _timm_names() if library == "timm" else _torchvision_names()
    if model not in known:
        close = difflib.get_close_matches(model, known, n=3) or known[:3]
        raise ValueError(f"model {name!r}: {library} has no model {model!r} (closest: {', '.join(close)})")


def _timm_names() -> list[str]:
    import timm

    return timm.list_models()


def _torchvision_names() -> list[str]:
    from torchvision import models

    return models.list_models(module=models)  # classification models only


def _external(name: str, *, num_classes: int) -> nn.Module:
    library, _, model = name.partition(":")
    if library == "timm":
        import timm

        return timm.create_model(model, pretrained=False, num_classes=num_classes)
    from torchvision import models

    return models.get_model(model, weights=None, num_classes=num_classes)


def build_model(name: str, *, num_classes: int, cifar_stem: bool = False, width: float = 1.0) -> nn.Module:
    """Build a randomly initialised classifier.

    Parameters
    ----------
    name : str
        One of ``MODELS.names()`` (resnet18, resnet34, resnet50, resnet101, wide_resnet50_2,
        densenet121), or ``timm:<name>`` / ``torchvision:<name>``: that library's model, randomly
        initialised, with ``cifar_stem`` ignored (recorded as False) and ``width`` 1.
    num_classes : int
        Output size K of the final linear layer (>= 1).
    cifar_stem : bool, default False
        Replace the first conv by a 3x3 stride-1 padding-1 conv and drop the stem max-pool (for
        32-px inputs); on DenseNet this applies to ``features.conv0`` / ``features.pool0``.
    width : float, default 1.0
        Channel multiplier, ``>= 1/32``; 1.0 reproduces torchvision's architecture exactly.

    Returns
    -------
    torch.nn.Module
        Maps images (B, 3, H, W) to logits (B, K); ``model.rmd_spec`` holds a :class:`ModelSpec`.
    """
    check_model_name(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
    if not isinstance(cifar_stem, bool):
        raise TypeError(f"cifar_stem must be a bool, got {type(cifar_stem).__name__}")
    if isinstance(width, bool) or not isinstance(width, numbers.Real):
        raise TypeError(f"width must be a number, got {type(width).__name__}")
    if not math.isfinite(width) or width < MIN_WIDTH:
        raise ValueError(f"width must be a finite number >= 1/32 (= {MIN_WIDTH}), got {width!r}")
    num_classes = int(num_classes)
    if ":" in name:  # another library's model, as that library defines it: no CIFAR stem, no width
        if width != 1.0:
            raise ValueError(f"width {width:g} applies to the built-in models; {name} is built at its own width "
                             "(use width 1, or a smaller model of that library)")
        model, cifar_stem = _external(name, num_classes=num_classes), False
    else:
        model = MODELS.get(name)(num_classes=num_classes, cifar_stem=cifar_stem, width=float(width))
    model.rmd_spec = ModelSpec(name=name, num_classes=num_classes, cifar_stem=cifar_stem, width=float(width))
    return model

"""``tiny_cnn``: a small seeded CNN encoder for tests and smoke runs."""

from __future__ import annotations

import torch
from torch import nn

from rmd_ray.nn.encoders.helpers import load_state_dict, load_strict
from rmd_ray.nn.encoders.preprocess import Preprocessing
from rmd_ray.nn.encoders.registry import ENCODERS, Encoder, EncoderEntry

# --------------------------------------------------------------------------------------------
# tiny_cnn


class TinyCNN(nn.Module):
    """3 conv layers + global average pool -> 32-d features; seeded random weights.

    GELU rather than ReLU so that no feature is identically zero over a data set (a dead unit
    would make the class covariance singular downstream).
    """

    def __init__(self, feature_dim: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.GELU(),
            nn.AvgPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.GELU(),
            nn.AvgPool2d(2),
            nn.Conv2d(32, feature_dim, 3, padding=1),
            nn.GELU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


TINY_CNN_SEED = 0


def _tiny_cnn_preprocessing(*, image_size) -> Preprocessing:
    return Preprocessing(image_size or 32, None, "bilinear", (0.5,) * 3, (0.5,) * 3)


def _build_tiny_cnn(*, checkpoint, image_size, pretrained) -> Encoder:
    prep = _tiny_cnn_preprocessing(image_size=image_size)
    # Seed a forked RNG so two builds have identical weights without touching the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_CNN_SEED)
        model = TinyCNN()
    if checkpoint is not None:
        load_strict(model, load_state_dict(checkpoint), path=checkpoint, name="tiny_cnn")
    return Encoder("tiny_cnn", model, 32, prep.image_size, prep.transform(), prep.describe())


ENCODERS.add("tiny_cnn", EncoderEntry(_build_tiny_cnn, _tiny_cnn_preprocessing))

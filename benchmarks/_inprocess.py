"""In-process training for the method benchmarks: the torch layer (rmd_ray.nn.engine), no Ray.

They measure the method, not the framework; ``cifar10_reliability.py --through-ray`` trains the same
table through Ray Train for comparison.
"""

from __future__ import annotations

import math

import numpy as np


def normaliser(images):
    """``uint8 (B, H, W, 3) -> float (B, 3, H, W)`` standardised by the training images' channel mean / std."""
    import torch

    mean = torch.tensor(images.reshape(-1, 3).mean(0) / 255.0, dtype=torch.float32)[:, None, None]
    std = torch.tensor(images.reshape(-1, 3).std(0) / 255.0, dtype=torch.float32)[:, None, None]

    def to_tensor(x):
        return (torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float() / 255.0 - mean) / std

    return to_tensor


def train_model(images, labels, weights, *, loss, hparams, epochs, seed, width, to_tensor, num_classes=10,
                augment=True, channels_last=False, after_epoch=None):
    """Width-``width`` ResNet-18 trained in-process (SGD 0.05 cosine, wd 5e-4, batch 128, crop + flip unless
    ``augment`` is false). ``channels_last`` stores the model and batches NHWC (faster convolutions on CPU);
    ``after_epoch(epoch, model)`` is called after each epoch (1-based)."""
    import torch

    from rmd_ray.nn import engine
    from rmd_ray.nn.losses import build_loss
    from rmd_ray.nn.models import build_model

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x, y = to_tensor(images), torch.from_numpy(labels)
    w = torch.from_numpy(weights.astype(np.float32))
    model = build_model("resnet18", num_classes=num_classes, cifar_stem=True, width=width)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    config = engine.OptimConfig(lr=0.05, epochs=epochs, schedule="cosine", weight_decay=5e-4)
    optimizer = engine.build_optimizer(model, config)
    batch = 128
    scheduler = engine.build_scheduler(optimizer, config, steps_per_epoch=math.ceil(len(y) / batch))
    loss_fn = build_loss(loss, **hparams)
    # the pad of the crop scales with the image (4 px at 32 px, as the CIFAR recipe)
    pad = max(1, images.shape[1] // 8)

    def batches():
        order = torch.randperm(len(y), generator=generator)
        for i in range(0, len(y), batch):
            idx = order[i : i + batch]
            yield {"image": x[idx], "label": y[idx], "weight": w[idx], "id": idx}

    def crop_flip(im):
        return engine.random_crop_flip(im, padding=pad, generator=generator)

    for epoch in range(1, epochs + 1):
        engine.train_one_epoch(model, batches(), loss_fn, optimizer, scheduler=scheduler, device="cpu",
                               augment=crop_flip if augment else None)
        if after_epoch is not None:
            after_epoch(epoch, model)
    return model


def logits_of(model, images, to_tensor) -> np.ndarray:
    import torch

    from rmd_ray.nn import engine

    x = to_tensor(images)
    if next(model.parameters()).is_contiguous(memory_format=torch.channels_last):
        x = x.contiguous(memory_format=torch.channels_last)
    batches = ({"image": x[i : i + 500], "label": torch.zeros(len(x[i : i + 500]), dtype=torch.int64),
                "id": torch.arange(i, min(i + 500, len(x)))} for i in range(0, len(x), 500))
    _, _, logits = engine.predict(model, batches, device="cpu")
    return np.asarray(logits, dtype=np.float64)

"""Training augmentation on batched tensors: :func:`random_crop_flip`."""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F
from torch import Tensor

# ----------------------------------------------------------------------------------------------------
# augmentation


def random_crop_flip(images: Tensor, *, padding: int = 4, generator: torch.Generator | None = None) -> Tensor:
    """Standard CIFAR augmentation on a batch: zero-pad, random crop back to H x W, random h-flip.

    Each image gets its own crop offset (dy, dx) uniform in {0, ..., 2 * padding} and is flipped
    left-right with probability 1/2. Draws, in this order from ``generator`` (or the global RNG):
    ``offsets = torch.randint(0, 2p + 1, (2, B))`` (row 0: dy, row 1: dx), then
    ``flip = torch.rand(B) < 0.5``. Pads with 0 in whatever space ``images`` are in.

    torchvision.transforms.v2.RandomCrop / RandomHorizontalFlip are not used: on a (B, C, H, W)
    tensor they draw ONE crop and one flip for the whole batch, and per-sample draws would need a
    Python loop over images. This is one gather on the tensor's device.

    Parameters
    ----------
    images : Tensor, shape (B, C, H, W), floating
    padding : int, default 4
        Pixels of zero padding on each side, >= 0.
    generator : torch.Generator, optional
        For reproducibility (save ``generator.get_state()`` in a checkpoint to resume exactly);
        may live on another device than ``images``.

    Returns
    -------
    Tensor, shape (B, C, H, W)
    """
    if not isinstance(images, Tensor) or images.ndim != 4 or not images.is_floating_point():
        raise ValueError("images must be a floating-point tensor of shape (B, C, H, W)")
    if isinstance(padding, bool) or not isinstance(padding, numbers.Integral) or padding < 0:
        raise ValueError(f"padding must be an int >= 0, got {padding!r}")
    b, _, h, w = images.shape
    p = int(padding)
    draw_device = generator.device if generator is not None else images.device
    offsets = torch.randint(0, 2 * p + 1, (2, b), generator=generator, device=draw_device).to(images.device)
    flip = (torch.rand(b, generator=generator, device=draw_device) < 0.5).to(images.device)
    padded = F.pad(images, (p, p, p, p))
    rows = offsets[0][:, None] + torch.arange(h, device=images.device)  # (B, H)
    cols = offsets[1][:, None] + torch.arange(w, device=images.device)  # (B, W)
    batch = torch.arange(b, device=images.device)[:, None, None]
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # (B, C, H, W)
    return torch.where(flip[:, None, None, None], out.flip(-1), out).contiguous()

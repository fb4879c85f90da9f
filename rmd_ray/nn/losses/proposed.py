"""The paper's loss (``proposed``): cross-entropy plus a difficulty-weighted entropy term."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rmd_ray.nn.losses.base import LOSSES, ClassificationLoss, Interval, entropy

# ----------------------------------------------------------------------------------------------------
# the method


@LOSSES.register("proposed")
class ProposedLoss(ClassificationLoss):
    r"""Difficulty-aware entropy regularisation (Cui et al., NeurIPS 2023, Eq. 6).

    .. math:: \ell_i = \mathrm{CE}(p_i, y_i) - \alpha\, s_i\, H(p_i), \qquad
              H(p) = -\sum_k p_k \log p_k

    with s_i in [0, 1] the per-sample difficulty weight (larger = harder, see
    ``rmd_ray.core`` weights), passed as ``weights``. Harder samples get a larger entropy bonus, so
    the model is discouraged from fitting them with full confidence.

    Parameters
    ----------
    alpha : float, default 0.3
        Strength, >= 0 (paper: 0.3 on CIFAR, 0.2 on ImageNet). alpha = 0 or s = 0 gives exactly
        cross-entropy; s = 1 gives ``entropy_reg`` with beta = alpha.
    """

    name = "proposed"
    hparam_ranges = {"alpha": Interval(0.0)}
    needs_weights = True

    def __init__(self, alpha: float = 0.3) -> None:
        super().__init__()
        self.alpha = self._real("alpha", alpha)

    def _check_extra(self, logits, weights, ids) -> None:
        if weights is None:
            raise ValueError(
                "loss 'proposed': pass the per-sample difficulty weights s as weights=(B,) tensor in [0, 1]"
            )
        bad = ~torch.isfinite(weights) | (weights < 0) | (weights > 1)
        if bool(bad.any()):
            first = weights[bad][0].item()
            raise ValueError(
                f"loss 'proposed': weights must be finite and in [0, 1]; {int(bad.sum())} of "
                f"{weights.numel()} are not (e.g. {first!r})"
            )

    def _per_sample(self, logits, logp, targets, weights, ids) -> Tensor:
        s = weights.to(logp.dtype)
        return F.nll_loss(logp, targets, reduction="none") - self.alpha * s * entropy(logp)

    def _mean(self, logits, logp, targets, weights, ids) -> Tensor:
        s = weights.to(logp.dtype)
        return F.nll_loss(logp, targets) - self.alpha * (s * entropy(logp)).mean()

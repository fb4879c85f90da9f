"""The correctness ranking loss (``crl``), which keeps per-sample correctness history by id."""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F
from torch import Tensor

from rmd_ray.nn.losses.base import LOSSES, ClassificationLoss, Interval


@LOSSES.register("crl")
class CorrectnessRankingLoss(ClassificationLoss):
    r"""Correctness ranking loss, "CRL" (Moon et al., ICML 2020, "Confidence-aware learning for deep
    neural networks", Eq. 2-3).

    .. math::
        \ell_i = -\log p_{i,y_i} + \lambda \max\bigl(0,\,
                 -g(c_i, c_j)(\kappa_i - \kappa_j) + |c_i - c_j|\bigr), \quad j = (i + 1) \bmod B

    with kappa_i = max_k p_ik the confidence, c_i the running correctness frequency of sample i
    and g(a, b) = sign(a - b). Samples that were classified correctly more often must get a higher
    confidence, by a margin of |c_i - c_j|; pairs with equal c give 0. As in the authors' code,
    each sample is paired with the next one in the batch (``torch.roll``), and gradients flow
    through both confidences.

    The history lives in two int64 buffers of length ``num_samples`` indexed by sample id
    (``ids`` must lie in [0, num_samples)): ``correct_count`` and ``seen_count``, and
    c_i = correct_count_i / max(seen_count_i, 1) (0 for a sample not seen yet). The authors instead
    divide cumulative correct counts by the number of finished epochs (min-max normalised); with
    one visit per sample per epoch the two give the same ordering, and this form needs no epoch
    bookkeeping. The buffers are in ``state_dict()``, so pass the loss to ``save_checkpoint`` to
    resume exactly. Under data-parallel training each worker keeps its own history.

    Updating: ``forward`` records the batch (correct = argmax logits == target) AFTER computing the
    loss, so a batch is ranked with the history from earlier steps only (as in the authors' code)
    -- but only while the module is in training mode and autograd is enabled. Call ``.eval()`` (or
    run under ``torch.no_grad()``) to evaluate the loss without recording; ``per_sample`` never
    records; ``update(ids, correct)`` records explicitly.

    Parameters
    ----------
    num_samples : int
        Size of the training set (ids are 0 .. num_samples - 1); required.
    lam : float, default 1.0
        Weight of the ranking term, >= 0 (authors' default 1.0); 0 is cross-entropy.
    """

    name = "crl"
    hparam_ranges = {"lam": Interval(0.0)}

    def __init__(self, num_samples: int, lam: float = 1.0) -> None:
        super().__init__()
        if isinstance(num_samples, bool) or not isinstance(num_samples, numbers.Integral) or num_samples < 1:
            raise ValueError(
                f"loss 'crl': num_samples must be an int >= 1 (the training-set size), got {num_samples!r}"
            )
        self.num_samples = int(num_samples)
        self.lam = self._real("lam", lam)
        self.register_buffer("correct_count", torch.zeros(self.num_samples, dtype=torch.int64))
        self.register_buffer("seen_count", torch.zeros(self.num_samples, dtype=torch.int64))

    def _check_ids(self, ids: Tensor | None) -> None:
        if ids is None:
            raise ValueError(
                "loss 'crl': pass the sample ids (ids=(B,) int64) to look up the correctness history"
            )
        if bool(((ids < 0) | (ids >= self.num_samples)).any()):
            raise ValueError(
                f"loss 'crl': ids must be in [0, num_samples={self.num_samples}), got values in "
                f"[{int(ids.min())}, {int(ids.max())}]"
            )

    def _check_extra(self, logits, weights, ids) -> None:
        self._check_ids(ids)

    def correctness(self, ids: Tensor) -> Tensor:
        """Running correctness frequency c for ``ids``, float64 in [0, 1]."""
        return self.correct_count[ids].double() / self.seen_count[ids].clamp_min(1).double()

    @torch.no_grad()
    def update(self, ids: Tensor, correct: Tensor) -> None:
        """Record one observation per id: ``correct`` (B,) bool. Repeated ids are all counted."""
        if not isinstance(ids, Tensor) or ids.dtype != torch.int64 or ids.ndim != 1:
            raise TypeError("ids must be a 1-d int64 tensor")
        if not isinstance(correct, Tensor) or correct.shape != ids.shape:
            raise ValueError(f"correct must be a tensor of shape {tuple(ids.shape)} like ids")
        self._check_ids(ids)
        ids = ids.to(self.correct_count.device)
        self.correct_count.index_add_(0, ids, correct.to(device=ids.device, dtype=torch.int64))
        self.seen_count.index_add_(0, ids, torch.ones_like(ids))

    def _ranking(self, logp: Tensor, ids: Tensor) -> Tensor:
        kappa = logp.max(dim=1).values.exp()
        c = self.correctness(ids.to(self.correct_count.device)).to(device=logp.device, dtype=logp.dtype)
        kappa_j, c_j = torch.roll(kappa, -1), torch.roll(c, -1)
        g = torch.sign(c - c_j)
        return torch.relu(-g * (kappa - kappa_j) + (c - c_j).abs())

    def _per_sample(self, logits, logp, targets, weights, ids) -> Tensor:
        return F.nll_loss(logp, targets, reduction="none") + self.lam * self._ranking(logp, ids)

    def _mean(self, logits, logp, targets, weights, ids) -> Tensor:
        loss = F.nll_loss(logp, targets) + self.lam * self._ranking(logp, ids).mean()
        if self.training and torch.is_grad_enabled():
            self.update(ids, logits.detach().argmax(dim=1) == targets)
        return loss

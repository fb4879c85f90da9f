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

    with kappa_i = max_k p_ik the confidence, c_i the normalised correctness of sample i and
    g(a, b) = sign(a - b). Samples that were classified correctly more often must get a higher
    confidence, by a margin of |c_i - c_j|; pairs with equal c give 0. As in the authors' code,
    each sample is paired with the next one in the batch (``torch.roll``), and gradients flow
    through both confidences.

    Correctness is normalised as in the authors' code (``crl_utils.History.correctness_normalize``,
    github.com/daintlab/confidence-aware-learning)::

        c_i = (n_i - n_min) / max(E - n_min, 1),    E = max(epochs finished, 1)

    with n_i the number of times sample i was classified correctly so far and n_min the smallest
    n over all ``num_samples`` samples. The authors divide by (E - n_min) and start E at 1; since
    n and E are integers, E - n_min >= 1 whenever theirs is defined, and the guard only replaces
    their division by zero (every sample right in every finished epoch) with count differences.
    Mid-epoch a sample already right in the current epoch can reach (E + 1 - n_min) / (E - n_min) > 1,
    as in the authors' code. The ranking's sign depends only on the counts; the normalisation
    sets the margin, |n_i - n_j| / (E - n_min), which differs from a per-sample frequency n_i / visits
    as soon as every sample has been right at least once (n_min >= 1).

    The history lives in buffers indexed by sample id (``ids`` must lie in [0, num_samples)):
    ``correct_count`` (n), ``seen_count`` (visits, kept for diagnostics) and ``epochs_finished``
    (E before the floor of 1), advanced by :meth:`end_epoch`, which
    ``rmd_ray.nn.engine.train_one_epoch`` calls after every training epoch. The buffers are in
    ``state_dict()``, so pass the loss to ``save_checkpoint`` to resume exactly. Under data-parallel
    training each worker keeps its own history; samples a worker never saw count 0 there, so its
    n_min is 0 and c_i = n_i / E.

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
        self.register_buffer("epochs_finished", torch.zeros((), dtype=torch.int64))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # Checkpoints written before epochs_finished existed: with one visit per sample per epoch
        # (a single worker), the most visits of any sample is the number of finished epochs.
        key, seen = prefix + "epochs_finished", prefix + "seen_count"
        if key not in state_dict and seen in state_dict:
            state_dict[key] = state_dict[seen].max().clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

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
        """Normalised correctness c for ``ids`` (float64; see the class docstring for the formula)."""
        n_min = self.correct_count.min()
        denominator = (self.epochs_finished.clamp_min(1) - n_min).clamp_min(1)
        return (self.correct_count[ids] - n_min).double() / denominator.double()

    @torch.no_grad()
    def end_epoch(self) -> None:
        """Count one finished training epoch (the E of the normalisation); the engine calls it."""
        self.epochs_finished += 1

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

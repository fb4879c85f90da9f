"""Baseline losses: ``ce``, ``label_smoothing``, ``focal``, ``l1_norm``, ``entropy_reg`` and ``poly1``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rmd_ray.nn.losses.base import LOSSES, ClassificationLoss, Interval, entropy, log_p_target, one_minus_pt

# ----------------------------------------------------------------------------------------------------
# baselines


@LOSSES.register("ce")
class CrossEntropyLoss(ClassificationLoss):
    r"""Cross-entropy :math:`\ell_i = -\log p_{i, y_i}` (``F.cross_entropy``). No hyper-parameters."""

    name = "ce"

    def _per_sample(self, logits, logp, targets, weights, ids) -> Tensor:
        return F.nll_loss(logp, targets, reduction="none")

    def _mean(self, logits, logp, targets, weights, ids) -> Tensor:
        return F.nll_loss(logp, targets)


@LOSSES.register("label_smoothing")
class LabelSmoothingLoss(ClassificationLoss):
    r"""Label smoothing (Szegedy et al., CVPR 2016; Mueller et al., NeurIPS 2019).

    Cross-entropy against the target (1 - eps) onehot(y) + eps / K:

    .. math:: \ell_i = (1 - \epsilon)(-\log p_{i,y_i}) + \epsilon \frac{1}{K}\sum_k (-\log p_{ik})

    Uses ``F.cross_entropy(..., label_smoothing=epsilon)``.

    Parameters
    ----------
    epsilon : float, default 0.1
        Smoothing mass in [0, 1]; 0 is plain cross-entropy.
    """

    name = "label_smoothing"
    hparam_ranges = {"epsilon": Interval(0.0, 1.0)}

    def __init__(self, epsilon: float = 0.1) -> None:
        super().__init__()
        self.epsilon = self._real("epsilon", epsilon)

    def _per_sample(self, logits, logp, targets, weights, ids) -> Tensor:
        return F.cross_entropy(logits, targets, label_smoothing=self.epsilon, reduction="none")

    def _mean(self, logits, logp, targets, weights, ids) -> Tensor:
        return F.cross_entropy(logits, targets, label_smoothing=self.epsilon)


@LOSSES.register("focal")
class FocalLoss(ClassificationLoss):
    r"""Focal loss (Lin et al., ICCV 2017, Eq. 4, without the class-balance factor alpha_t).

    .. math:: \ell_i = -(1 - p_{i,y_i})^\gamma \log p_{i,y_i}

    Parameters
    ----------
    gamma : float, default 2.0
        Focusing parameter, >= 0; gamma = 0 is cross-entropy. (Mukhoti et al., NeurIPS 2020 use 3
        for calibration.)

    Notes
    -----
    1 - p_t is clamped below at the dtype's smallest normal number: where p_t rounds to exactly 1,
    d(1-p)^gamma/dp is infinite for gamma < 1 and would turn the gradient into NaN. The clamp changes
    the loss by at most tiny**gamma * |log p_t|, and the gradient there is 0 either way.
    """

    name = "focal"
    hparam_ranges = {"gamma": Interval(0.0)}

    def __init__(self, gamma: float = 2.0) -> None:
        super().__init__()
        self.gamma = self._real("gamma", gamma)

    def _per_sample(self, logits, logp, targets, weights, ids) -> Tensor:
        log_pt = log_p_target(logp, targets)
        q = one_minus_pt(log_pt).clamp_min(torch.finfo(logp.dtype).tiny)
        return q.pow(self.gamma) * (-log_pt)


@LOSSES.register("l1_norm")
class L1NormLoss(ClassificationLoss):
    r"""Cross-entropy plus an L1 penalty on the logits.

    .. math:: \ell_i = -\log p_{i,y_i} + \lambda \sum_k |z_{ik}|

    i.e. CE + lambda * mean over the batch of ||z_i||_1. The paper lists "L1 norm" among its
    baselines without a formula; this is the plain L1 logit-norm penalty (the logit-penalty
    family discussed e.g. by Wei et al., ICML 2022, "Mitigating neural network overconfidence with
    logit normalization", and Liu et al., CVPR 2022, margin-based label smoothing). Large logits
    are what make softmax overconfident, so penalising their size is a calibration regulariser.
    The penalty is on the sum (not the mean) over the K classes, so lambda's useful scale depends
    on K.

    Parameters
    ----------
    lam : float, default 0.01
        Penalty weight, >= 0; 0 is cross-entropy.
    """

    name = "l1_norm"
    hparam_ranges = {"lam": Interval(0.0)}

    def __init__(self, lam: float = 0.01) -> None:
        super().__init__()
        self.lam = self._real("lam", lam)

    def _per_sample(self, logits, logp, targets, weights, ids) -> Tensor:
        return F.nll_loss(logp, targets, reduction="none") + self.lam * logits.abs().sum(dim=1).to(logp.dtype)

    def _mean(self, logits, logp, targets, weights, ids) -> Tensor:
        return F.nll_loss(logp, targets) + self.lam * logits.abs().sum(dim=1).to(logp.dtype).mean()


@LOSSES.register("entropy_reg")
class EntropyRegLoss(ClassificationLoss):
    r"""Entropy regularisation with a constant weight, "ER" (Pereyra et al., ICLR-W 2017,
    confidence penalty).

    .. math:: \ell_i = -\log p_{i,y_i} - \beta H(p_i)

    Equal to ``proposed`` with every s_i = 1 and alpha = beta. The fair control for the proposed
    loss is beta = alpha * mean(s) (same average regularisation strength), see docs/design.md 1.7.

    Parameters
    ----------
    beta : float, default 0.3
        Entropy weight, >= 0; 0 is cross-entropy. Set it explicitly in experiments.
    """

    name = "entropy_reg"
    hparam_ranges = {"beta": Interval(0.0)}

    def __init__(self, beta: float = 0.3) -> None:
        super().__init__()
        self.beta = self._real("beta", beta)

    def _per_sample(self, logits, logp, targets, weights, ids) -> Tensor:
        return F.nll_loss(logp, targets, reduction="none") - self.beta * entropy(logp)

    def _mean(self, logits, logp, targets, weights, ids) -> Tensor:
        # same expression as ProposedLoss._mean with s = 1, so the two agree bit for bit
        return F.nll_loss(logp, targets) - self.beta * entropy(logp).mean()


@LOSSES.register("poly1")
class Poly1Loss(ClassificationLoss):
    r"""Poly-1 loss (Leng et al., ICLR 2022, Eq. 3).

    .. math:: \ell_i = -\log p_{i,y_i} + \epsilon (1 - p_{i,y_i})

    Parameters
    ----------
    epsilon : float, default 1.0
        Coefficient of the first polynomial term, >= -1 (the paper's range: at -1 the leading
        (1 - p_t) term of CE's expansion is removed; below it the loss is no longer monotone in
        p_t); 0 is cross-entropy.
    """

    name = "poly1"
    hparam_ranges = {"epsilon": Interval(-1.0)}

    def __init__(self, epsilon: float = 1.0) -> None:
        super().__init__()
        self.epsilon = self._real("epsilon", epsilon)

    def _per_sample(self, logits, logp, targets, weights, ids) -> Tensor:
        return F.nll_loss(logp, targets, reduction="none") + self.epsilon * one_minus_pt(
            log_p_target(logp, targets)
        )

    def _mean(self, logits, logp, targets, weights, ids) -> Tensor:
        return F.nll_loss(logp, targets) + self.epsilon * one_minus_pt(log_p_target(logp, targets)).mean()

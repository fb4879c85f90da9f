"""Training losses: the paper's difficulty-weighted entropy regulariser and the baselines it compares with.

Every loss is an ``nn.Module`` registered in ``LOSSES`` and built with ``build_loss(name, **hparams)``;
hyper-parameters are validated at construction. All share one call signature::

    loss = loss_fn(logits, targets, weights=None, ids=None)     # scalar, mean over the batch
    per = loss_fn.per_sample(logits, targets, weights=None, ids=None)   # (B,)

with ``logits`` (B, K) floating, ``targets`` (B,) int64 class indices, ``weights`` (B,) per-sample
difficulty weights s in [0, 1] (used by ``proposed``, ignored by the others) and ``ids`` (B,) int64
sample ids (used by ``crl``, ignored by the others), so the training loop can pass both to any loss.

Everything is computed from ``F.log_softmax``: p = exp(log p), H(p) = -sum_k p_k log p_k, 1 - p_t =
-expm1(log p_t). Nothing takes log(softmax + eps), so logits of size 1e4 still give a finite loss and
gradient. ``forward`` returns exactly the mean of ``per_sample`` (up to float summation order); where
a loss is "CE + something" the mean is computed as ``F.nll_loss(log p) + mean(something)``, so that a
zero coefficient gives bit-for-bit ``F.cross_entropy``.
"""

from __future__ import annotations

import inspect
import math
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rmd_ray.core.registry import Registry

__all__ = [
    "LOSSES",
    "ClassificationLoss",
    "ProposedLoss",
    "CrossEntropyLoss",
    "LabelSmoothingLoss",
    "FocalLoss",
    "L1NormLoss",
    "EntropyRegLoss",
    "Poly1Loss",
    "CorrectnessRankingLoss",
    "build_loss",
    "entropy_from_logits",
]

LOSSES: Registry[type[ClassificationLoss]] = Registry("loss")


# ----------------------------------------------------------------------------------------------------
# validation helpers


def _interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
    lo = "(" if low_open else "["
    hi = ")" if high_open or high == math.inf else "]"
    fmt = lambda v: "inf" if v == math.inf else f"{v:g}"  # noqa: E731
    return f"{lo}{fmt(low)}, {fmt(high)}{hi}"


def _check_real(
    loss: str,
    name: str,
    value: object,
    *,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    interval = _interval(low, high, low_open, high_open)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"loss {loss!r}: {name} must be a number in {interval}, got {type(value).__name__}")
    v = float(value)
    ok = math.isfinite(v) and (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        raise ValueError(f"loss {loss!r}: {name} must be a finite number in {interval}, got {value!r}")
    return v


def _hparam_params(cls: type) -> dict[str, inspect.Parameter]:
    """Named constructor parameters of a loss class (none for a class without its own ``__init__``)."""
    if cls.__init__ is nn.Module.__init__:
        return {}
    return {
        k: p
        for k, p in inspect.signature(cls.__init__).parameters.items()
        if k != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def _check_batch(logits: object, targets: object, weights: object, ids: object) -> None:
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        raise TypeError("logits must be a floating-point torch.Tensor of shape (B, K)")
    if logits.ndim != 2 or logits.shape[0] == 0 or logits.shape[1] == 0:
        raise ValueError(f"logits must have shape (B, K) with B, K >= 1, got {tuple(logits.shape)}")
    b, k = logits.shape
    if not isinstance(targets, Tensor) or targets.dtype != torch.int64:
        got = targets.dtype if isinstance(targets, Tensor) else type(targets).__name__
        raise TypeError(f"targets must be an int64 tensor of class indices (use .long()), got {got}")
    if targets.shape != (b,):
        raise ValueError(f"targets must have shape ({b},) to match logits, got {tuple(targets.shape)}")
    # one host sync; cheaper than a CUDA device-side assert that kills the process
    if bool(((targets < 0) | (targets >= k)).any()):
        raise ValueError(
            f"targets must be class indices in [0, {k}), got values in "
            f"[{int(targets.min())}, {int(targets.max())}]"
        )
    if weights is not None:
        if not isinstance(weights, Tensor) or not weights.is_floating_point():
            raise TypeError("weights must be a floating-point tensor of shape (B,) or None")
        if weights.shape != (b,):
            raise ValueError(f"weights must have shape ({b},) to match logits, got {tuple(weights.shape)}")
    if ids is not None:
        if not isinstance(ids, Tensor) or ids.dtype != torch.int64:
            raise TypeError("ids must be an int64 tensor of shape (B,) or None")
        if ids.shape != (b,):
            raise ValueError(f"ids must have shape ({b},) to match logits, got {tuple(ids.shape)}")


# ----------------------------------------------------------------------------------------------------
# shared pieces


def _entropy(logp: Tensor) -> Tensor:
    # exp(log p) * log p is 0 * (large negative) = 0 for vanishing classes: no NaN, no eps
    return -(logp.exp() * logp).sum(dim=1)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Predictive entropy H(p) = -sum_k p_k log p_k with p = softmax(logits), shape (B, K) -> (B,).

    Computed from ``F.log_softmax``; a uniform distribution gives log K.
    """
    if not isinstance(logits, Tensor) or not logits.is_floating_point() or logits.ndim != 2:
        raise ValueError("logits must be a floating-point tensor of shape (B, K)")
    return _entropy(F.log_softmax(logits, dim=1))


def _log_pt(logp: Tensor, targets: Tensor) -> Tensor:
    return logp.gather(1, targets[:, None]).squeeze(1)


def _one_minus_pt(log_pt: Tensor) -> Tensor:
    # 1 - p_t = -expm1(log p_t) keeps precision when p_t -> 1 (where 1 - exp() cancels)
    return -torch.expm1(log_pt)


class ClassificationLoss(nn.Module):
    """Base class: validates the batch once, then calls ``_per_sample`` / ``_mean`` on valid input.

    Subclasses set ``name`` and implement ``_per_sample(logits, logp, targets, weights, ids)``; they
    may override ``_mean`` with an algebraically equal but more exact form.
    """

    name: str = ""

    def forward(
        self, logits: Tensor, targets: Tensor, *, weights: Tensor | None = None, ids: Tensor | None = None
    ) -> Tensor:
        """Mean loss over the batch (a scalar tensor)."""
        _check_batch(logits, targets, weights, ids)
        self._check_extra(logits, weights, ids)
        return self._mean(logits, F.log_softmax(logits, dim=1), targets, weights, ids)

    def per_sample(
        self, logits: Tensor, targets: Tensor, *, weights: Tensor | None = None, ids: Tensor | None = None
    ) -> Tensor:
        """Loss of each sample, shape (B,); ``forward`` is its mean."""
        _check_batch(logits, targets, weights, ids)
        self._check_extra(logits, weights, ids)
        return self._per_sample(logits, F.log_softmax(logits, dim=1), targets, weights, ids)

    @property
    def hparams(self) -> dict[str, float | int]:
        """The constructor's hyper-parameters (for logging and checkpoint metadata)."""
        return {k: getattr(self, k) for k in _hparam_params(type(self))}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.hparams.items())

    # hooks ------------------------------------------------------------------------------------------
    def _check_extra(self, logits: Tensor, weights: Tensor | None, ids: Tensor | None) -> None:
        pass

    def _per_sample(self, logits, logp, targets, weights, ids) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def _mean(self, logits, logp, targets, weights, ids) -> Tensor:
        return self._per_sample(logits, logp, targets, weights, ids).mean()


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

    def __init__(self, alpha: float = 0.3) -> None:
        super().__init__()
        self.alpha = _check_real(self.name, "alpha", alpha, low=0.0)

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
        return F.nll_loss(logp, targets, reduction="none") - self.alpha * s * _entropy(logp)

    def _mean(self, logits, logp, targets, weights, ids) -> Tensor:
        s = weights.to(logp.dtype)
        return F.nll_loss(logp, targets) - self.alpha * (s * _entropy(logp)).mean()


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

    def __init__(self, epsilon: float = 0.1) -> None:
        super().__init__()
        self.epsilon = _check_real(self.name, "epsilon", epsilon, low=0.0, high=1.0)

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

    def __init__(self, gamma: float = 2.0) -> None:
        super().__init__()
        self.gamma = _check_real(self.name, "gamma", gamma, low=0.0)

    def _per_sample(self, logits, logp, targets, weights, ids) -> Tensor:
        log_pt = _log_pt(logp, targets)
        q = _one_minus_pt(log_pt).clamp_min(torch.finfo(logp.dtype).tiny)
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

    def __init__(self, lam: float = 0.01) -> None:
        super().__init__()
        self.lam = _check_real(self.name, "lam", lam, low=0.0)

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

    def __init__(self, beta: float = 0.3) -> None:
        super().__init__()
        self.beta = _check_real(self.name, "beta", beta, low=0.0)

    def _per_sample(self, logits, logp, targets, weights, ids) -> Tensor:
        return F.nll_loss(logp, targets, reduction="none") - self.beta * _entropy(logp)

    def _mean(self, logits, logp, targets, weights, ids) -> Tensor:
        # same expression as ProposedLoss._mean with s = 1, so the two agree bit for bit
        return F.nll_loss(logp, targets) - self.beta * _entropy(logp).mean()


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

    def __init__(self, epsilon: float = 1.0) -> None:
        super().__init__()
        self.epsilon = _check_real(self.name, "epsilon", epsilon, low=-1.0)

    def _per_sample(self, logits, logp, targets, weights, ids) -> Tensor:
        return F.nll_loss(logp, targets, reduction="none") + self.epsilon * _one_minus_pt(
            _log_pt(logp, targets)
        )

    def _mean(self, logits, logp, targets, weights, ids) -> Tensor:
        return F.nll_loss(logp, targets) + self.epsilon * _one_minus_pt(_log_pt(logp, targets)).mean()


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

    def __init__(self, num_samples: int, lam: float = 1.0) -> None:
        super().__init__()
        if isinstance(num_samples, bool) or not isinstance(num_samples, numbers.Integral) or num_samples < 1:
            raise ValueError(
                f"loss 'crl': num_samples must be an int >= 1 (the training-set size), got {num_samples!r}"
            )
        self.num_samples = int(num_samples)
        self.lam = _check_real(self.name, "lam", lam, low=0.0)
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


# ----------------------------------------------------------------------------------------------------


def build_loss(name: str, **hparams: object) -> ClassificationLoss:
    """Build the loss registered as ``name`` with its hyper-parameters.

    Parameters
    ----------
    name : str
        One of ``LOSSES.names()``: ce, crl, entropy_reg, focal, l1_norm, label_smoothing, poly1,
        proposed.
    **hparams
        The loss's constructor arguments (see each class); unknown names raise ValueError listing
        the valid ones, and out-of-range values raise ValueError giving the valid range.

    Examples
    --------
    >>> build_loss("focal", gamma=3.0)
    FocalLoss(gamma=3.0)
    """
    cls = LOSSES.get(name)
    params = _hparam_params(cls)
    unknown = sorted(set(hparams) - set(params))
    if unknown:
        valid = ", ".join(params) or "none"
        raise ValueError(f"loss {name!r} got unknown hyper-parameter(s) {', '.join(unknown)}; valid: {valid}")
    missing = [k for k, p in params.items() if p.default is inspect.Parameter.empty and k not in hparams]
    if missing:
        raise ValueError(f"loss {name!r} needs hyper-parameter(s): {', '.join(missing)}")
    return cls(**hparams)

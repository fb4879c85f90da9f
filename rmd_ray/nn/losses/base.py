"""The :data:`LOSSES` registry, the :class:`ClassificationLoss` base class, hyper-parameter and batch
validation, the shared log-softmax pieces and :func:`build_loss`.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rmd_ray.core.registry import Registry

LOSSES: Registry[type[ClassificationLoss]] = Registry("loss")


# ----------------------------------------------------------------------------------------------------
# validation helpers


def _interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
    lo = "(" if low_open else "["
    hi = ")" if high_open or high == math.inf else "]"
    fmt = lambda v: "inf" if v == math.inf else f"{v:g}"  # noqa: E731
    return f"{lo}{fmt(low)}, {fmt(high)}{hi}"


@dataclass(frozen=True)
class Interval:
    """The valid range of one real hyper-parameter: [low, high], either end open.

    Declared once per loss (``ClassificationLoss.hparam_ranges``): the constructor checks values
    against it and the tuning schema (``rmd_ray.nn.search_space``) reads it, so a search space
    cannot accept a value that the loss would reject.
    """

    low: float
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        v = float(value)
        above = v > self.low if self.low_open else v >= self.low
        below = v < self.high if self.high_open else v <= self.high
        return math.isfinite(v) and above and below

    def __str__(self) -> str:
        return _interval(self.low, self.high, self.low_open, self.high_open)


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


def entropy(logp: Tensor) -> Tensor:
    # exp(log p) * log p is 0 * (large negative) = 0 for vanishing classes: no NaN, no eps
    return -(logp.exp() * logp).sum(dim=1)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Predictive entropy H(p) = -sum_k p_k log p_k with p = softmax(logits), shape (B, K) -> (B,).

    Computed from ``F.log_softmax``; a uniform distribution gives log K.
    """
    if not isinstance(logits, Tensor) or not logits.is_floating_point() or logits.ndim != 2:
        raise ValueError("logits must be a floating-point tensor of shape (B, K)")
    return entropy(F.log_softmax(logits, dim=1))


def log_p_target(logp: Tensor, targets: Tensor) -> Tensor:
    return logp.gather(1, targets[:, None]).squeeze(1)


def one_minus_pt(log_pt: Tensor) -> Tensor:
    # 1 - p_t = -expm1(log p_t) keeps precision when p_t -> 1 (where 1 - exp() cancels)
    return -torch.expm1(log_pt)


class ClassificationLoss(nn.Module):
    """Base class: validates the batch once, then calls ``_per_sample`` / ``_mean`` on valid input.

    Subclasses set ``name`` and implement ``_per_sample(logits, logp, targets, weights, ids)``; they
    may override ``_mean`` with an algebraically equal but more exact form.
    """

    name: str = ""
    #: Valid range of each tunable hyper-parameter (constructor argument), see :class:`Interval`.
    #: Arguments that are not tuned (``crl``'s ``num_samples``, filled in from the data) are absent.
    hparam_ranges: ClassVar[Mapping[str, Interval]] = {}
    #: Whether the loss reads the per-sample difficulty weights s (and so needs cached scores).
    needs_weights: ClassVar[bool] = False

    def _real(self, name: str, value: object) -> float:
        """``value`` checked against ``hparam_ranges[name]``, as a float (for constructors)."""
        iv = self.hparam_ranges[name]
        return _check_real(
            self.name, name, value, low=iv.low, high=iv.high, low_open=iv.low_open, high_open=iv.high_open
        )

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


def tunable_hparams() -> dict[str, dict[str, Interval]]:
    """Every registered loss and its tunable hyper-parameters with their valid ranges.

    The one table of which loss reads which hyper-parameter, derived from the registry; the tuning
    schema builds its per-family parameters from it.

    Returns
    -------
    dict
        ``{loss name: {hyper-parameter name: Interval}}``; ``ce`` maps to ``{}``.

    Examples
    --------
    >>> tunable_hparams()["focal"]
    {'gamma': Interval(low=0.0, high=inf, low_open=False, high_open=False)}
    """
    return {name: dict(LOSSES.get(name).hparam_ranges) for name in LOSSES.names()}


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

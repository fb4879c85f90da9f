"""Training losses: the paper's difficulty-weighted entropy regulariser and the baselines it compares with.

Every loss is an ``nn.Module`` registered in ``LOSSES`` and built with ``build_loss(name, **hparams)``;
hyper-parameters are validated at construction against the ranges each loss declares
(``hparam_ranges``), which :func:`tunable_hparams` collects into one table for the tuning schema.
All share one call signature::

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

Submodules: :mod:`~rmd_ray.nn.losses.base` (the :data:`LOSSES` registry, :class:`ClassificationLoss`,
validation, shared pieces, :func:`build_loss`), :mod:`~rmd_ray.nn.losses.proposed` (the paper's loss),
:mod:`~rmd_ray.nn.losses.baselines` (ce, label smoothing, focal, L1 norm, entropy regularisation, poly1) and
:mod:`~rmd_ray.nn.losses.crl` (correctness ranking loss).
"""

from __future__ import annotations

# Every loss module is imported here, in the original file's order, so that its losses register.
# isort: off
from rmd_ray.nn.losses.base import (
    ClassificationLoss as ClassificationLoss,
    Interval as Interval,
    LOSSES as LOSSES,
    build_loss as build_loss,
    entropy_from_logits as entropy_from_logits,
    tunable_hparams as tunable_hparams,
)
from rmd_ray.nn.losses.proposed import (
    ProposedLoss as ProposedLoss,
)
from rmd_ray.nn.losses.baselines import (
    CrossEntropyLoss as CrossEntropyLoss,
    EntropyRegLoss as EntropyRegLoss,
    FocalLoss as FocalLoss,
    L1NormLoss as L1NormLoss,
    LabelSmoothingLoss as LabelSmoothingLoss,
    Poly1Loss as Poly1Loss,
)
from rmd_ray.nn.losses.crl import (
    CorrectnessRankingLoss as CorrectnessRankingLoss,
)
# isort: on

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
    "Interval",
    "build_loss",
    "entropy_from_logits",
    "tunable_hparams",
]

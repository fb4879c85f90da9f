"""The catalogue of tunable parameters: what each loss family reads, and which values are valid.

Every trial reads the training parameters in :data:`TRAINING`; each loss family reads its own
hyper-parameters, named and ranged as its constructor takes them (``rmd_ray.nn.losses.tunable_hparams``),
and a loss that reads difficulty weights also reads :data:`WEIGHT_PARAMETERS` (:data:`FAMILIES` holds
the table). :mod:`rmd_ray.nn.search_space` validates a search-space file against it, and a Tune trial
picks its loss's own values with :func:`own_values`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rmd_ray.core.difficulty import DIFFICULTY_SOURCES
from rmd_ray.core.weights import NORMALIZATIONS
from rmd_ray.nn.losses import LOSSES, tunable_hparams
from rmd_ray.nn.models import MIN_WIDTH, MODELS

__all__ = [
    "FAMILIES",
    "TRAINING",
    "WEIGHT_PARAMETERS",
    "Parameter",
    "family_parameters",
    "is_known",
    "known_keys",
    "own_values",
    "qualified_key",
    "readers",
]


@dataclass(frozen=True)
class Parameter:
    """What values one tunable parameter takes.

    ``kind`` is ``"float"``, ``"int"`` or ``"name"``; numbers lie in [low, high] (either end open),
    names in ``names`` (None: any non-empty name, e.g. a backbone matched to ``--scores`` later).
    """

    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    names: tuple[str, ...] | None = None

    def range(self) -> str:
        """The valid range in interval notation, e.g. ``[0, 1)``."""
        lo, hi = ("(" if self.low_open else "["), (")" if self.high_open or self.high == math.inf else "]")
        return f"{lo}{self.low:g}, {self.high:g}{hi}"

    def contains(self, value: float) -> bool:
        """Whether the number ``value`` lies in the valid range."""
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below


# Read by every trial, whatever its loss (rmd_ray.distributed.tuning.run.trial_train_config).
TRAINING: dict[str, Parameter] = {
    "loss": Parameter("name", names=tuple(LOSSES.names())),
    "lr": Parameter("float", 1e-6, 10.0),
    "weight_decay": Parameter("float", 0.0, 1.0),
    "batch_size": Parameter("int", 1, 8192),
    "epochs": Parameter("int", 1, 10_000),
    "model": Parameter("name", names=tuple(MODELS.names())),
    "width": Parameter("float", MIN_WIDTH, 16.0),
}
# Read by a loss that reads difficulty weights: whose cached scores, and WeightConfig's fields.
WEIGHT_PARAMETERS: dict[str, Parameter] = {
    "backbone": Parameter("name"),
    "temperature": Parameter("float", 1e-3, 100.0),
    "c": Parameter("float", 1e-9, 1.0),
    "normalization": Parameter("name", names=tuple(NORMALIZATIONS.names())),
    "difficulty": Parameter("name", names=tuple(DIFFICULTY_SOURCES.names())),
}


def family_parameters() -> dict[str, dict[str, Parameter]]:
    """Each loss family and the parameters it reads besides :data:`TRAINING`.

    Derived from the loss registry (names and valid ranges as the constructors take them) plus
    :data:`WEIGHT_PARAMETERS` for the losses that read difficulty weights.
    """
    table = {}
    for family, ranges in tunable_hparams().items():
        own = {
            name: Parameter("float", iv.low, iv.high, low_open=iv.low_open, high_open=iv.high_open)
            for name, iv in ranges.items()
        }
        if LOSSES.get(family).needs_weights:
            own.update(WEIGHT_PARAMETERS)
        table[family] = dict(sorted(own.items()))
    return table
FAMILIES: dict[str, dict[str, Parameter]] = family_parameters()


def readers(name: str) -> list[str]:
    """The loss families that read ``name`` (every family for a :data:`TRAINING` parameter)."""
    if name in TRAINING:
        return sorted(FAMILIES)
    return sorted(f for f, own in FAMILIES.items() if name in own)


def qualified_key(key: str) -> tuple[str, str] | None:
    """``(family, name)`` for a ``<loss>.<name>`` key of a name two or more families read, else None."""
    family, dot, name = key.partition(".")
    if dot and family in FAMILIES and name in FAMILIES[family] and len(readers(name)) > 1:
        return family, name
    return None


def own_values(trial: Mapping[str, Any], family: str) -> dict[str, Any]:
    """The values ``family`` reads from ``trial`` (a trial's config): its own parameters only.

    ``<family>.<name>`` wins over a plain ``<name>``; other families' parameters are left out.
    """
    out = {name: trial[name] for name in FAMILIES[family] if name in trial}
    out.update({name: trial[f"{family}.{name}"] for name in FAMILIES[family] if f"{family}.{name}" in trial})
    return out


def known_keys() -> str:
    """The valid parameter keys, for error messages: training keys, then each family's own."""
    own = "; ".join(f"{f}: {', '.join(p) or '(nothing)'}" for f, p in FAMILIES.items())
    shared = sorted({n for p in FAMILIES.values() for n in p if len(readers(n)) > 1})
    return (
        f"every loss reads {', '.join(sorted(TRAINING))}; {own}"
        f" (a name several losses read may be given per loss as <loss>.<name>: {', '.join(shared)})"
    )


def is_known(key: str) -> bool:
    """Whether some loss reads ``key`` (a training parameter, a family's own, or ``<loss>.<name>``)."""
    return key in TRAINING or bool(readers(key)) or qualified_key(key) is not None

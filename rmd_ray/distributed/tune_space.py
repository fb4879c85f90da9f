"""Search spaces for Ray Tune, read from ``tune_spaces/*.yaml`` and validated before any trial runs.

Format (every key is checked; an unknown key or a bad range is an error that names it)::

    name: cifar10_alpha_t            # experiment name (letters, digits, _ and -)
    objectives:                      # what the multi-objective searcher optimises
      ece_mass: min
      acc: max
    scheduler_metric: {name: val_nll, mode: min}   # the scalar ASHA stops trials on
    num_samples: 16                  # trials
    max_concurrent_trials: 1         # 1 on small machines: a 2-worker trial inside Tune can starve otherwise
    grace_period: 2                  # ASHA: epochs every trial runs before it may be stopped
    search:                          # the sampled parameters
      alpha:       {type: uniform, low: 0.0, high: 0.5}
      temperature: {type: loguniform, low: 0.1, high: 5.0}
      backbone:    {type: choice, values: [efficientnet_lite0]}
      loss:        {type: choice, values: [proposed, entropy_reg, ce]}
      lr:          {type: loguniform, low: 0.01, high: 0.3}
    fixed:                           # passed to every trial unchanged
      model: resnet18
      width: 0.25
      epochs: 10

Distribution types: ``uniform`` / ``loguniform`` (``low`` < ``high``; loguniform needs ``low`` > 0),
``randint`` (integers in [low, high)), ``choice`` (non-empty ``values``). Known parameter names and
their valid ranges are in :data:`PARAMETERS`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# name -> (kind, valid low, valid high); kind "float", "int" or "name"
PARAMETERS: dict[str, tuple[str, float | None, float | None]] = {
    "alpha": ("float", 0.0, 0.5),
    "temperature": ("float", 1e-3, 100.0),
    "c": ("float", 1e-9, 1.0),
    "lr": ("float", 1e-6, 10.0),
    "weight_decay": ("float", 0.0, 1.0),
    "label_smoothing": ("float", 0.0, 1.0),
    "focal_gamma": ("float", 0.0, 10.0),
    "beta": ("float", 0.0, 5.0),
    "batch_size": ("int", 1, 8192),
    "epochs": ("int", 1, 10_000),
    "backbone": ("name", None, None),
    "loss": ("name", None, None),
    "normalization": ("name", None, None),
    "shrinkage": ("name", None, None),
}
TOP_LEVEL = {"name", "objectives", "scheduler_metric", "num_samples", "max_concurrent_trials", "grace_period",
             "search", "fixed"}
DISTRIBUTIONS = {"uniform": {"low", "high"}, "loguniform": {"low", "high"}, "randint": {"low", "high"},
                 "choice": {"values"}}
METRICS = {"acc", "ece_mass", "ece_width", "nll", "brier", "aurc", "val_nll", "val_loss", "train_loss"}


@dataclass(frozen=True)
class Distribution:
    """One sampled parameter: ``kind`` in DISTRIBUTIONS and its bounds or values."""

    kind: str
    low: float | None = None
    high: float | None = None
    values: tuple[Any, ...] = ()


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space (see the module docstring for the file format)."""

    name: str
    objectives: tuple[tuple[str, str], ...]
    scheduler_metric: tuple[str, str]
    num_samples: int
    max_concurrent_trials: int
    grace_period: int
    search: tuple[tuple[str, Distribution], ...]
    fixed: tuple[tuple[str, Any], ...]

    def parameter(self, name: str) -> Distribution:
        return dict(self.search)[name]


def _fail(where: str, message: str) -> ValueError:
    return ValueError(f"{where}: {message}")


def _check_mode(where: str, mode: Any) -> str:
    if mode not in ("min", "max"):
        raise _fail(where, f"mode must be 'min' or 'max', got {mode!r}")
    return mode


def _check_value(where: str, name: str, value: Any) -> None:
    kind, lo, hi = PARAMETERS[name]
    if kind == "name":
        if not isinstance(value, str) or not value:
            raise _fail(where, f"{name} values must be non-empty names, got {value!r}")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(where, f"{name} must be a finite number, got {value!r}")
    if kind == "int" and int(value) != value:
        raise _fail(where, f"{name} must be an integer, got {value!r}")
    if not (lo <= value <= hi):
        raise _fail(where, f"{name} = {value!r} is outside its valid range [{lo}, {hi}]")


def _distribution(where: str, name: str, spec: Any) -> Distribution:
    if name not in PARAMETERS:
        raise _fail(where, f"unknown parameter {name!r}; known: {', '.join(sorted(PARAMETERS))}")
    if not isinstance(spec, dict) or "type" not in spec:
        raise _fail(where, "give a mapping with a 'type' (uniform, loguniform, randint or choice)")
    kind = spec["type"]
    if kind not in DISTRIBUTIONS:
        raise _fail(where, f"unknown type {kind!r}; valid: {', '.join(sorted(DISTRIBUTIONS))}")
    extra = set(spec) - DISTRIBUTIONS[kind] - {"type"}
    missing = DISTRIBUTIONS[kind] - set(spec)
    if extra:
        raise _fail(where, f"unknown key(s) {sorted(extra)} for type {kind!r}")
    if missing:
        raise _fail(where, f"type {kind!r} needs {sorted(missing)}")
    if kind == "choice":
        values = spec["values"]
        if not isinstance(values, list) or not values:
            raise _fail(where, "values must be a non-empty list")
        for v in values:
            _check_value(where, name, v)
        return Distribution(kind, values=tuple(values))
    if PARAMETERS[name][0] == "name":
        raise _fail(where, f"{name} takes names: use type 'choice'")
    low, high = spec["low"], spec["high"]
    _check_value(f"{where}.low", name, low)
    _check_value(f"{where}.high", name, high)
    if not low < high:
        raise _fail(where, f"low ({low}) must be below high ({high})")
    if kind == "loguniform" and low <= 0:
        raise _fail(where, f"loguniform needs low > 0, got {low}")
    if kind == "randint" and PARAMETERS[name][0] != "int":
        raise _fail(where, f"randint is for integer parameters; {name} is a float: use uniform")
    return Distribution(kind, low=float(low), high=float(high))


def _positive_int(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(where, f"must be an integer >= 1, got {value!r}")
    return value


def parse_search_space(raw: dict[str, Any], *, source: str = "search space") -> SearchSpace:
    """Validate a search-space mapping (the parsed YAML) and return a :class:`SearchSpace`."""
    if not isinstance(raw, dict):
        raise _fail(source, "the file must hold a mapping at the top level")
    unknown = set(raw) - TOP_LEVEL
    if unknown:
        raise _fail(source, f"unknown key(s) {sorted(unknown)}; valid: {', '.join(sorted(TOP_LEVEL))}")
    for key in ("name", "objectives", "search"):
        if key not in raw:
            raise _fail(source, f"missing required key {key!r}")
    name = raw["name"]
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise _fail(f"{source}.name", f"use letters, digits, '_' and '-' only, got {name!r}")
    objectives = raw["objectives"]
    if not isinstance(objectives, dict) or not objectives:
        raise _fail(f"{source}.objectives", "give at least one 'metric: min|max'")
    for metric, mode in objectives.items():
        if metric not in METRICS:
            raise _fail(f"{source}.objectives", f"unknown metric {metric!r}; valid: {', '.join(sorted(METRICS))}")
        _check_mode(f"{source}.objectives.{metric}", mode)
    sched = raw.get("scheduler_metric", {"name": "val_nll", "mode": "min"})
    if not isinstance(sched, dict) or set(sched) != {"name", "mode"}:
        raise _fail(f"{source}.scheduler_metric", "give {name: <metric>, mode: min|max}")
    if sched["name"] not in METRICS:
        raise _fail(f"{source}.scheduler_metric", f"unknown metric {sched['name']!r}")
    _check_mode(f"{source}.scheduler_metric", sched["mode"])
    search = raw["search"]
    if not isinstance(search, dict) or not search:
        raise _fail(f"{source}.search", "give at least one parameter to search")
    dists = tuple((k, _distribution(f"{source}.search.{k}", k, v)) for k, v in search.items())
    fixed = raw.get("fixed", {}) or {}
    if not isinstance(fixed, dict):
        raise _fail(f"{source}.fixed", "must be a mapping")
    clash = set(fixed) & set(search)
    if clash:
        raise _fail(f"{source}.fixed", f"{sorted(clash)} are both fixed and searched; keep one")
    for k, v in fixed.items():
        if k in PARAMETERS:
            _check_value(f"{source}.fixed.{k}", k, v)
    return SearchSpace(
        name=name,
        objectives=tuple(objectives.items()),
        scheduler_metric=(sched["name"], sched["mode"]),
        num_samples=_positive_int(f"{source}.num_samples", raw.get("num_samples", 8)),
        max_concurrent_trials=_positive_int(f"{source}.max_concurrent_trials", raw.get("max_concurrent_trials", 1)),
        grace_period=_positive_int(f"{source}.grace_period", raw.get("grace_period", 1)),
        search=dists,
        fixed=tuple(sorted(fixed.items())),
    )


def load_search_space(path: str | Path) -> SearchSpace:
    """Read and validate a ``tune_spaces/*.yaml`` file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"search space file {str(path)!r} not found")
    return parse_search_space(yaml.safe_load(path.read_text()), source=path.name)

"""Search spaces for Ray Tune, read from ``tune_spaces/*.yaml`` and validated before any trial runs.

Format (every key is checked; an unknown key, a key no loss in the space reads, or a bad range is an
error that names it)::

    name: cifar10_alpha_t            # experiment name (letters, digits, _ and -)
    objectives:                      # what the multi-objective searcher optimises
      ece_mass: min
      acc: max
    scheduler_metric: {name: val_nll, mode: min}   # the scalar ASHA stops trials on
    num_samples: 16                  # trials
    max_concurrent_trials: 1         # 1 on small machines: a 2-worker trial inside Tune can starve otherwise
    grace_period: 2                  # ASHA: epochs every trial runs before it may be stopped
    search:                          # the sampled parameters
      loss:        {type: choice, values: [proposed, entropy_reg, ce]}
      alpha:       {type: uniform, low: 0.0, high: 0.5}       # read by proposed
      temperature: {type: loguniform, low: 0.1, high: 5.0}    # read by proposed
      beta:        {type: uniform, low: 0.0, high: 0.5}       # read by entropy_reg
      lr:          {type: loguniform, low: 0.01, high: 0.3}   # read by every loss
    fixed:                           # passed to every trial unchanged
      backbone: efficientnet_lite0   # whose cached scores give proposed's weights
      model: resnet18
      width: 0.25
      epochs: 10

Distribution types: ``uniform`` / ``loguniform`` (``low`` < ``high``; loguniform needs ``low`` > 0),
``randint`` (integers in [low, high)), ``choice`` (non-empty ``values``).

Which loss reads what: every trial reads the training parameters in :data:`TRAINING` (``loss``,
``lr``, ``weight_decay``, ``batch_size``, ``epochs``, ``model``, ``width``); each loss family reads
its own hyper-parameters, named and ranged as its constructor takes them
(``rmd_ray.nn.losses.tunable_hparams``), and a loss that reads difficulty weights (``proposed``) also
reads :data:`WEIGHT_PARAMETERS` (``backbone``, ``temperature``, ``c``, ``normalization``,
``difficulty``: the source of the weights, ``rmd_ray.core.difficulty``)::

    proposed         alpha, backbone, c, difficulty, normalization, temperature
    entropy_reg      beta
    label_smoothing  epsilon
    focal            gamma
    poly1            epsilon
    l1_norm          lam
    crl              lam
    ce               (nothing)

The space names its loss (``loss`` under ``search`` or ``fixed``), and a key that no loss in the space
reads is an error (``beta`` with only ``proposed`` and ``ce``, ``alpha`` with a fixed ``focal``). A
space with a loss that reads weights must name its ``backbone``; one without needs neither a backbone
nor cached scores. A name read by two families (``epsilon``: label_smoothing and poly1; ``lam``:
l1_norm and crl) set plainly is one value for both, valid for each; ``<loss>.<name>``
(``poly1.epsilon``) sets one family's own and then the plain key is not read by that family.

The parameter catalogue itself (:class:`Parameter`, :data:`TRAINING`, :data:`FAMILIES`, ...) lives in
:mod:`rmd_ray.nn.search_params`; the names other modules use are re-exported here.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rmd_ray.nn.losses import LOSSES
from rmd_ray.nn.search_params import (
    FAMILIES,
    TRAINING,
    WEIGHT_PARAMETERS,
    Parameter,
    family_parameters,
    is_known,
    known_keys,
    own_values,
    qualified_key,
    readers,
)

__all__ = [
    "DISTRIBUTIONS",
    "FAMILIES",
    "METRICS",
    "TOP_LEVEL",
    "TRAINING",
    "WEIGHT_PARAMETERS",
    "Distribution",
    "Parameter",
    "SearchSpace",
    "family_parameters",
    "is_known",
    "known_keys",
    "load_search_space",
    "own_values",
    "parse_search_space",
    "readers",
]

TOP_LEVEL = {"name", "objectives", "scheduler_metric", "num_samples", "max_concurrent_trials", "grace_period",
             "search", "fixed"}
DISTRIBUTIONS = {"uniform": {"low", "high"}, "loguniform": {"low", "high"}, "randint": {"low", "high"},
                 "choice": {"values"}}
METRICS = {"acc", "ece_mass", "ece_width", "nll", "brier", "aurc", "val_nll", "val_loss", "train_loss"}


def _check_known(where: str, key: str) -> None:
    if is_known(key):
        return
    family, dot, name = key.partition(".")
    if dot and family in FAMILIES and name in FAMILIES[family]:
        raise _fail(where, f"only {family} reads {name}: write {name!r}, not {key!r}")
    raise _fail(where, f"unknown parameter {key!r}; valid: {known_keys()}")


@dataclass(frozen=True)
class Distribution:
    """One sampled parameter: ``kind`` in DISTRIBUTIONS and its bounds or values."""

    kind: str
    low: float | None = None
    high: float | None = None
    values: tuple[Any, ...] = ()


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space (see the module docstring for the file format).

    ``losses`` are the loss families its trials train with (the ``loss`` choice or the fixed one).
    """

    name: str
    objectives: tuple[tuple[str, str], ...]
    scheduler_metric: tuple[str, str]
    num_samples: int
    max_concurrent_trials: int
    grace_period: int
    search: tuple[tuple[str, Distribution], ...]
    fixed: tuple[tuple[str, Any], ...]
    losses: tuple[str, ...] = ()

    def parameter(self, name: str) -> Distribution:
        return dict(self.search)[name]

    @property
    def needs_weights(self) -> bool:
        """Whether some loss in the space reads difficulty weights (and so cached scores)."""
        return any(LOSSES.get(f).needs_weights for f in self.losses)

    @property
    def backbones(self) -> tuple[str, ...]:
        """The backbones whose cached scores the trials read; empty when no loss reads weights."""
        if not self.needs_weights:
            return ()
        search, fixed = dict(self.search), dict(self.fixed)
        return tuple(search["backbone"].values) if "backbone" in search else (fixed["backbone"],)


def _fail(where: str, message: str) -> ValueError:
    return ValueError(f"{where}: {message}")


def _check_mode(where: str, mode: Any) -> str:
    if mode not in ("min", "max"):
        raise _fail(where, f"mode must be 'min' or 'max', got {mode!r}")
    return mode


def _parameters(key: str, losses: tuple[str, ...]) -> list[tuple[str | None, Parameter]]:
    """(family, Parameter) for every loss in the space that reads ``key``; family None for TRAINING."""
    if key in TRAINING:
        return [(None, TRAINING[key])]
    qualified = qualified_key(key)
    if qualified:
        return [(qualified[0], FAMILIES[qualified[0]][qualified[1]])]
    return [(f, FAMILIES[f][key]) for f in losses if key in FAMILIES[f]]


def _check_value(where: str, name: str, value: Any, param: Parameter, family: str | None = None) -> None:
    if param.kind == "name":
        if not isinstance(value, str) or not value:
            raise _fail(where, f"{name} values must be non-empty names, got {value!r}")
        if param.names is not None and value not in param.names:
            raise _fail(where, f"unknown {name} {value!r}; valid: {', '.join(param.names)}")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(where, f"{name} must be a finite number, got {value!r}")
    if param.kind == "int" and int(value) != value:
        raise _fail(where, f"{name} must be an integer, got {value!r}")
    if not param.contains(value):
        of = f" for {family}" if family else ""
        raise _fail(where, f"{name} = {value!r} is outside its valid range {param.range()}{of}")


def _check_all(where: str, key: str, value: Any, params: list[tuple[str | None, Parameter]]) -> None:
    # a plain key read by several losses in the space is one value for all: valid for each
    for family, param in params:
        _check_value(where, key, value, param, family)


def _distribution(where: str, key: str, spec: Any, params: list[tuple[str | None, Parameter]]) -> Distribution:
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
            _check_all(where, key, v, params)
        return Distribution(kind, values=tuple(values))
    param_kind = params[0][1].kind
    if param_kind == "name":
        raise _fail(where, f"{key} takes names: use type 'choice'")
    low, high = spec["low"], spec["high"]
    _check_all(f"{where}.low", key, low, params)
    _check_all(f"{where}.high", key, high, params)
    if not low < high:
        raise _fail(where, f"low ({low}) must be below high ({high})")
    if kind == "loguniform" and low <= 0:
        raise _fail(where, f"loguniform needs low > 0, got {low}")
    if kind == "randint" and param_kind != "int":
        raise _fail(where, f"randint is for integer parameters; {key} is a float: use uniform")
    return Distribution(kind, low=float(low), high=float(high))


def _space_losses(source: str, search: dict[str, Any], fixed: dict[str, Any]) -> tuple[str, ...]:
    """The loss families of the space, validated: the ``loss`` choice, or the fixed loss."""
    names = tuple(TRAINING["loss"].names or ())
    if "loss" in search:
        spec = search["loss"]
        where = f"{source}.search.loss"
        if not isinstance(spec, dict) or spec.get("type") != "choice":
            raise _fail(where, "loss takes names: use type 'choice'")
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise _fail(where, "values must be a non-empty list")
    elif "loss" in fixed:
        where, values = f"{source}.fixed.loss", [fixed["loss"]]
    else:
        raise _fail(
            source,
            "name the loss its trials train with: `loss: <name>` under fixed, or "
            f"`loss: {{type: choice, values: [...]}}` under search (losses: {', '.join(names)})",
        )
    for value in values:
        _check_value(where, "loss", value, TRAINING["loss"])
    return tuple(dict.fromkeys(values))


def _check_read(where: str, key: str, losses: tuple[str, ...], keys: set[str]) -> None:
    """A key no loss in the space reads is an error naming the key, the space's losses and its readers."""
    if key in TRAINING:
        return
    qualified = qualified_key(key)
    if qualified:
        family, name = qualified
        if family not in losses:
            raise _fail(
                where,
                f"no loss in this space reads {key} (losses: {', '.join(losses)}); {key} is read by {family}",
            )
        return
    # a family given <family>.<key> reads that instead of the plain key
    reading = [f for f in losses if key in FAMILIES[f] and f"{f}.{key}" not in keys]
    if not reading:
        overridden = [f for f in losses if key in FAMILIES[f]]
        instead = "".join(f"; {f} reads {f}.{key} instead" for f in overridden)
        raise _fail(
            where,
            f"no loss in this space reads {key} (losses: {', '.join(losses)}{instead}); "
            f"{key} is read by {', '.join(readers(key))}",
        )


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
    fixed = raw.get("fixed", {}) or {}
    if not isinstance(fixed, dict):
        raise _fail(f"{source}.fixed", "must be a mapping")
    clash = set(fixed) & set(search)
    if clash:
        raise _fail(f"{source}.fixed", f"{sorted(clash)} are both fixed and searched; keep one")
    places = [(f"{source}.search.{k}", k) for k in search] + [(f"{source}.fixed.{k}", k) for k in fixed]
    for where, key in places:
        _check_known(where, key)
    losses = _space_losses(source, search, fixed)
    keys = set(search) | set(fixed)
    for where, key in places:
        _check_read(where, key, losses, keys)
    weighted = [f for f in losses if LOSSES.get(f).needs_weights]
    if weighted and "backbone" not in keys:
        raise _fail(
            source,
            f"{', '.join(weighted)} reads difficulty weights from cached scores: name them with "
            "`backbone: <name>` under fixed (or a backbone choice under search), the NAME of "
            "--scores NAME=scores.parquet",
        )
    dists = tuple(
        (k, _distribution(f"{source}.search.{k}", k, v, _parameters(k, losses))) for k, v in search.items()
    )
    for k, v in fixed.items():
        _check_all(f"{source}.fixed.{k}", k, v, _parameters(k, losses))
    return SearchSpace(
        name=name,
        objectives=tuple(objectives.items()),
        scheduler_metric=(sched["name"], sched["mode"]),
        num_samples=_positive_int(f"{source}.num_samples", raw.get("num_samples", 8)),
        max_concurrent_trials=_positive_int(f"{source}.max_concurrent_trials", raw.get("max_concurrent_trials", 1)),
        grace_period=_positive_int(f"{source}.grace_period", raw.get("grace_period", 1)),
        search=dists,
        fixed=tuple(sorted(fixed.items())),
        losses=losses,
    )


def load_search_space(path: str | Path) -> SearchSpace:
    """Read and validate a ``tune_spaces/*.yaml`` file (a local path or a URI)."""
    import yaml

    from rmd_ray.io import storage

    path = str(path)
    if not storage.is_file(path):
        raise ValueError(f"search space file {path!r} not found")
    try:
        raw = yaml.safe_load(storage.read_bytes(path).decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"search space file {str(path)!r} is not text (not UTF-8): pass a YAML file") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        raise ValueError(
            f"search space file {str(path)!r} is not valid YAML: {problem}{where}; see tune_spaces/*.yaml"
        ) from None
    return parse_search_space(raw, source=storage.basename(path))

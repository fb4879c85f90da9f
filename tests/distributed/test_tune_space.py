"""Search-space files: the shipped ones load; every validation branch names the offending key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from rmd_ray.distributed.tune_space import load_search_space, parse_search_space

SPACES = sorted((Path(__file__).resolve().parents[2] / "tune_spaces").glob("*.yaml"))
GOOD = {
    "name": "t",
    "objectives": {"ece_mass": "min", "acc": "max"},
    "search": {"alpha": {"type": "uniform", "low": 0.0, "high": 0.5},
               "temperature": {"type": "loguniform", "low": 0.1, "high": 5.0},
               "loss": {"type": "choice", "values": ["proposed", "ce"]}},
    "fixed": {"epochs": 3},
}


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_shipped_spaces_are_valid(path):
    space = load_search_space(path)
    assert space.objectives and space.search and space.num_samples >= 1


def test_parsed_values():
    space = parse_search_space(GOOD)
    assert space.parameter("temperature").kind == "loguniform"
    assert (space.parameter("temperature").low, space.parameter("temperature").high) == (0.1, 5.0)
    assert space.parameter("loss").values == ("proposed", "ce")
    assert space.objectives == (("ece_mass", "min"), ("acc", "max"))
    assert space.scheduler_metric == ("val_nll", "min") and space.max_concurrent_trials == 1
    assert dict(space.fixed) == {"epochs": 3}


def variant(path, value):
    raw = copy.deepcopy(GOOD)
    node = raw
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return raw


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("colour",), 1, r"unknown key\(s\) \['colour'\]"),
        (("objectives",), KeyError, "missing required key 'objectives'"),
        (("name",), "bad name!", "t.name|letters, digits"),
        (("objectives", "ece"), "min", "unknown metric 'ece'"),
        (("objectives", "acc"), "up", "mode must be 'min' or 'max'"),
        (("search", "gamma"), {"type": "uniform", "low": 0, "high": 1}, "unknown parameter 'gamma'"),
        (("search", "alpha"), {"type": "normal", "low": 0, "high": 1}, "unknown type 'normal'"),
        (("search", "alpha"), {"type": "uniform", "low": 0.0}, r"needs \['high'\]"),
        (("search", "alpha"), {"type": "uniform", "low": 0.0, "high": 0.4, "q": 1}, r"unknown key\(s\) \['q'\]"),
        (("search", "alpha"), {"type": "uniform", "low": 0.0, "high": 0.9}, r"alpha = 0.9 is outside .*\[0.0, 0.5\]"),
        (("search", "alpha"), {"type": "uniform", "low": 0.4, "high": 0.1}, r"low \(0.4\) must be below high"),
        (("search", "temperature"), {"type": "loguniform", "low": 0.0, "high": 1.0}, "outside its valid range"),
        (("search", "loss"), {"type": "choice", "values": []}, "non-empty list"),
        (("search", "loss"), {"type": "uniform", "low": 0, "high": 1}, "takes names: use type 'choice'"),
        (("search", "alpha"), {"type": "randint", "low": 0, "high": 0.4}, "randint is for integer"),
        (("fixed", "alpha"), 0.2, r"both fixed and searched"),
        (("fixed", "epochs"), 0, r"epochs = 0 is outside"),
        (("num_samples",), 0, "num_samples: must be an integer >= 1"),
        (("scheduler_metric",), {"name": "acc"}, r"give \{name"),
    ],
)
def test_every_validation_branch_names_the_key(path, value, message):
    with pytest.raises(ValueError, match=message):
        parse_search_space(variant(path, value))


def test_missing_file():
    with pytest.raises(ValueError, match="not found"):
        load_search_space("/nonexistent/space.yaml")

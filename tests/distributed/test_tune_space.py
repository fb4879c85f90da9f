"""Search-space files: the shipped ones load; every validation branch names the offending key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from rmd_ray.nn.losses import LOSSES, tunable_hparams
from rmd_ray.nn.search_space import FAMILIES, load_search_space, own_values, parse_search_space

SPACES = sorted((Path(__file__).resolve().parents[2] / "tune_spaces").glob("*.yaml"))
GOOD = {
    "name": "t",
    "objectives": {"ece_mass": "min", "acc": "max"},
    "search": {"alpha": {"type": "uniform", "low": 0.0, "high": 0.5},
               "temperature": {"type": "loguniform", "low": 0.1, "high": 5.0},
               "loss": {"type": "choice", "values": ["proposed", "ce"]}},
    "fixed": {"epochs": 3, "backbone": "b"},
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
    assert dict(space.fixed) == {"epochs": 3, "backbone": "b"}
    assert space.losses == ("proposed", "ce") and space.needs_weights and space.backbones == ("b",)


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
        (("search", "gamma2"), {"type": "uniform", "low": 0, "high": 1}, "search.gamma2: unknown parameter 'gamma2'"),
        (("search", "alpha"), {"type": "normal", "low": 0, "high": 1}, "unknown type 'normal'"),
        (("search", "alpha"), {"type": "uniform", "low": 0.0}, r"needs \['high'\]"),
        (("search", "alpha"), {"type": "uniform", "low": 0.0, "high": 0.4, "q": 1}, r"unknown key\(s\) \['q'\]"),
        (("search", "alpha"), {"type": "uniform", "low": -0.1, "high": 0.9},
         r"search.alpha.low: alpha = -0.1 is outside its valid range \[0, inf\) for proposed"),
        (("search", "loss"), {"type": "choice", "values": ["proposed", "mse"]},
         r"search.loss: unknown loss 'mse'; valid: ce, crl, entropy_reg"),
        (("fixed", "colour"), 1, r"fixed.colour: unknown parameter 'colour'; valid: every loss reads"),
        (("fixed", "backbone"), KeyError, r"proposed reads difficulty weights from cached scores: name them with "
                                          r"`backbone: <name>`"),
        (("fixed", "model"), "resnet7", r"fixed.model: unknown model 'resnet7'; valid: .*resnet18"),
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


# ------------------------------------------------------------------ which loss reads which key

# a valid distribution for every family-specific key (ranges inside every family's that reads it)
SPECS = {
    "alpha": {"type": "uniform", "low": 0.0, "high": 0.5},
    "temperature": {"type": "loguniform", "low": 0.1, "high": 5.0},
    "c": {"type": "loguniform", "low": 1e-4, "high": 1e-2},
    "normalization": {"type": "choice", "values": ["minmax", "none"]},
    "difficulty": {"type": "choice", "values": ["rmd", "shuffled_rmd"]},
    "backbone": {"type": "choice", "values": ["a"]},
    "beta": {"type": "uniform", "low": 0.0, "high": 0.5},
    "epsilon": {"type": "uniform", "low": 0.0, "high": 0.3},
    "gamma": {"type": "uniform", "low": 0.0, "high": 5.0},
    "lam": {"type": "uniform", "low": 0.0, "high": 0.1},
}
OWN = sorted((family, key) for family, own in FAMILIES.items() for key in own)


def space(search, **fixed):
    return {"name": "t", "objectives": {"acc": "max"}, "search": search, "fixed": fixed}


def test_family_table_is_the_loss_registry_plus_weights():
    # names and ranges as the constructors take them (crl's num_samples is filled in, not tuned)
    assert {f: sorted(own) for f, own in FAMILIES.items()} == {
        "ce": [], "crl": ["lam"], "entropy_reg": ["beta"], "focal": ["gamma"], "l1_norm": ["lam"],
        "label_smoothing": ["epsilon"], "poly1": ["epsilon"],
        "proposed": ["alpha", "backbone", "c", "difficulty", "normalization", "temperature"],
    }
    for family, ranges in tunable_hparams().items():
        for key, interval in ranges.items():
            param = FAMILIES[family][key]
            assert (param.kind, param.low, param.high) == ("float", interval.low, interval.high)
    assert FAMILIES["label_smoothing"]["epsilon"].range() == "[0, 1]"
    assert FAMILIES["poly1"]["epsilon"].range() == "[-1, inf)"
    assert set(FAMILIES) == set(LOSSES.names())
    assert SPECS.keys() == {k for _, k in OWN}


@pytest.mark.parametrize(("family", "key"), OWN, ids=lambda v: str(v))
def test_an_unread_key_fails_for_each_family(family, key):
    # ce reads no hyper-parameter of its own: every family's key is unread in a ce-only space
    readers = ", ".join(sorted(f for f, own in FAMILIES.items() if key in own))
    message = rf"^search space.search.{key}: no loss in this space reads {key} \(losses: ce\); {key} is read by "
    message += rf"{readers}$"
    with pytest.raises(ValueError, match=message):
        parse_search_space(space({key: SPECS[key]}, loss="ce"))
    # the same key fixed instead of searched, beside a loss that does not read it either
    other = "focal" if family != "focal" else "entropy_reg"
    value = SPECS[key]["values"][0] if SPECS[key]["type"] == "choice" else SPECS[key]["low"] + 0.01
    with pytest.raises(ValueError, match=rf"fixed.{key}: no loss in this space reads {key} \(losses: {other}\)"):
        parse_search_space(space({"lr": {"type": "loguniform", "low": 0.01, "high": 0.1}}, loss=other, **{key: value}))
    # and the space is valid once the family that reads it is among its losses
    extra = {"backbone": "a"} if family == "proposed" and key != "backbone" else {}
    parsed = parse_search_space(space({key: SPECS[key], "loss": {"type": "choice", "values": [family, "ce"]}}, **extra))
    assert parsed.losses == (family, "ce")


def test_unread_key_messages_from_the_issue():
    with pytest.raises(
        ValueError,
        match=r"^search space.search.beta: no loss in this space reads beta \(losses: proposed, ce\); "
        r"beta is read by entropy_reg$",
    ):
        parse_search_space(space({"beta": SPECS["beta"], "loss": {"type": "choice", "values": ["proposed", "ce"]}},
                                 backbone="a"))
    with pytest.raises(ValueError, match=r"search.alpha: no loss in this space reads alpha \(losses: focal\)"):
        parse_search_space(space({"alpha": SPECS["alpha"]}, loss="focal"))


def test_per_loss_keys_for_shared_names():
    ls_poly = {"type": "choice", "values": ["label_smoothing", "poly1"]}
    # one plain epsilon is one value for both: valid for each (label smoothing's [0, 1] is the tighter)
    with pytest.raises(ValueError, match=r"epsilon = -0.5 is outside its valid range \[0, 1\] for label_smoothing"):
        parse_search_space(space({"loss": ls_poly, "epsilon": {"type": "uniform", "low": -0.5, "high": 0.3}}))
    assert parse_search_space(space({"epsilon": {"type": "uniform", "low": -0.5, "high": 0.3}}, loss="poly1"))
    # <loss>.<name> sets one family's own
    both = parse_search_space(space({"loss": ls_poly, "label_smoothing.epsilon": SPECS["epsilon"],
                                     "poly1.epsilon": {"type": "uniform", "low": -1.0, "high": 2.0}}))
    assert both.parameter("poly1.epsilon").low == -1.0
    with pytest.raises(ValueError, match=r"poly1.epsilon = -2 is outside its valid range \[-1, inf\) for poly1"):
        parse_search_space(space({"poly1.epsilon": {"type": "uniform", "low": -2, "high": 0}}, loss="poly1"))
    with pytest.raises(ValueError, match=r"search.crl.lam: no loss in this space reads crl.lam \(losses: l1_norm\); "
                                         r"crl.lam is read by crl"):
        parse_search_space(space({"crl.lam": SPECS["lam"]}, loss="l1_norm"))
    with pytest.raises(ValueError, match=r"search.epsilon: no loss in this space reads epsilon \(losses: poly1; poly1 "
                                         r"reads poly1.epsilon instead\); epsilon is read by label_smoothing, poly1"):
        parse_search_space(space({"epsilon": SPECS["epsilon"], "poly1.epsilon": SPECS["epsilon"]}, loss="poly1"))
    with pytest.raises(ValueError, match=r"search.focal.gamma: only focal reads gamma: write 'gamma'"):
        parse_search_space(space({"focal.gamma": SPECS["gamma"]}, loss="focal"))
    with pytest.raises(ValueError, match=r"search.ce.lam: unknown parameter 'ce.lam'"):
        parse_search_space(space({"ce.lam": SPECS["lam"]}, loss="ce"))
    trial = {"epsilon": 0.1, "poly1.epsilon": 1.5, "gamma": 2.0, "lr": 0.1}
    assert own_values(trial, "poly1") == {"epsilon": 1.5}
    assert own_values(trial, "label_smoothing") == {"epsilon": 0.1}
    assert own_values(trial, "focal") == {"gamma": 2.0} and own_values(trial, "ce") == {}


def test_a_space_names_its_loss():
    with pytest.raises(ValueError, match=r"^search space: name the loss its trials train with: `loss: <name>` under"):
        parse_search_space(space({"lr": {"type": "loguniform", "low": 0.01, "high": 0.1}}))


def test_losses_without_weights_need_no_backbone():
    parsed = parse_search_space(space({"gamma": SPECS["gamma"], "loss": {"type": "choice", "values": ["focal", "ce"]}}))
    assert parsed.losses == ("focal", "ce") and not parsed.needs_weights and parsed.backbones == ()
    # and a backbone there is a key nothing reads
    with pytest.raises(ValueError, match=r"fixed.backbone: no loss in this space reads backbone \(losses: focal\); "
                                         r"backbone is read by proposed"):
        parse_search_space(space({"gamma": SPECS["gamma"]}, loss="focal", backbone="a"))

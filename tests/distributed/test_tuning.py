"""Ray Tune driver: trial configs, weights from cached scores, the Pareto front, and a real 2-trial search."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rmd_ray.core import WeightConfig, difficulty_weights
from rmd_ray.data.readers import from_arrays
from rmd_ray.distributed.runtime.dashboards import read_scalars
from rmd_ray.distributed.training import TrainConfig
from rmd_ray.distributed.tuning.run import (
    pareto_front,
    run_tune,
    trial_train_config,
    trial_weights,
    validate_backbones,
)
from rmd_ray.io.storage import write_parquet_atomic
from rmd_ray.nn.engine import OptimConfig
from rmd_ray.nn.search_space import parse_search_space

BASE = TrainConfig(model="resnet18", width=0.125, batch_size=32, optim=OptimConfig(epochs=2, lr=0.05),
                   loss="proposed", loss_hparams={"alpha": 0.3})


# one trial holding every family's keys: each loss must take exactly its own
EVERY_KEY = {"alpha": 0.17, "temperature": 2.0, "c": 0.01, "normalization": "none", "backbone": "tiny",
             "beta": 0.05, "epsilon": 0.2, "poly1.epsilon": 1.5, "gamma": 3.5, "lam": 0.02, "lr": 0.02}


@pytest.mark.parametrize(
    ("loss", "expected"),
    [
        ("proposed", {"alpha": 0.17}),  # T, c, normalization, backbone go to trial_weights, not the loss
        ("entropy_reg", {"beta": 0.05}),
        ("label_smoothing", {"epsilon": 0.2}),
        ("focal", {"gamma": 3.5}),
        ("poly1", {"epsilon": 1.5}),  # poly1.epsilon wins over the plain epsilon
        ("l1_norm", {"lam": 0.02}),
        ("crl", {"lam": 0.02}),
        ("ce", {}),
    ],
)
def test_trial_config_gives_each_family_exactly_its_own_hparams(loss, expected):
    config = trial_train_config({**EVERY_KEY, "loss": loss}, base=BASE)
    assert config.loss == loss and dict(config.loss_hparams) == expected and config.optim.lr == 0.02


def test_trial_config_never_inherits_the_base_loss_hparams():
    # BASE is proposed with alpha 0.3: another loss must not receive alpha ("unknown hyper-parameter alpha")
    assert trial_train_config({"loss": "focal"}, base=BASE).loss_hparams == ()
    # nor the same loss: what the trial does not set takes the loss's default
    assert trial_train_config({"loss": "proposed"}, base=BASE).loss_hparams == ()
    er = trial_train_config({"loss": "entropy_reg", "alpha": 0.05}, base=BASE)
    assert er.loss == "entropy_reg" and er.loss_hparams == ()  # alpha is proposed's, never ER's beta
    config = trial_train_config({"epochs": 5, "batch_size": 16, "width": 0.25, "weight_decay": 0.001}, base=BASE)
    assert (config.optim.epochs, config.batch_size, config.width, config.optim.weight_decay) == (5, 16, 0.25, 0.001)
    assert config.loss == "proposed"  # the base's loss when the trial names none
    with pytest.raises(ValueError, match="loss 'mse' cannot be tuned; valid: ce, crl"):
        trial_train_config({"loss": "mse"}, base=BASE)
    with pytest.raises(ValueError, match=r"trial parameter\(s\) 'focal_gamma' are read by no loss; valid: every loss"):
        trial_train_config({"loss": "focal", "focal_gamma": 2.0}, base=BASE)


def test_trial_weights_recompute_s_from_cached_rmd():
    rmd = np.array([3.0, -1.0, 10.0, 0.5])
    table = pa.table({"id": ["a", "b", "c", "d"], "rmd": rmd})
    out = trial_weights(table, {"temperature": 2.0})
    np.testing.assert_allclose(out.column("weight").to_numpy(),
                               difficulty_weights(rmd, config=WeightConfig(temperature=2.0)))
    assert out.column("id").to_pylist() == ["a", "b", "c", "d"]


def test_trial_weights_follow_the_trials_difficulty_source():
    table = pa.table({"id": ["a", "b", "c", "d"], "rmd": [3.0, -1.0, 10.0, 0.5], "md": [1.0, 2.0, 3.0, 4.0]})
    rank = WeightConfig(normalization="rank")
    md = trial_weights(table, {"difficulty": "md", "normalization": "rank"}).column("weight").to_numpy()
    np.testing.assert_allclose(md, difficulty_weights(np.array([1.0, 2.0, 3.0, 4.0]), config=rank))
    shuffled = trial_weights(table, {"difficulty": "shuffled_rmd"}, seed=5).column("weight").to_numpy()
    expected = difficulty_weights(table.column("rmd").to_numpy())[np.random.default_rng(5).permutation(4)]
    np.testing.assert_allclose(shuffled, expected)
    with pytest.raises(ValueError, match="source 'kmeans' reads the column 'kmeans', which the scores lack"):
        trial_weights(table, {"difficulty": "kmeans"})


def test_pareto_front_by_hand():
    rows = [{"t": "a", "ece": 0.05, "acc": 0.80}, {"t": "b", "ece": 0.03, "acc": 0.78},
            {"t": "c", "ece": 0.06, "acc": 0.79}, {"t": "d", "ece": 0.03, "acc": 0.81},
            {"t": "e", "ece": float("nan"), "acc": 0.99}]
    front = pareto_front(rows, (("ece", "min"), ("acc", "max")))
    assert [r["t"] for r in front] == ["d"]  # d dominates a, b, c; e has no ECE and is left out
    rows.append({"t": "f", "ece": 0.01, "acc": 0.70})
    assert sorted(r["t"] for r in pareto_front(rows, (("ece", "min"), ("acc", "max")))) == ["d", "f"]


def test_missing_backbone_scores_name_the_fix(tmp_path):
    space = parse_search_space({"name": "t", "objectives": {"acc": "max"}, "fixed": {"loss": "proposed"},
                                "search": {"backbone": {"type": "choice", "values": ["a", "b"]}}})
    path = tmp_path / "a.parquet"
    write_parquet_atomic(pa.table({"id": ["x"], "rmd": [1.0]}), path)
    assert set(validate_backbones(space, {"a": path, "b": path})) == {"a", "b"}
    # every difficulty column the scores hold is loaded (a trial may name any source), nothing else
    full = tmp_path / "full.parquet"
    write_parquet_atomic(pa.table({"id": ["x"], "rmd": [1.0], "md": [2.0], "kmeans": [3.0], "label": [0]}), full)
    assert validate_backbones(space, {"a": full, "b": path})["a"].column_names == ["id", "kmeans", "md", "rmd"]
    with pytest.raises(ValueError, match=r"backbone 'b' has no cached scores: run `rmd-ray score --encoder b"):
        validate_backbones(space, {"a": path})
    with pytest.raises(ValueError, match="scores for backbone 'b' not found"):
        validate_backbones(space, {"a": path, "b": tmp_path / "nope.parquet"})
    # losses without weights read no scores: none are loaded, none are needed
    focal = parse_search_space({"name": "t", "objectives": {"acc": "max"}, "fixed": {"loss": "focal"},
                                "search": {"gamma": {"type": "uniform", "low": 0.0, "high": 5.0}}})
    assert validate_backbones(focal, {}) == {} and validate_backbones(focal, {"a": path}) == {}


@pytest.mark.ray
@pytest.mark.timeout(900)  # ~70 s on an idle 2-core machine; Ray Train inside Tune crawls under load
def test_two_trial_search_reports_metrics_and_pareto(ray_local, tmp_path):
    rng = np.random.default_rng(0)

    def data(n, prefix):
        y = rng.integers(0, 3, n)
        x = rng.integers(0, 60, (n, 12, 12, 3), dtype=np.uint8)
        x[np.arange(n), :, :, y] += 150  # the class is the bright channel: learnable in 2 epochs
        return from_arrays(x, y, ids=[f"{prefix}{i}" for i in range(n)], classes=list("abc"))

    train, val = data(128, "t"), data(64, "v")
    scores_path = tmp_path / "scores.parquet"
    write_parquet_atomic(pa.table({"id": train.column("id"), "rmd": rng.normal(size=128)}), scores_path)
    space = parse_search_space({
        "name": "t", "objectives": {"ece_mass": "min", "acc": "max"}, "num_samples": 2, "grace_period": 1,
        "search": {"alpha": {"type": "uniform", "low": 0.0, "high": 0.5},
                   "temperature": {"type": "loguniform", "low": 0.1, "high": 5.0}},
        "fixed": {"loss": "proposed", "backbone": "tiny", "epochs": 2},
    })
    result = run_tune(space, train=train, val=val, scores_paths={"tiny": scores_path}, base=BASE,
                      output_dir=tmp_path / "out")
    table = pq.read_table(result.results_path).to_pylist()
    assert result.n_trials == 2 and len(table) == 2
    for row in table:
        assert row["error"] == "" and 0 <= row["val_ece_mass"] <= 1 and 0 <= row["val_acc"] <= 1
        assert 1 <= row["epochs_run"] <= 2 and 0 <= row["config/alpha"] <= 0.5
    assert 1 <= sum(r["pareto"] for r in table) <= 2 and os.path.getsize(result.pareto_path) > 1000
    # TensorBoard: one event file per trial (Tune's TBXLoggerCallback), holding each epoch's metrics
    for row in table:
        trial_dir = next((tmp_path / "out" / "tune" / "t").glob(row["trial"]))
        scalars = read_scalars(trial_dir)
        for tag in ("ray/tune/val_acc", "ray/tune/val_ece_mass", "ray/tune/train_loss"):
            assert [step for step, _ in scalars[tag]] == list(range(1, row["epochs_run"] + 1)), tag
        assert scalars["ray/tune/val_acc"][-1][1] == pytest.approx(row["val_acc"], rel=1e-6)
        assert scalars["ray/tune/val_ece_mass"][-1][1] == pytest.approx(row["val_ece_mass"], rel=1e-6)


def _bright_channel_splits(rng):
    """64 train / 32 val 12 px images whose class is the bright channel (learnable in one epoch)."""
    y = rng.integers(0, 3, 96)
    x = rng.integers(0, 60, (96, 12, 12, 3), dtype=np.uint8)
    x[np.arange(96), :, :, y] += 150
    train = from_arrays(x[:64], y[:64], ids=[f"t{i}" for i in range(64)], classes=list("abc"))
    val = from_arrays(x[64:], y[64:], ids=[f"v{i}" for i in range(32)], classes=list("abc"))
    return train, val


def _two_objective_params(sampler, n_trials: int, *, pickle_after: int | None = None) -> list[tuple]:
    import pickle

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["minimize", "maximize"], sampler=sampler)
    params = []
    for i in range(n_trials):
        if i == pickle_after:
            study.sampler = pickle.loads(pickle.dumps(study.sampler))  # what Ray Tune does with its searcher
        trial = study.ask()
        x, y = trial.suggest_float("x", 0.0, 1.0), trial.suggest_float("y", 0.1, 5.0, log=True)
        study.tell(trial, [(x - 0.3) ** 2 + y, x * y])
        params.append((x, y))
    return params


def test_the_search_sampler_pickles_and_samples_exactly_as_optunas_nsga2():
    """optuna 5.1's GA samplers hold a thread lock that Ray Tune's Tuner cannot pickle."""
    import optuna

    from rmd_ray.distributed.tuning.samplers import PicklableNSGAIISampler

    reference = _two_objective_params(optuna.samplers.NSGAIISampler(seed=3, population_size=4), 14)
    ours = _two_objective_params(PicklableNSGAIISampler(seed=3, population_size=4), 14)
    round_tripped = _two_objective_params(PicklableNSGAIISampler(seed=3, population_size=4), 14, pickle_after=9)
    assert ours == reference  # generations past the first (population 4): the genetic path, not only random
    assert round_tripped == reference

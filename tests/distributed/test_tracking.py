"""``--mlflow URI`` of ``rmd-ray train`` and ``rmd-ray tune`` (rmd_ray.distributed.runtime.tracking).

The URI is checked before Ray starts (one line, exit 2, each branch below). The end-to-end tests train
tiny models through the CLI on the shared ``ray_local`` instance and read back what MLflow recorded with
``MlflowClient``: one run per Tune trial with its metrics, and one run per ``train`` with its parameters
and one metric point per epoch.
"""

from __future__ import annotations

import io
import json
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from rmd_ray.cli import main
from rmd_ray.distributed.runtime.tracking import INSTALL, check_tracking_uri, epoch_metrics

pytest.importorskip("mlflow", reason="mlflow is in the mlflow and dev extras")


@pytest.mark.parametrize(("given", "expected"), [
    ("file:{tmp}/mlruns", "file://{tmp}/mlruns"),
    ("file://{tmp}/a b", "file://{tmp}/a%20b"),
    ("{tmp}/plain", "file://{tmp}/plain"),
    ("sqlite:///{tmp}/m.db", "sqlite:///{tmp}/m.db"),
    ("http://mlflow.internal:5000", "http://mlflow.internal:5000"),
    ("postgresql+psycopg2://u@h/db", "postgresql+psycopg2://u@h/db"),
], ids=["file", "quoted", "path", "sqlite", "http", "postgresql"])
def test_uris_are_made_usable_from_every_ray_process(tmp_path, given, expected):
    tmp = str(tmp_path)
    assert check_tracking_uri(given.format(tmp=tmp)) == expected.format(tmp=tmp)


def test_relative_local_stores_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # Ray's controller runs in another folder: a relative store would move
    assert check_tracking_uri("file:mlruns") == (tmp_path / "mlruns").resolve().as_uri()
    assert check_tracking_uri("sqlite:///m.db") == f"sqlite:///{tmp_path}/m.db"


@pytest.mark.parametrize(("given", "message"), [
    ("  ", "--mlflow needs a tracking URI, e.g. file:/abs/mlruns"),
    ("s3://bucket/mlruns", "--mlflow 's3://bucket/mlruns': 's3' is not an MLflow tracking store; use file:/abs/mlruns"),
    ("http://", "--mlflow 'http://' names no server: use http://HOST:PORT"),
    ("sqlite:m.db", "--mlflow 'sqlite:m.db': an SQLite store is sqlite:///PATH/mlflow.db"),
    ("file://otherhost/mlruns", "a file store is a local folder, file:/PATH (no host)"),
    ("file:{file}", "is an existing file; an MLflow file store is a folder"),
], ids=["empty", "scheme", "no-host", "sqlite", "file-host", "a-file"])
def test_bad_uris_say_what_to_pass(tmp_path, given, message):
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(ValueError) as info:
        check_tracking_uri(given.format(file=tmp_path / "f.txt"))
    assert message in str(info.value)


def test_without_mlflow_the_error_names_the_extra(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # importlib finds no mlflow, as when it is not installed
    with pytest.raises(ValueError, match=r'needs MLflow, which is not installed: pip install "rmd-ray\[mlflow\]"$'):
        check_tracking_uri("file:/tmp/mlruns")
    assert INSTALL == 'pip install "rmd-ray[mlflow]"'
    assert main(["train", "--loss", "ce", "--mlflow", "file:/tmp/mlruns", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == 'rmd-ray train: error: --mlflow needs MLflow, which is not installed: pip install "rmd-ray[mlflow]"\n'


@pytest.mark.parametrize("command", ["train", "tune"])
def test_flag_errors_are_one_line_before_ray_starts(tmp_path, capsys, command):
    head = ["train", "--loss", "ce"] if command == "train" else ["tune", "--space", "tune_spaces/loss_family.yaml"]
    assert main([*head, "--mlflow-experiment", "e", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == (f"rmd-ray {command}: error: --mlflow-experiment names the experiment --mlflow logs to: pass "
                   "--mlflow URI as well\n")
    assert main([*head, "--mlflow", "ftp://h/x", "--output", str(tmp_path)]) == 2
    assert "'ftp' is not an MLflow tracking store" in capsys.readouterr().err
    assert main([*head, "--mlflow", str(tmp_path), "--mlflow-experiment", " ", "--output", str(tmp_path)]) == 2
    assert "--mlflow-experiment must be a non-empty name" in capsys.readouterr().err


def test_a_store_that_refuses_is_one_line_before_training(tmp_path, monkeypatch):
    from rmd_ray.distributed.runtime.tracking import start_train_run, tune_callback

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "false")  # kept: MLflow 3 then refuses its file store
    uri = check_tracking_uri(str(tmp_path / "mlruns"))
    for open_store in (lambda: start_train_run(uri, experiment="e", run_name="r", params={"a": 1}),
                       lambda: tune_callback(uri, experiment="e")):
        with pytest.raises(ValueError, match=r"^--mlflow 'file://.*/mlruns': the tracking store refused "
                                             r"\(MlflowException: .*\); check the URI or the server$") as info:
            open_store()
        assert "\n" not in str(info.value)


def test_epoch_metrics_are_the_measured_numbers():
    report = {"epoch": 2, "resumed_from": 0, "train_loss": 0.5, "val_acc": float("nan"), "lr": 0.1, "flag": True,
              "note": "x", "time_s": 3}
    assert epoch_metrics(report) == {"train_loss": 0.5, "lr": 0.1, "time_s": 3.0}


def _png(rng, label: int) -> bytes:
    pixels = rng.integers(0, 60, (12, 12, 3), dtype=np.uint8)
    pixels[..., label] += 150
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _images(path, *, n: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    table = pa.table({
        "id": [f"i{seed}_{i:03d}" for i in range(n)],
        "label": pa.array(labels, pa.int64()),
        "image": [_png(rng, int(k)) for k in labels],
    }).replace_schema_metadata({b"classes": b'["r", "g", "b"]'})
    pq.write_table(table, path, row_group_size=16)
    return f"parquet:{path}"


#: The tiny settings of tests/test_cli_validation.py's end-to-end runs.
TINY = ["--width", "0.0625", "--train-batch-size", "8", "--cpus-per-worker", "0.5", "--test-source", "none"]


@pytest.mark.ray
@pytest.mark.slow  # one Ray Train fit of two epochs
@pytest.mark.timeout(300)
def test_train_logs_one_run_with_params_and_a_point_per_epoch(ray_local, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    uri = f"file:{tmp_path}/mlruns"
    out = tmp_path / "out"
    assert main(["train", "--train-source", _images(tmp_path / "train.parquet", n=48, seed=0), "--val-fraction",
                 "0.25", "--loss", "ce", "--epochs", "2", *TINY, "--run-name", "r", "--mlflow", uri,
                 "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("rmd-ray-train")
    (run,) = client.search_runs([experiment.experiment_id])
    assert f"mlflow: run {run.info.run_id} in experiment 'rmd-ray-train' at file://{tmp_path}/mlruns" in printed
    assert run.info.run_name == "r" and run.info.status == "FINISHED"
    params = run.data.params
    assert (params["loss"], params["model"], params["optim/epochs"]) == ("ce", "resnet18", "2")
    assert params["batch_size"] == "8" and params["model_weights"] == "None"
    assert (params["width"], params["run_name"], params["data/val_fraction"]) == ("0.0625", "r", "0.25")
    assert params["data/train_source"] == f"parquet:{tmp_path / 'train.parquet'}"
    for key in ("train_loss", "train_acc", "lr", "val_acc", "val_nll", "val_ece_mass"):
        history = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in history] == [1, 2], key  # one point per epoch, at step = epoch
    assert "epoch" not in run.data.metrics
    val_acc = [m.value for m in client.get_metric_history(run.info.run_id, "val_acc")]
    # the final artefacts: the result as metrics.json, the checkpoint and predictions where they were written
    summary = json.loads((tmp_path / "mlruns" / experiment.experiment_id / run.info.run_id / "artifacts"
                          / "metrics.json").read_text())
    assert [e["epoch"] for e in summary["epochs"]] == [1, 2]
    assert [e["val_acc"] for e in summary["epochs"]] == pytest.approx(val_acc)
    assert summary["final_val"]["acc"] == pytest.approx(val_acc[-1])
    tags = run.data.tags
    assert tags["checkpoint"] == summary["last_checkpoint"] and tags["checkpoint"].startswith(str(out / "r"))
    assert tags["predictions_val"] == str(out / "r" / "predictions_val.parquet")


@pytest.mark.ray
@pytest.mark.slow  # two Tune trials of one epoch
@pytest.mark.timeout(600)
def test_tune_logs_one_run_per_trial_with_its_metrics(ray_local, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    space = tmp_path / "focal.yaml"
    space.write_text("name: focal\nobjectives: {acc: max}\nnum_samples: 2\nmax_concurrent_trials: 2\n"
                     "grace_period: 1\n"
                     "search:\n  gamma: {type: uniform, low: 0.5, high: 4.0}\nfixed: {loss: focal, epochs: 1}\n")
    uri = f"file:{tmp_path}/mlruns"
    out = tmp_path / "out"
    assert main(["tune", "--space", str(space), "--train-source", _images(tmp_path / "train.parquet", n=48, seed=0),
                 *TINY, "--mlflow", uri, "--mlflow-experiment", "search", "--output", str(out)]) == 0
    assert f"mlflow: one run per trial in experiment 'search' at file://{tmp_path}/mlruns" in capsys.readouterr().out
    rows = {row["trial"]: row for row in pq.read_table(out / "tune_results.parquet").to_pylist()}
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("search").experiment_id])
    assert len(runs) == len(rows) == 2
    for run in runs:
        trial = next(name for name in rows if name.startswith(run.data.tags["trial_name"] + "_"))
        assert run.info.status == "FINISHED" and run.data.tags["space"] == "focal"
        assert float(run.data.params["gamma"]) == pytest.approx(rows[trial]["config/gamma"])
        assert run.data.params["loss"] == "focal" and run.data.params["epochs"] == "1"
        history = client.get_metric_history(run.info.run_id, "val_acc")
        assert [m.step for m in history] == [1]
        assert history[0].value == pytest.approx(rows[trial]["val_acc"])
        # the trial's result files, as its artefacts
        artefacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"result.json", "progress.csv", "params.json"} <= artefacts

"""``--mlflow URI`` of ``rmd-ray train`` and ``rmd-ray tune`` (rmd_ray.distributed.runtime.tracking).

The URI is checked before Ray starts (one line, exit 2, each branch below). The end-to-end tests train
tiny models through the CLI on the shared ``ray_local`` instance and read back what MLflow recorded with
``MlflowClient``: one run per Tune trial with its metrics, and one run per ``train`` with its parameters
and one metric point per epoch.
"""

from __future__ import annotations

import sys

import pytest

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

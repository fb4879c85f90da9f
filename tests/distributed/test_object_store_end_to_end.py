"""Every command on object storage, end to end: score -> train -> evaluate -> report -> find-label-issues ->
tune against the loopback S3 server, with no local output folder; the training checkpoint is large enough
to go up as a real multipart upload. Train and tune also log to MLflow (``--mlflow file:...``): one run
for the training, one per trial.

The train and tune steps also hold the validation-split contract of the CLI (the split recorded with its
labels, validation predictions exactly the recorded ids, the test split predicted once, after selection).
"""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from rmd_ray.cli import main
from rmd_ray.io import storage
from rmd_ray.io.parts import read_table
from rmd_ray.io.parts import read_table_metadata as read_metadata

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(900)]


def _png(rng, label: int) -> bytes:
    pixels = rng.integers(0, 60, (12, 12, 3), dtype=np.uint8)
    pixels[..., label] += 150
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _upload(uri: str, *, n: int, seed: int, prefix: str) -> str:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    table = pa.table({
        "id": [f"{prefix}{i:03d}" for i in range(n)],
        "label": pa.array(labels, pa.int64()),
        "image": [_png(rng, int(k)) for k in labels],
    }).replace_schema_metadata({b"classes": b'["r", "g", "b"]'})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=16)
    storage.write_bytes_atomic(uri, buffer.getvalue())
    return f"parquet:{uri}"


def test_every_command_runs_on_object_storage(s3_server, ray_local, tmp_path, capsys):
    import boto3

    bucket = s3_server.bucket("rmd-e2e-all")
    train_spec = _upload(storage.join(bucket, "data", "train.parquet"), n=48, seed=0, prefix="tr")
    test_spec = _upload(storage.join(bucket, "data", "test.parquet"), n=18, seed=1, prefix="te")
    run = storage.join(bucket, "runs")
    scores = storage.join(run, "score", "scores.parquet")
    assert main(["score", "--source", train_spec, "--encoder", "tiny_cnn", "--image-size", "12", "--num-actors", "1",
                 "--batch-size", "16", "--output", storage.join(run, "score")]) == 0
    assert read_table(scores, columns=["id"]).num_rows == 48

    train_out = storage.join(run, "train")
    mlflow_uri = f"file:{tmp_path}/mlruns"  # the tracking store is the user's own, here a local folder
    assert main(["train", "--train-source", train_spec, "--test-source", test_spec, "--val-fraction", "0.25",
                 "--split-seed", "4", "--loss", "proposed", "--scores", scores, "--epochs", "2", "--width", "0.5",
                 "--train-batch-size", "8", "--cpus-per-worker", "0.5", "--run-name", "r", "--mlflow", mlflow_uri,
                 "--output", train_out]) == 0
    printed = capsys.readouterr().out
    _check_training_run_in_mlflow(mlflow_uri, tmp_path, printed, train_out)
    recorded = storage.read_parquet(storage.join(train_out, "r", "val_split.parquet"))
    ids = recorded.column("id").to_pylist()
    assert len(ids) == 12 and np.bincount(recorded.column("label").to_numpy()).tolist() == [4, 4, 4]
    meta = read_metadata(storage.join(train_out, "r", "val_split.parquet"))
    assert (meta["fraction"], meta["seed"], meta["n_train"], meta["n_val"]) == (0.25, 4, 36, 12)
    assert "validation split: 12 of 48 training rows (0.25 of each class, seed 4)" in printed
    val_pred = read_table(storage.join(train_out, "r", "predictions_val.parquet"), columns=["id"])
    assert sorted(val_pred.column("id").to_pylist()) == sorted(ids)
    test_pred = storage.join(train_out, "r", "predictions_test.parquet")
    assert sorted(read_table(test_pred, columns=["id"]).column("id").to_pylist()) == [f"te{i:03d}" for i in range(18)]
    # the checkpoint (ResNet-18 at width 0.5 with its optimiser state: 21 MiB) went up in parts
    client = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1")
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="rmd-e2e-all", Prefix="runs/train/")["Contents"]]
    checkpoint = next(k for k in keys if k.endswith("model.pt"))
    etag = client.head_object(Bucket="rmd-e2e-all", Key=checkpoint)["ETag"].strip('"')
    assert "-" in etag, f"{checkpoint} was uploaded in one PUT"

    evaluated = storage.join(run, "eval")
    assert main(["evaluate", "--predictions", f"r={test_pred}", "--output", evaluated]) == 0
    metrics = json.loads(storage.read_bytes(storage.join(evaluated, "metrics.json")))
    assert metrics["r"]["n_samples"] == 18 and 0 <= metrics["r"]["acc"] <= 1

    assert main(["report", "--predictions", f"r={test_pred}", "--scores", scores, "--source", train_spec,
                 "--output", storage.join(run, "report")]) == 0
    page = storage.read_bytes(storage.join(run, "report", "report.html")).decode()
    assert "<html" in page and "hardest and easiest training images per class" in page

    assert main(["find-label-issues", "--scores", scores, "--source", train_spec, "--top", "4",
                 "--output", storage.join(run, "issues")]) == 0
    assert storage.read_parquet(storage.join(run, "issues", "label_issues.parquet")).num_rows == 4

    space = storage.join(bucket, "spaces", "focal.yaml")
    storage.write_bytes_atomic(space, b"name: focal\nobjectives: {acc: max}\nnum_samples: 1\ngrace_period: 1\nsearch:\n"
                               b"  gamma: {type: uniform, low: 0.5, high: 4.0}\nfixed: {loss: focal, epochs: 1}\n")
    tuned = storage.join(run, "tune")
    capsys.readouterr()
    assert main(["tune", "--space", space, "--train-source", train_spec, "--test-source", test_spec,
                 "--width", "0.0625", "--train-batch-size", "8", "--cpus-per-worker", "0.5", "--mlflow", mlflow_uri,
                 "--mlflow-experiment", "search", "--output", tuned]) == 0
    printed = capsys.readouterr().out
    assert f"mlflow: one run per trial in experiment 'search' at file://{tmp_path}/mlruns" in printed
    recorded = storage.read_parquet(storage.join(tuned, "val_split.parquet"))
    assert np.bincount(recorded.column("label").to_numpy()).tolist() == [2, 2, 2]  # round(0.1 * 16) a class
    rows = storage.read_parquet(storage.join(tuned, "tune_results.parquet")).to_pylist()
    assert len(rows) == 1 and rows[0]["pareto"] and 0 <= rows[0]["test_acc"] <= 1
    meta = read_metadata(storage.join(tuned, "tune_results.parquet"))
    assert meta["test"] == {"trials_predicted": [rows[0]["trial"]], "after_selection": True}
    assert f"{rows[0]['trial']:<12} {100 * rows[0]['test_acc']:>7.2f}" in printed  # the test table
    _check_focal_trial(rows[0], tuned)
    _check_trial_runs_in_mlflow(mlflow_uri, {row["trial"]: row for row in rows})


def _check_focal_trial(row: dict, tuned: str) -> None:
    """A focal-only space needs no backbone or scores, and its trial carries focal's hyper-parameters only
    (not the CLI's default proposed ones); the front trial predicted every test id once, after the search,
    and its checkpoint lives in the bucket."""
    import torch

    from rmd_ray.core.metrics import evaluate_predictions
    from rmd_ray.evaluation.evaluate import load_predictions

    assert row["loss"] == "focal" and json.loads(row["loss_hparams"]) == {"gamma": row["config/gamma"]}
    assert "config/backbone" not in row and row["epochs_run"] == 1 and row["error"] == ""
    ids, labels, logits = load_predictions(storage.join(tuned, "test", f"{row['trial']}.parquet"))
    assert sorted(ids) == [f"te{i:03d}" for i in range(18)]
    expected = evaluate_predictions(logits, labels)
    assert row["test_acc"] == pytest.approx(expected["acc"]) and row["test_nll"] == pytest.approx(expected["nll"])
    names = storage.glob(storage.join(tuned, "trials", "*", "*", "model.pt"))
    payload = torch.load(io.BytesIO(storage.read_bytes(names[-1])), map_location="cpu", weights_only=True)
    assert payload["epoch"] == 1 and payload["extra"]["input_side"] == 12


def _check_training_run_in_mlflow(uri: str, tmp_path, printed: str, train_out: str) -> None:
    """One FINISHED run: the config as parameters, a point per epoch at step = epoch, the result as an artefact."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("rmd-ray-train")
    (run,) = client.search_runs([experiment.experiment_id])
    assert f"mlflow: run {run.info.run_id} in experiment 'rmd-ray-train' at file://{tmp_path}/mlruns" in printed
    assert run.info.run_name == "r" and run.info.status == "FINISHED"
    params = run.data.params
    assert (params["loss"], params["model"], params["optim/epochs"], params["width"]) == ("proposed", "resnet18",
                                                                                            "2", "0.5")
    assert params["batch_size"] == "8" and params["data/val_fraction"] == "0.25"
    for key in ("train_loss", "train_acc", "lr", "val_acc", "val_nll", "val_ece_mass"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1, 2], key
    val_acc = [m.value for m in client.get_metric_history(run.info.run_id, "val_acc")]
    summary = json.loads((tmp_path / "mlruns" / experiment.experiment_id / run.info.run_id / "artifacts"
                          / "metrics.json").read_text())
    assert [e["val_acc"] for e in summary["epochs"]] == pytest.approx(val_acc)
    assert run.data.tags["checkpoint"] == summary["last_checkpoint"]
    assert run.data.tags["predictions_val"] == storage.join(train_out, "r", "predictions_val.parquet")


def _check_trial_runs_in_mlflow(uri: str, rows: dict) -> None:
    """One run per trial with its parameters, its validation accuracy per epoch and its result files."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("search").experiment_id])
    assert len(runs) == len(rows) == 1
    for run in runs:
        trial = next(name for name in rows if name.startswith(run.data.tags["trial_name"] + "_"))
        assert run.info.status == "FINISHED" and run.data.tags["space"] == "focal"
        assert float(run.data.params["gamma"]) == pytest.approx(rows[trial]["config/gamma"])
        history = client.get_metric_history(run.info.run_id, "val_acc")
        assert [m.step for m in history] == [1] and history[0].value == pytest.approx(rows[trial]["val_acc"])
        artefacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"result.json", "progress.csv", "params.json"} <= artefacts

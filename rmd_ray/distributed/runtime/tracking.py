"""Experiment tracking in MLflow (``--mlflow URI``) through Ray's own MLflow integration.

MLflow is optional (the ``mlflow`` extra): nothing here imports it before it is asked for, and
:func:`check_tracking_uri` turns its absence into one line naming the install.

- ``rmd-ray tune``: Ray's ``MLflowLoggerCallback`` (:func:`tune_callback`), one MLflow run per trial
  with the trial's config as parameters and every reported epoch as a metric step (``training_iteration``).
- ``rmd-ray train``: the driver opens one run with Ray's ``setup_mlflow`` (the config as parameters,
  before any worker starts, so a tracking server that cannot be reached fails first), the Ray Train
  controller logs each epoch's report with ``step=epoch`` (:class:`MLflowEpochCallback`, beside
  TensorBoard's), and the driver closes the run with the final artefacts (:func:`end_train_run`).

Local stores (``file:`` and ``sqlite:``) are written by the driver and by the Ray Train controller,
which runs on the driver's node for a local instance; on a multi-node cluster use a tracking server
(``http(s)://``) every node reaches.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import ray.train

from rmd_ray.distributed.runtime.progress import progress

__all__ = ["INSTALL", "MLflowEpochCallback", "allow_file_store", "check_tracking_uri", "end_train_run",
           "epoch_metrics", "start_train_run", "tune_callback"]

#: What a missing MLflow install is told to run.
INSTALL = 'pip install "rmd-ray[mlflow]"'
_SCHEMES = ("file", "sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")
_EXAMPLES = "file:/abs/mlruns, sqlite:////abs/mlflow.db or http://host:5000"
#: Reported keys that are the step or bookkeeping, not curves.
_NOT_METRICS = {"epoch", "resumed_from"}


def check_tracking_uri(uri: str) -> str:
    """``uri`` as every Ray process can use it (local stores made absolute); ValueError naming the fix.

    A path without a scheme is taken as an MLflow file store (``file:``). Raises when MLflow is not
    installed, the scheme is not a tracking store, an ``http(s)`` URI has no host, or a ``file:``
    store is an existing file.
    """
    if importlib.util.find_spec("mlflow") is None:
        raise ValueError(f"--mlflow needs MLflow, which is not installed: {INSTALL}")
    text = str(uri).strip()
    if not text:
        raise ValueError(f"--mlflow needs a tracking URI, e.g. {_EXAMPLES}")
    scheme, sep, rest = text.partition(":")
    if not sep or len(scheme) == 1 or "/" in scheme:  # a path (or a Windows drive letter)
        scheme, rest, text = "file", text, "file:" + text
    kind = scheme.lower().split("+")[0]  # postgresql+psycopg2 is postgresql
    if kind not in _SCHEMES:
        raise ValueError(f"--mlflow {uri!r}: {scheme!r} is not an MLflow tracking store; use {_EXAMPLES}")
    if kind in ("http", "https") and not urlparse(text).netloc:
        raise ValueError(f"--mlflow {uri!r} names no server: use {scheme}://HOST:PORT")
    if kind == "sqlite":
        path = rest[3:] if rest.startswith("///") else ""
        if not path:
            raise ValueError(f"--mlflow {uri!r}: an SQLite store is sqlite:///PATH/mlflow.db")
        return "sqlite:///" + os.path.abspath(os.path.expanduser(path))  # the controller runs elsewhere
    if kind == "file":
        parsed = urlparse(text)
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"--mlflow {uri!r}: a file store is a local folder, file:/PATH (no host)")
        folder = Path(unquote(parsed.path)).expanduser().resolve()
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"--mlflow {uri!r} is an existing file; an MLflow file store is a folder")
        return folder.as_uri()
    return text


def allow_file_store(uri: str) -> None:
    """Opt in to MLflow's file store in this process when ``uri`` names one.

    MLflow 3 refuses ``file:`` stores unless ``MLFLOW_ALLOW_FILE_STORE`` is set; a ``file:`` URI given
    to rmd-ray is that choice, made explicitly (an explicit ``false`` in the environment is kept).
    """
    if uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")


def _store_error(uri: str, err: Exception) -> ValueError:
    text = " ".join(str(err).split())[:300]
    return ValueError(f"--mlflow {uri!r}: the tracking store refused ({type(err).__name__}: {text}); check the URI "
                      "or the server")


def tune_callback(uri: str, *, experiment: str, tags: dict[str, str] | None = None):
    """Ray Tune's ``MLflowLoggerCallback``: one run per trial in ``experiment``, with its result files.

    The experiment is opened here, before the search, so a store that cannot be used fails first
    (a one-line ValueError).
    """
    from mlflow.tracking import MlflowClient
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    allow_file_store(uri)
    try:
        client = MlflowClient(tracking_uri=uri)
        if client.get_experiment_by_name(experiment) is None:
            client.create_experiment(experiment)
    except Exception as err:  # MlflowException, OSError, a refused connection: the store, not the code
        raise _store_error(uri, err) from err
    # save_artifact: each trial's driver-side result files (result.json, progress.csv) become its artefacts
    return MLflowLoggerCallback(tracking_uri=uri, experiment_name=experiment, tags=dict(tags or {}),
                                save_artifact=True)


def start_train_run(uri: str, *, experiment: str, run_name: str, params: dict[str, Any]) -> str:
    """Open the MLflow run of one ``rmd-ray train`` with Ray's ``setup_mlflow``; returns its run id.

    ``params`` may nest (``{"optim": {"lr": 0.05}}`` is logged as ``optim/lr``). The run is the active
    run of this process until :func:`end_train_run`. A store that cannot be used is a one-line ValueError.
    """
    from ray.air.integrations.mlflow import setup_mlflow

    allow_file_store(uri)
    try:
        mlflow = setup_mlflow(params, tracking_uri=uri, experiment_name=experiment, run_name=run_name,
                              create_experiment_if_not_exists=True)
    except Exception as err:  # MlflowException, OSError, a refused connection: the store, not the code
        raise _store_error(uri, err) from err
    return mlflow.active_run().info.run_id


def epoch_metrics(report: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of one epoch's report, under their reported names (``val_acc``, ``train_loss``, ...).

    NaN marks "not evaluated this epoch" and is left out, so a curve has a point only where a value
    was measured; ``epoch`` is the step, not a metric.
    """
    return {
        key: float(value) for key, value in report.items()
        if key not in _NOT_METRICS and isinstance(value, (int, float)) and not isinstance(value, bool)
        and math.isfinite(value)
    }


class MLflowEpochCallback(ray.train.UserCallback):
    """Log rank 0's report of every epoch to MLflow run ``run_id``, at ``step=epoch`` (1-based).

    Runs on the Ray Train controller, like :class:`~rmd_ray.distributed.runtime.dashboards.TrainProgressCallback`.
    A failed write is one progress line, not a failed training run.
    """

    def __init__(self, uri: str, *, run_id: str) -> None:
        self.uri = uri
        self.run_id = run_id
        self._client = None

    def __getstate__(self) -> dict[str, Any]:  # sent to the controller actor: no open client
        return {**self.__dict__, "_client": None}

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        if not metrics:
            return
        from mlflow.entities import Metric

        report = metrics[0]
        step = int(report.get("epoch", 0))
        now = int(time.time() * 1000)
        batch = [Metric(key, value, now, step) for key, value in epoch_metrics(report).items()]
        try:
            if self._client is None:
                from mlflow.tracking import MlflowClient

                allow_file_store(self.uri)
                self._client = MlflowClient(tracking_uri=self.uri)
            self._client.log_batch(self.run_id, metrics=batch)
        except Exception as err:  # tracking is a side channel: training goes on
            progress(f"[mlflow] epoch {step} not logged to {self.uri}: {type(err).__name__}: {err}")


def end_train_run(result=None, *, failed: bool = False) -> None:
    """Close the active run: the final artefacts of a :class:`~rmd_ray.distributed.training.TrainingResult`.

    ``metrics.json`` (the result: per-epoch history, final validation and test metrics, paths) as an
    artefact, the test metrics as metrics at the last epoch, and the checkpoint and prediction paths
    as tags (``checkpoint``, ``best_checkpoint``, ``predictions_<split>``, ``run_path``); the files stay
    where the run wrote them. ``failed=True`` (or no result) ends the run as FAILED.
    """
    import mlflow

    if mlflow.active_run() is None:
        return
    if failed or result is None:
        mlflow.end_run(status="FAILED")
        return
    mlflow.log_dict(dataclasses.asdict(result), "metrics.json")
    step = int(result.epochs[-1]["epoch"]) if result.epochs else 0
    for key, value in (result.test_metrics or {}).items():
        if isinstance(value, (int, float)) and math.isfinite(value):
            mlflow.log_metric(f"test_{key}", float(value), step=step)
    tags = {"checkpoint": result.last_checkpoint, "best_checkpoint": result.best_checkpoint,
            "run_path": result.run_path}
    tags.update({f"predictions_{split}": path for split, path in result.predictions.items()})
    mlflow.set_tags(tags)
    mlflow.end_run(status="FINISHED")

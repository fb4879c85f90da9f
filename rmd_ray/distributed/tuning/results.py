"""After the search: one row per trial, the Pareto front, the front's test predictions, and the results
files (``tune_results.parquet`` + ``.csv``, ``pareto.png``)."""

from __future__ import annotations

import io
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from rmd_ray.distributed.training import TrainConfig
from rmd_ray.distributed.tuning.trials import trial_train_config
from rmd_ray.io import storage

__all__ = ["collect_rows", "pareto_front", "test_front", "write_results"]

log = logging.getLogger("rmd_ray.tuning")


def collect_rows(grid, *, base: TrainConfig, metrics_wanted) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One row per trial (config, loss hyper-parameters, last reported metrics) and its last checkpoint."""
    rows, checkpoints = [], {}
    for result in grid:
        metrics = dict(result.metrics or {})
        row = {
            "trial": Path(result.path).name,
            "error": str(result.error) if result.error else "",
            **{f"config/{k}": v for k, v in (result.config or {}).items()},
        }
        row["loss"] = (result.config or {}).get("loss", base.loss)
        # what the trial's loss was built with: only its own hyper-parameters (the rest took defaults)
        row["loss_hparams"] = json.dumps(dict(trial_train_config(result.config or {}, base=base).loss_hparams))
        for name in metrics_wanted:
            row[name] = float(metrics.get(name, math.nan))
        row["epochs_run"] = int(metrics.get("training_iteration", 0))
        rows.append(row)
        # the trial's last reported checkpoint (TuneReportCallback's key; Ray Train always keeps the latest)
        checkpoints[row["trial"]] = metrics.get("checkpoint_path")
    if rows and all(r["error"] for r in rows):
        raise RuntimeError(f"every trial failed; the first error:\n{rows[0]['error'][-2000:]}")
    return rows, checkpoints


def pareto_front(rows: list[dict[str, Any]], objectives: tuple[tuple[str, str], ...]) -> list[dict[str, Any]]:
    """Rows not dominated by any other on ``objectives`` ((name, 'min'|'max') pairs)."""

    def key(row):
        return np.array([row[n] if m == "min" else -row[n] for n, m in objectives], dtype=float)

    finite = [r for r in rows if all(math.isfinite(r.get(n, math.nan)) for n, _ in objectives)]
    front = []
    for r in finite:
        kr = key(r)
        if not any(np.all(key(o) <= kr) and np.any(key(o) < kr) for o in finite if o is not r):
            front.append(r)
    return front


def plot_pareto(rows, front, objectives, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (x_name, _), (y_name, _) = objectives[0], objectives[1] if len(objectives) > 1 else objectives[0]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for loss in sorted({r.get("loss", "?") for r in rows}):
        pts = [r for r in rows if r.get("loss", "?") == loss]
        ax.scatter([r[x_name] for r in pts], [r[y_name] for r in pts], label=loss, alpha=0.7)
    front = sorted(front, key=lambda r: r[x_name])
    ax.plot([r[x_name] for r in front], [r[y_name] for r in front], "k--", lw=1, label="Pareto front")
    ax.set_xlabel(x_name)
    ax.set_ylabel(y_name)
    ax.legend(fontsize=8)
    ax.set_title("Trials (last reported epoch)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=110, format="png")
    plt.close(fig)
    return storage.write_bytes_atomic(path, buffer.getvalue())


#: The metrics written as ``test_<name>`` for the Pareto-front trials.
TEST_METRICS = ("acc", "ece_mass", "ece_width", "nll")


def test_front(test, train, rows, front, checkpoints, *, base: TrainConfig, output_dir: str) -> list[str]:
    """Predict ``test`` once with each front trial's last checkpoint; its metrics fill the row's
    ``test_*`` columns (NaN elsewhere). Nothing is chosen from them."""
    import ray

    from rmd_ray.distributed.prediction.predict import classifier_from_checkpoint, predict_source
    from rmd_ray.distributed.training.config import CHECKPOINT_FILE
    from rmd_ray.distributed.training.finish import prediction_metrics, uri_in

    if test.classes != train.classes:
        raise ValueError(
            f"the test source names {len(test.classes)} classes but training names {len(train.classes)}; labels "
            "are class indices, so the test split needs the training split's class list"
        )
    trials_uri = storage.join(output_dir, "trials")
    base_path = storage.resolve(trials_uri)[1] if storage.is_remote(trials_uri) else ""
    tested = []
    for row in rows:
        for name in TEST_METRICS:
            row[f"test_{name}"] = math.nan
    for row in front:
        path = checkpoints.get(row["trial"])
        if not path:
            log.warning("trial %s reported no checkpoint: its test metrics stay NaN", row["trial"])
            continue
        checkpoint = uri_in(trials_uri, base_path, path)
        uri = storage.join(output_dir, "test", f"{row['trial']}.parquet")
        predict_source(
            test, classifier_from_checkpoint(storage.join(checkpoint, CHECKPOINT_FILE)), uri,
            batch_size=max(base.batch_size, 256), gpus_per_actor=1.0 if base.use_gpu else 0.0,
            metadata={"split": "test", "trial": row["trial"], "checkpoint": checkpoint},
        )
        metrics = ray.get(prediction_metrics.remote(uri))
        for name in TEST_METRICS:
            row[f"test_{name}"] = float(metrics[name])
        tested.append(row["trial"])
    return tested




def write_results(rows, front, objectives, *, output_dir: str, space_name: str, val_description: str,
                  tested: list[str] | None) -> tuple[str, str]:
    """``tune_results.parquet`` (+ ``.csv``) and ``pareto.png`` under ``output_dir``; their paths."""
    import pyarrow.csv as pacsv

    front_ids = {r["trial"] for r in front}
    for row in rows:
        row["pareto"] = row["trial"] in front_ids
    table = pa.Table.from_pylist(
        [{k: (str(v) if isinstance(v, (list, dict)) else v) for k, v in r.items()} for r in rows]
    )
    results_path = storage.write_parquet_atomic(
        table, storage.join(output_dir, "tune_results.parquet"),
        # what every trial was ranked on (a split of the training data, or the source given)
        metadata={"space": space_name, "objectives": list(objectives), "val": val_description,
                  # the test split's one use: these trials, after the search
                  "test": None if tested is None else {"trials_predicted": tested, "after_selection": True}},
    )
    csv = pa.BufferOutputStream()
    pacsv.write_csv(table, csv)
    storage.write_bytes_atomic(storage.join(output_dir, "tune_results.csv"), csv.getvalue())
    return results_path, plot_pareto(rows, front, objectives, storage.join(output_dir, "pareto.png"))

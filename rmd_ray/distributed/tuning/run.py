"""Ray Tune over the loss family, each family's own hyper-parameters, the scorer backbone and the learning rate.

Each trial is a function trainable that builds the Ray Train job (:func:`run_training`) with Ray's
``TuneReportCallback``, so every epoch's metrics reach Tune (docs/design.md section 6: ``ray.train.report``
inside Tune fails every trial). Two objectives, ECE (min) and accuracy (max), drive Optuna's NSGA-II
through ``OptunaSearch``; ASHA stops trials early on one scalar. A backbone choice reads that
backbone's cached difficulty scores: scored once per backbone before the search, never per trial,
and the per-trial weights s are recomputed from the cached RMD with the trial's T (cheap). A trial's
loss reads only its own hyper-parameters (``rmd_ray.nn.search_space``); a space whose losses
read no weights (focal, ce, ...) needs no backbone and no scores.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from rmd_ray.core import WeightConfig
from rmd_ray.core.difficulty import DIFFICULTY_COLUMNS, source_column, weights_from_columns
from rmd_ray.distributed.runtime.cluster import count_actor_made_placement_groups, reclaim_orphaned_placement_groups
from rmd_ray.distributed.sources.plan import ShardedSource
from rmd_ray.distributed.training import TrainConfig, loss_needs_weights, run_training
from rmd_ray.distributed.training.run import channel_statistics
from rmd_ray.io import storage
from rmd_ray.io.parts import column_names, read_table
from rmd_ray.nn.losses import LOSSES, tunable_hparams
from rmd_ray.nn.search_space import SearchSpace, is_known, known_keys, own_values

log = logging.getLogger("rmd_ray.tuning")

# objective / scheduler metric name in the space file -> the name run_training reports each epoch
REPORTED = {
    "acc": "val_acc",
    "ece_mass": "val_ece_mass",
    "ece_width": "val_ece_width",
    "nll": "val_nll",
    "brier": "val_brier",
    "aurc": "val_aurc",
    "val_nll": "val_nll",
    "val_loss": "val_nll",
    "train_loss": "train_loss",
}


@dataclass(frozen=True)
class TuneResult:
    results_path: str
    pareto_path: str
    experiment_path: str
    n_trials: int
    pareto: list[dict[str, Any]]


def trial_train_config(trial: dict[str, Any], *, base: TrainConfig) -> TrainConfig:
    """The TrainConfig of one trial: ``base`` with the trial's loss, its own hyper-parameters and training.

    Parameters
    ----------
    trial : dict
        One trial's config (searched and fixed values, see ``rmd_ray.nn.search_space``).
        ``loss`` defaults to ``base.loss``.
    base : TrainConfig
        Everything the space does not set.

    Returns
    -------
    TrainConfig
        ``loss_hparams`` hold exactly the trial's values of the hyper-parameters its loss takes
        (``<loss>.<name>`` before ``<name>``); keys of other losses are ignored, ``base.loss_hparams``
        never carry over (they may belong to another loss), and a hyper-parameter the trial does not
        set takes the loss's default. ``lr``, ``weight_decay``, ``epochs``, ``batch_size``, ``model``
        and ``width`` come from the trial where it sets them.

    Raises
    ------
    ValueError
        For a loss not in the registry or a key no loss reads.
    """
    loss = trial.get("loss", base.loss)
    if loss not in LOSSES:
        raise ValueError(f"loss {loss!r} cannot be tuned; valid: {', '.join(LOSSES.names())}")
    unknown = [k for k in trial if not is_known(k)]
    if unknown:
        names = ", ".join(map(repr, unknown))
        raise ValueError(f"trial parameter(s) {names} are read by no loss; valid: {known_keys()}")
    # only what this trial's loss takes: the weights' T, c and backbone are read by trial_weights
    takes = tunable_hparams()[loss]
    hparams = {k: float(v) for k, v in own_values(trial, loss).items() if k in takes}
    optim = base.optim
    updates = {k: float(trial[k]) for k in ("lr", "weight_decay") if k in trial}
    if "epochs" in trial:
        updates["epochs"] = int(trial["epochs"])
    if updates:
        optim = replace(optim, **updates)
    return replace(
        base,
        loss=loss,
        loss_hparams=tuple(sorted(hparams.items())),
        optim=optim,
        batch_size=int(trial.get("batch_size", base.batch_size)),
        model=str(trial.get("model", base.model)),
        width=float(trial.get("width", base.width)),
    )


def trial_weights(scores: pa.Table, trial: dict[str, Any], *, seed: int = 0) -> pa.Table:
    """``id, weight`` for one trial: s recomputed from the cached scores with the trial's T and source.

    ``difficulty`` (default ``rmd``) names the column the weights come from and, for the controls
    ``shuffled_rmd`` / ``uniform``, how they are spread (``rmd_ray.core.difficulty``); ``seed``
    seeds ``shuffled_rmd``'s permutation.
    """
    config = WeightConfig(
        temperature=float(trial.get("temperature", 0.7)),
        c=float(trial.get("c", 1e-3)),
        normalization=str(trial.get("normalization", "minmax")),
    )
    source = str(trial.get("difficulty", "rmd"))
    wanted = source_column(source)  # only the column this trial's source reads (every trial repeats this)
    columns = {name: scores.column(name).to_numpy() for name in (wanted,) if name in scores.column_names}
    weights = weights_from_columns(columns, source=source, config=config, seed=seed)
    return pa.table({"id": scores.column("id"), "weight": weights})


def _trial(trial: dict[str, Any], *, train, val, scores, base: TrainConfig, output_dir: str, stats) -> None:
    # tune.with_parameters ships the planned sources (shard lists, no pixels) once; every trial reads
    # the same lazy shards, and the channel statistics were computed once before the search
    from ray.tune.integration.ray_train import TuneReportCallback

    config = trial_train_config(trial, base=base)
    # a loss without weights (focal, ce, ...) reads no scores and may run in a space without a backbone
    weights = None
    if loss_needs_weights(config.loss):
        weights = trial_weights(scores[trial["backbone"]], trial, seed=base.seed)
    from ray import tune

    context = tune.get_context()
    run_training(
        train,
        val=val,
        scores=weights,
        config=config,
        output_dir=storage.join(output_dir, "trials"),
        run_name=context.get_trial_id(),
        callbacks=[TuneReportCallback()],
        channel_stats=stats,
        predict=False,  # Tune ranks on the reported val metrics; a batch prediction would only cost time
    )


def _reclaim_callback():
    """A Tune callback that gives back the CPUs of stopped trials' Train runs while the search goes on.

    ASHA stops trials early; each stop leaves its Train worker group's placement group behind
    (:func:`~rmd_ray.distributed.runtime.cluster.reclaim_orphaned_placement_groups` says why), and with one
    trial at a time on a small cluster the next trial would wait for those CPUs forever.
    """
    import time

    from ray.tune import Callback

    class ReclaimStoppedTrials(Callback):
        def __init__(self) -> None:
            self._next = 0.0

        def on_step_end(self, iteration, trials, **info) -> None:
            now = time.monotonic()
            if now >= self._next:  # one GCS table read every 2 s, not every 0.1 s controller step
                self._next = now + 2.0
                _reclaim("during the search")

    return ReclaimStoppedTrials()


def _reclaim(where: str) -> None:
    removed = reclaim_orphaned_placement_groups()
    if removed:
        log.info("%s: removed %d placement groups left by stopped trials", where, removed)


def _reclaim_after_search(wait_s: float = 10.0) -> None:
    """Reclaim once Tune has ended every trial actor (the last ones may still be exiting)."""
    import time

    deadline = time.monotonic() + wait_s
    _reclaim("after the search")
    while time.monotonic() < deadline and count_actor_made_placement_groups():
        time.sleep(0.5)
        _reclaim("after the search")


def validate_backbones(space: SearchSpace, scores_paths: dict[str, str | Path]) -> dict[str, pa.Table]:
    """Load every backbone's cached scores once; a backbone without scores is an error naming the fix.

    Returns ``{}`` for a space whose losses read no difficulty weights (no scores needed).
    """
    tables = {}
    for name in space.backbones:
        if name not in scores_paths:
            raise ValueError(
                f"backbone {name!r} has no cached scores: run `rmd-ray score --encoder {name} ...` once and pass "
                f"--scores {name}=<output>/scores.parquet (scored once per backbone, never per trial)"
            )
        path = str(scores_paths[name])
        if not storage.exists(path):
            raise ValueError(f"scores for backbone {name!r} not found at {path!r}")
        # the per-row difficulty columns only (no images, no per-view lists): every source a trial may name
        present = set(column_names(path))
        wanted = ["id"] + [c for c in DIFFICULTY_COLUMNS if c in present]
        tables[name] = read_table(path, columns=wanted).replace_schema_metadata(None)
    return tables


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


def _plot_pareto(rows, front, objectives, path: str) -> str:
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


def run_tune(
    space: SearchSpace,
    *,
    train: str | pa.Table | ShardedSource,
    val: str | pa.Table | ShardedSource,
    test: str | pa.Table | ShardedSource | None = None,
    scores_paths: dict[str, str | Path] | None = None,
    base: TrainConfig,
    output_dir: str | Path,
    seed: int = 0,
) -> TuneResult:
    """Run the search; write ``tune_results.parquet`` (+ .csv) and ``pareto.png`` to ``output_dir``.

    ``train`` / ``val`` are planned once here (source specs, planned sources or reader tables) and
    shared by every trial; ``output_dir`` is a local folder or a storage URI (``s3://...``): Tune's
    experiment, every trial's checkpoints and the results go there. ``scores_paths`` (backbone ->
    scores.parquet) is needed only when a loss in the space reads difficulty weights. The space names
    the loss and its hyper-parameters: ``base``'s loss and loss_hparams are not used by any trial.

    Trials are ranked on ``val`` only. ``test`` (optional) is touched once, after the search: the last
    checkpoint of each Pareto-front trial predicts it into ``<output_dir>/test/<trial>.parquet/``, and
    its metrics fill the ``test_*`` columns of those rows (NaN elsewhere); nothing is chosen from them.
    """
    from ray import tune
    from ray.tune.logger import TBXLoggerCallback
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    scores = validate_backbones(space, scores_paths or {})
    search, fixed = dict(space.search), dict(space.fixed)
    param_space: dict[str, Any] = {}
    for name, dist in search.items():
        if dist.kind == "choice":
            param_space[name] = tune.choice(list(dist.values))
        elif dist.kind == "uniform":
            param_space[name] = tune.uniform(dist.low, dist.high)
        elif dist.kind == "loguniform":
            param_space[name] = tune.loguniform(dist.low, dist.high)
        else:
            param_space[name] = tune.randint(int(dist.low), int(dist.high))
    # Every fixed value reaches every trial's config, so a trial reads fixed and searched keys alike.
    param_space.update(fixed)
    # The fixed training parameters (ASHA's max_t is the epochs); a bad fixed value fails here, not per trial.
    base = trial_train_config(fixed, base=base)

    objectives = tuple((REPORTED[n], m) for n, m in space.objectives)
    import optuna

    from rmd_ray.distributed.tuning.samplers import PicklableNSGAIISampler

    searcher = OptunaSearch(
        metric=[n for n, _ in objectives],
        mode=[m for _, m in objectives],
        sampler=PicklableNSGAIISampler(seed=seed)
        if len(objectives) > 1
        else optuna.samplers.TPESampler(seed=seed),
    )
    sched_metric, sched_mode = REPORTED[space.scheduler_metric[0]], space.scheduler_metric[1]
    scheduler = ASHAScheduler(
        metric=sched_metric,
        mode=sched_mode,
        time_attr="training_iteration",
        # one past the last epoch: ASHA then never stops a trial that reports its last epoch, so the trial
        # function returns and Ray Train shuts down cleanly (a stop would end the run mid-shutdown)
        max_t=base.optim.epochs + 1,
        grace_period=min(space.grace_period, base.optim.epochs),
    )
    output_dir = os.fspath(output_dir) if storage.is_remote(output_dir) else str(Path(output_dir).resolve())
    train_source, val_source = (_plan(x) for x in (train, val))
    stats = channel_statistics(train_source, base)
    trainable = tune.with_parameters(
        _trial,
        train=train_source,
        val=val_source,
        scores=scores,
        base=base,
        output_dir=output_dir,
        stats=stats,
    )
    # The trial function only drives the TorchTrainer; its workers hold the CPUs.
    trainable = tune.with_resources(trainable, {"CPU": 0.01})
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=space.num_samples,
            max_concurrent_trials=space.max_concurrent_trials,
        ),
        run_config=tune.RunConfig(
            name=space.name, **_tune_storage(output_dir),
            callbacks=[TBXLoggerCallback(), _reclaim_callback()],
        ),
    )
    grid = tuner.fit()
    _reclaim_after_search()
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
        for name, _ in objectives + ((sched_metric, sched_mode),):
            row[name] = float(metrics.get(name, math.nan))
        row["epochs_run"] = int(metrics.get("training_iteration", 0))
        rows.append(row)
        # the trial's last reported checkpoint (TuneReportCallback's key; Ray Train always keeps the latest)
        checkpoints[row["trial"]] = metrics.get("checkpoint_path")
    if rows and all(r["error"] for r in rows):
        raise RuntimeError(f"every trial failed; the first error:\n{rows[0]['error'][-2000:]}")
    front = pareto_front(rows, objectives)
    front_ids = {r["trial"] for r in front}
    for row in rows:
        row["pareto"] = row["trial"] in front_ids
    tested: list[str] = []
    if test is not None:  # after selection, once per selected trial
        tested = _test_front(_plan(test), train_source, front, checkpoints, base=base, output_dir=output_dir)
        for row in rows:
            for name in _TEST_METRICS:
                row[f"test_{name}"] = row.pop(f"_test_{name}", math.nan)
    table = pa.Table.from_pylist(
        [{k: (str(v) if isinstance(v, (list, dict)) else v) for k, v in r.items()} for r in rows]
    )
    results_path = storage.write_parquet_atomic(
        table, storage.join(output_dir, "tune_results.parquet"),
        # what every trial was ranked on (a split of the training data, or the source given)
        metadata={"space": space.name, "objectives": list(objectives), "val": val_source.description,
                  # the test split's one use: these trials, after the search
                  "test": None if test is None else {"trials_predicted": tested, "after_selection": True}},
    )
    import pyarrow.csv as pacsv

    csv = pa.BufferOutputStream()
    pacsv.write_csv(table, csv)
    storage.write_bytes_atomic(storage.join(output_dir, "tune_results.csv"), csv.getvalue())
    pareto_path = _plot_pareto(rows, front, objectives, storage.join(output_dir, "pareto.png"))
    return TuneResult(results_path, pareto_path, grid.experiment_path, len(rows), front)


#: The metrics written as ``test_<name>`` for the Pareto-front trials.
_TEST_METRICS = ("acc", "ece_mass", "ece_width", "nll")


def _test_front(test, train, front, checkpoints, *, base: TrainConfig, output_dir: str) -> list[str]:
    """Predict ``test`` once with each front trial's last checkpoint; its metrics go into the row."""
    import ray

    from rmd_ray.distributed.prediction.predict import classifier_from_checkpoint, predict_source
    from rmd_ray.distributed.training.config import CHECKPOINT_FILE
    from rmd_ray.distributed.training.run import _prediction_metrics, _uri_of

    if test.classes != train.classes:
        raise ValueError(
            f"the test source names {len(test.classes)} classes but training names {len(train.classes)}; labels "
            "are class indices, so the test split needs the training split's class list"
        )
    trials_uri = storage.join(output_dir, "trials")
    base_path = storage.resolve(trials_uri)[1] if storage.is_remote(trials_uri) else ""
    tested = []
    for row in front:
        path = checkpoints.get(row["trial"])
        if not path:
            log.warning("trial %s reported no checkpoint: its test metrics stay NaN", row["trial"])
            continue
        checkpoint = _uri_of(trials_uri, base_path, path)
        uri = storage.join(output_dir, "test", f"{row['trial']}.parquet")
        predict_source(
            test, classifier_from_checkpoint(storage.join(checkpoint, CHECKPOINT_FILE)), uri,
            batch_size=max(base.batch_size, 256), gpus_per_actor=1.0 if base.use_gpu else 0.0,
            metadata={"split": "test", "trial": row["trial"], "checkpoint": checkpoint},
        )
        metrics = ray.get(_prediction_metrics.remote(uri))
        for name in _TEST_METRICS:
            row[f"_test_{name}"] = float(metrics[name])
        tested.append(row["trial"])
    return tested


def _plan(value):
    from rmd_ray.distributed.sources.plan import open_source, source_from_table

    if isinstance(value, pa.Table):
        return source_from_table(value)
    return open_source(value) if isinstance(value, str) else value


def _tune_storage(output_dir: str) -> dict[str, Any]:
    if storage.is_remote(output_dir):
        filesystem, path = storage.resolve(storage.join(output_dir, "tune"))
        return {"storage_path": path, "storage_filesystem": filesystem}
    return {"storage_path": os.path.join(output_dir, "tune")}

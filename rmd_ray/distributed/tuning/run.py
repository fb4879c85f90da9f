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

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from rmd_ray.distributed.runtime.cluster import count_actor_made_placement_groups, reclaim_orphaned_placement_groups
from rmd_ray.distributed.sources.plan import ShardedSource
from rmd_ray.distributed.training import TrainConfig
from rmd_ray.distributed.training.inputs import channel_statistics
from rmd_ray.distributed.tuning.results import collect_rows, pareto_front, test_front, write_results
from rmd_ray.distributed.tuning.trials import run_trial, trial_train_config, trial_weights, validate_backbones
from rmd_ray.io import storage
from rmd_ray.nn.search_space import SearchSpace

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


__all__ = ["REPORTED", "TuneResult", "pareto_front", "run_tune", "trial_train_config", "trial_weights",
           "validate_backbones"]


@dataclass(frozen=True)
class TuneResult:
    """Where the results went, how many trials ran, and the Pareto-front rows."""

    results_path: str
    pareto_path: str
    experiment_path: str
    n_trials: int
    pareto: list[dict[str, Any]]


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
    callbacks: Sequence[Any] = (),
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
    ``callbacks`` are further Tune callbacks (``rmd-ray tune --mlflow``: Ray's ``MLflowLoggerCallback``).
    """
    scores = validate_backbones(space, scores_paths or {})
    # The fixed training parameters (ASHA's max_t is the epochs); a bad fixed value fails here, not per trial.
    base = trial_train_config(dict(space.fixed), base=base)
    objectives = tuple((REPORTED[n], m) for n, m in space.objectives)
    output_dir = os.fspath(output_dir) if storage.is_remote(output_dir) else str(Path(output_dir).resolve())
    train_source, val_source = (_plan(x) for x in (train, val))
    tuner = _tuner(space, base, objectives, seed=seed, output_dir=output_dir, callbacks=callbacks, trial_args={
        "train": train_source, "val": val_source, "scores": scores, "base": base, "output_dir": output_dir,
        "stats": channel_statistics(train_source, base),
    })
    grid = tuner.fit()
    _reclaim_after_search()
    sched_metric = REPORTED[space.scheduler_metric[0]]
    wanted = list(dict.fromkeys([n for n, _ in objectives] + [sched_metric]))
    rows, checkpoints = collect_rows(grid, base=base, metrics_wanted=wanted)
    front = pareto_front(rows, objectives)
    tested = None
    if test is not None:  # after selection, once per selected trial
        tested = test_front(_plan(test), train_source, rows, front, checkpoints, base=base, output_dir=output_dir)
    results_path, pareto_path = write_results(rows, front, objectives, output_dir=output_dir, space_name=space.name,
                                              val_description=val_source.description, tested=tested)
    return TuneResult(results_path, pareto_path, grid.experiment_path, len(rows), front)


def _param_space(space: SearchSpace) -> dict[str, Any]:
    """Tune's param_space: each searched key as a Tune distribution, every fixed value as it is."""
    from ray import tune

    param_space: dict[str, Any] = {}
    for name, dist in dict(space.search).items():
        if dist.kind == "choice":
            param_space[name] = tune.choice(list(dist.values))
        elif dist.kind == "uniform":
            param_space[name] = tune.uniform(dist.low, dist.high)
        elif dist.kind == "loguniform":
            param_space[name] = tune.loguniform(dist.low, dist.high)
        else:
            param_space[name] = tune.randint(int(dist.low), int(dist.high))
    # Every fixed value reaches every trial's config, so a trial reads fixed and searched keys alike.
    param_space.update(dict(space.fixed))
    return param_space


def _tuner(space: SearchSpace, base: TrainConfig, objectives, *, seed: int, output_dir: str, callbacks, trial_args):
    """The Tuner: NSGA-II (two objectives) or TPE through OptunaSearch, ASHA on the scheduler metric."""
    import optuna
    from ray import tune
    from ray.tune.logger import TBXLoggerCallback
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from rmd_ray.distributed.tuning.samplers import PicklableNSGAIISampler

    searcher = OptunaSearch(
        metric=[n for n, _ in objectives],
        mode=[m for _, m in objectives],
        sampler=PicklableNSGAIISampler(seed=seed) if len(objectives) > 1 else optuna.samplers.TPESampler(seed=seed),
    )
    scheduler = ASHAScheduler(
        metric=REPORTED[space.scheduler_metric[0]],
        mode=space.scheduler_metric[1],
        time_attr="training_iteration",
        # one past the last epoch: ASHA then never stops a trial that reports its last epoch, so the trial
        # function returns and Ray Train shuts down cleanly (a stop would end the run mid-shutdown)
        max_t=base.optim.epochs + 1,
        grace_period=min(space.grace_period, base.optim.epochs),
    )
    # The trial function only drives the TorchTrainer; its workers hold the CPUs.
    trainable = tune.with_resources(tune.with_parameters(run_trial, **trial_args), {"CPU": 0.01})
    return tune.Tuner(
        trainable,
        param_space=_param_space(space),
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler, num_samples=space.num_samples,
            max_concurrent_trials=space.max_concurrent_trials,
        ),
        run_config=tune.RunConfig(
            name=space.name, **_tune_storage(output_dir),
            callbacks=[TBXLoggerCallback(), _reclaim_callback(), *callbacks],
        ),
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

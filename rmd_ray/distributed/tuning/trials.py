"""One Tune trial: its TrainConfig and difficulty weights from the trial's values, and the trial function
that runs :func:`~rmd_ray.distributed.training.run_training` with Ray's ``TuneReportCallback``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from rmd_ray.core import WeightConfig
from rmd_ray.core.difficulty import DIFFICULTY_COLUMNS, source_column, weights_from_columns
from rmd_ray.distributed.training import TrainConfig, loss_needs_weights, run_training
from rmd_ray.io import storage
from rmd_ray.io.parts import column_names, read_table
from rmd_ray.nn.losses import LOSSES, tunable_hparams
from rmd_ray.nn.search_space import SearchSpace, is_known, known_keys, own_values

__all__ = ["run_trial", "trial_train_config", "trial_weights", "validate_backbones"]


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


def run_trial(trial: dict[str, Any], *, train, val, scores, base: TrainConfig, output_dir: str, stats) -> None:
    """The trial function: train one trial's config on the shared planned sources, reporting every epoch."""
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

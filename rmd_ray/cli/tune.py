"""``rmd-ray tune``: Ray Tune over the loss and its hyper-parameters."""

from __future__ import annotations

import argparse
import math

from rmd_ray.cli.common import check_tracking_args, parse_pairs, print_table
from rmd_ray.cli.console import start_ray
from rmd_ray.cli.train import check_model_weights, check_validation_args, plan_validation, train_config


def cmd_tune(args: argparse.Namespace) -> int:
    from rmd_ray.distributed.sources.plan import check_source_spec, open_source
    from rmd_ray.distributed.training.run import TRAIN_SHARD_ROWS
    from rmd_ray.distributed.tuning.run import run_tune
    from rmd_ray.nn.search_space import load_search_space

    space = load_search_space(args.space)
    scores = parse_pairs(args.scores, what="--scores")
    base = train_config(args, loss="proposed", hparams={})
    check_source_spec(args.train_source)
    check_validation_args(args)
    check_model_weights(args)
    check_tracking_args(args)
    start_ray(args)
    train = open_source(args.train_source, limit=args.limit, shard_rows=TRAIN_SHARD_ROWS)
    # every trial is ranked on this validation data, never on a test split: by default a seeded,
    # stratified part of the training data whose ids go to <output>/val_split.parquet
    train, val, _ = plan_validation(args, train, record_dir=args.output)
    # the test split is touched once, after the search: the Pareto-front trials' last checkpoints predict it
    test = None if args.test_source.lower() in ("", "none") else open_source(args.test_source, limit=args.test_limit)
    callbacks = []
    if args.mlflow is not None:  # one MLflow run per trial, logged by Ray's MLflowLoggerCallback
        from rmd_ray import __version__
        from rmd_ray.distributed.runtime.tracking import tune_callback

        experiment = args.mlflow_experiment or space.name
        callbacks.append(tune_callback(args.mlflow, experiment=experiment, tags={
            "space": space.name, "model": base.model, "train_source": args.train_source, "rmd_ray_version": __version__,
        }))
    result = run_tune(
        space, train=train, val=val, test=test, scores_paths=scores, base=base, output_dir=args.output,
        callbacks=callbacks,
    )
    print(f"{result.n_trials} trials; {len(result.pareto)} on the Pareto front (ranked on {val.description})")
    if test is not None:
        print(f"test split {args.test_source}: predicted once, after the search, by the Pareto-front trials")
        tested = [row for row in result.pareto if math.isfinite(row.get("test_acc", math.nan))]
        print_table({row["trial"]: {k[5:]: v for k, v in row.items() if k.startswith("test_")} for row in tested})
    print(f"results: {result.results_path}")
    print(f"pareto:  {result.pareto_path}")
    print(f"tensorboard --logdir {result.experiment_path}")
    if args.mlflow is not None:
        print(f"mlflow: one run per trial in experiment {experiment!r} at {args.mlflow}")
    return 0

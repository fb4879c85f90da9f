"""``rmd-ray tune``: Ray Tune over the loss and its hyper-parameters."""

from __future__ import annotations

import argparse

from rmd_ray.cli.common import _parse_pairs
from rmd_ray.cli.console import start_ray
from rmd_ray.cli.train import _train_config, check_validation_args, plan_validation


def cmd_tune(args: argparse.Namespace) -> int:
    from rmd_ray.distributed.sources import check_source_spec, open_source
    from rmd_ray.distributed.training.run import TRAIN_SHARD_ROWS
    from rmd_ray.distributed.tune_space import load_search_space
    from rmd_ray.distributed.tuning import run_tune

    space = load_search_space(args.space)
    scores = _parse_pairs(args.scores, what="--scores")
    base = _train_config(args, loss="proposed", hparams={})
    check_source_spec(args.train_source)
    check_validation_args(args)
    start_ray(args)
    train = open_source(args.train_source, limit=args.limit, shard_rows=TRAIN_SHARD_ROWS)
    # every trial is ranked on this validation data, never on a test split: by default a seeded,
    # stratified part of the training data whose ids go to <output>/val_split.parquet
    train, val, _ = plan_validation(args, train, record_dir=args.output)
    result = run_tune(space, train=train, val=val, scores_paths=scores, base=base, output_dir=args.output)
    print(f"{result.n_trials} trials; {len(result.pareto)} on the Pareto front")
    print(f"results: {result.results_path}")
    print(f"pareto:  {result.pareto_path}")
    print(f"tensorboard --logdir {result.experiment_path}")
    return 0

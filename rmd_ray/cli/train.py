"""``rmd-ray train``: one Ray Train run with a difficulty-aware or baseline loss."""

from __future__ import annotations

import argparse
from pathlib import Path

from rmd_ray.cli.common import DEFAULT_SOURCE, check_tracking_args, number, parse_pairs, print_table
from rmd_ray.cli.console import start_ray

#: The MLflow experiment of ``rmd-ray train --mlflow`` without ``--mlflow-experiment``.
DEFAULT_EXPERIMENT = "rmd-ray-train"
#: The data flags of a run, logged with its configuration as MLflow parameters.
_DATA_PARAMS = ("train_source", "limit", "val_source", "val_fraction", "val_limit", "split_seed", "test_source",
                "test_limit", "scores")
#: ``--val-fraction`` when neither it nor ``--val-source`` is given.
DEFAULT_VAL_FRACTION = 0.1
#: ``rmd-ray train``'s test split when it trains on the default source.
DEFAULT_TEST_SOURCE = "fashion-mnist:test"


def add_train_args(
    parser: argparse.ArgumentParser,
    *,
    epochs: int,
    width: float,
    limit: int | None,
    val_limit: int | None,
    with_source: bool = True,
    split: bool = True,
    test: bool = True,
) -> None:
    if with_source:  # `run` trains on its --source / --limit
        parser.add_argument("--train-source", default=DEFAULT_SOURCE, help="training data (a source spec)")
        parser.add_argument("--limit", type=int, default=limit, help="first N training rows")
    if split:
        _add_split_args(parser, val_limit=val_limit, test=test)
    else:  # `run`: its fixed settings select nothing; the test split is its evaluation data, as before
        parser.add_argument("--val-source", default="fashion-mnist:test", help="evaluation data (a source spec)")
        parser.add_argument("--val-limit", type=int, default=val_limit, help="first N evaluation rows")
        parser.set_defaults(carve_validation=False)
    parser.add_argument(
        "--model", default="resnet18",
        help="a built-in (resnet18, resnet34, resnet50, ...), timm:<name> or torchvision:<name> (random init)",
    )
    parser.add_argument(
        "--width", type=float, default=None,
        help=f"channel multiplier of a built-in model (default {width:g}; 1.0: torchvision's); timm: and "
        "torchvision: models are built at width 1",
    )
    parser.set_defaults(default_width=width)
    parser.add_argument(
        "--model-weights", default=None, metavar="PATH",
        help="initial weights: a state dict (.pt / .pth, read weights-only, or .safetensors; a path or URI), e.g. "
        "ImageNet weights of a timm: / torchvision: model saved with torch.save(model.state_dict(), PATH); a "
        "classifier head of another size is left at random init",
    )
    parser.add_argument("--imagenet-stem", action="store_true", help="7x7 stem + max-pool (default: CIFAR stem)")
    parser.add_argument(
        "--train-image-size", type=int, default=None,
        help="model input side (cifar geometry: resize, default native; imagenet: crop side, default 224)",
    )
    parser.add_argument(
        "--augment", default="auto", choices=["auto", "cifar", "imagenet"],
        help="geometry + augmentation: cifar (pad-4 crop + flip), imagenet (RandomResizedCrop + flip; eval "
        "resize 256 / center crop 224); auto: cifar up to 64 px, else imagenet",
    )
    parser.add_argument(
        "--shuffle", default="fresh", choices=["fresh", "seeded"],
        help="fresh: new shard and row order every epoch; seeded: fixed by --seed (reproducible)",
    )
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--schedule", default="cosine", choices=["cosine", "multistep"])
    parser.add_argument("--train-batch-size", dest="batch_size", type=int, default=128)
    parser.add_argument("--num-workers", type=int, default=1, help="Ray Train workers (data parallel)")
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument("--use-gpu", action="store_true")
    parser.add_argument("--seed", type=int, default=0)


def add_fault_args(parser: argparse.ArgumentParser) -> None:
    """``rmd-ray train``'s answer to a lost node: elastic training, and how long to wait for room."""
    parser.add_argument(
        "--min-workers", type=int, default=None,
        help="elastic training: go on with as few as this many workers when nodes are lost (default: always "
        "--num-workers; a lost node must then be replaced)",
    )
    parser.add_argument(
        "--placement-timeout", type=float, default=None, metavar="SECONDS",
        help="stop, naming the last checkpoint, when the cluster cannot place the workers for this long "
        "(default 600); rerunning the same command continues from that checkpoint",
    )


def _add_split_args(parser: argparse.ArgumentParser, *, val_limit: int | None, test: bool) -> None:
    parser.add_argument(
        "--val-fraction", type=float, default=None,
        help=f"share of each class of the training data held out for validation and selection (seeded, "
        f"stratified; default {DEFAULT_VAL_FRACTION}); the ids are written to val_split.parquet in the output",
    )
    parser.add_argument("--split-seed", type=int, default=None, help="seed of the validation split (default 0)")
    parser.add_argument(
        "--val-source", default=None,
        help="validation data (a source spec) instead of a split of the training data; excludes --val-fraction",
    )
    parser.add_argument("--val-limit", type=int, default=val_limit, help="first N rows of --val-source")
    if test:
        parser.add_argument(
            "--test-source", default=None,
            help="test data (a source spec, or 'none'), predicted once, after training (default: fashion-mnist:test "
            f"when training on the default {DEFAULT_SOURCE}, else none)",
        )
        parser.add_argument("--test-limit", type=int, default=None, help="first N test rows")
    parser.set_defaults(carve_validation=True)


def check_validation_args(args: argparse.Namespace) -> None:
    """Check the validation flags before Ray starts; fills in the default ``--val-fraction``."""
    from rmd_ray.distributed.sources.plan import check_source_spec

    if not getattr(args, "carve_validation", False):
        return
    if args.val_source is not None:
        if args.val_fraction is not None:
            raise ValueError(
                "--val-fraction and --val-source both given: --val-source is the validation data, --val-fraction "
                "carves it out of the training data; pass one of them"
            )
        if args.split_seed is not None:
            raise ValueError("--split-seed seeds the split --val-fraction draws; with --val-source there is none")
        check_source_spec(args.val_source)
    else:
        if args.val_limit is not None:
            raise ValueError(
                "--val-limit applies to --val-source only; a validation split of the training data is sized by "
                "--val-fraction (and --limit)"
            )
        if args.val_fraction is None:
            args.val_fraction = DEFAULT_VAL_FRACTION
        if not 0.0 < args.val_fraction < 1.0:  # NaN fails too
            raise ValueError(
                f"--val-fraction must be in (0, 1) (the share of each class held out), got {args.val_fraction:g}; "
                f"e.g. {DEFAULT_VAL_FRACTION}"
            )
        if args.split_seed is None:
            args.split_seed = 0
    if hasattr(args, "test_source"):
        if args.test_source is None:  # another training source's classes would not match Fashion-MNIST's test
            args.test_source = DEFAULT_TEST_SOURCE if args.train_source == DEFAULT_SOURCE else "none"
        if args.test_source.lower() not in ("", "none"):
            check_source_spec(args.test_source)


def plan_validation(args: argparse.Namespace, train, *, record_dir):
    """(train, val, split): the training source and its validation data, as ``args`` ask.

    With ``--val-source`` the training source is kept whole and ``split`` is None. Otherwise a seeded,
    stratified ``--val-fraction`` of it is carved out (ids read in Ray tasks, nothing decoded) and its
    ids are written to ``<record_dir>/val_split.parquet`` before training starts.
    """
    from rmd_ray.distributed.sources.holdout import split_source, write_val_split
    from rmd_ray.distributed.sources.plan import open_source

    if not getattr(args, "carve_validation", False) or args.val_source is not None:
        return train, open_source(args.val_source, limit=args.val_limit), None
    split = split_source(train, fraction=args.val_fraction, seed=args.split_seed)
    path = write_val_split(split, record_dir)
    print(
        f"validation split: {split.val.n_rows} of {train.n_rows} training rows ({args.val_fraction:g} of each "
        f"class, seed {args.split_seed}) -> {path}",
        flush=True,
    )
    return split.train, split.val, split


def train_config(args: argparse.Namespace, *, loss: str, hparams: dict):
    from rmd_ray.core import WeightConfig
    from rmd_ray.distributed.training import TrainConfig
    from rmd_ray.nn.engine import OptimConfig

    difficulty = getattr(args, "difficulty", None)  # `run` trains on the weights as scored
    weight_config = (
        WeightConfig(temperature=args.temperature, normalization=args.normalization) if difficulty else WeightConfig()
    )
    # `rmd-ray train` only (add_fault_args): the others keep TrainConfig's defaults
    fault = {name: value for name, value in (("min_workers", getattr(args, "min_workers", None)),
                                             ("placement_timeout_s", getattr(args, "placement_timeout", None)))
             if value is not None}
    return TrainConfig(
        **fault,
        difficulty=difficulty,
        weight_config=weight_config,
        model=args.model,
        width=args.width if args.width is not None else (1.0 if ":" in args.model else args.default_width),
        cifar_stem=not args.imagenet_stem,
        loss=loss,
        loss_hparams=hparams,
        optim=OptimConfig(lr=args.lr, epochs=args.epochs, schedule=args.schedule, weight_decay=args.weight_decay),
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        cpus_per_worker=args.cpus_per_worker,
        use_gpu=args.use_gpu,
        image_size=args.train_image_size,
        preset=args.augment,
        shuffle=args.shuffle,
        seed=args.seed,
        model_weights=args.model_weights,
    )


def check_model_weights(args: argparse.Namespace) -> None:
    """Read ``--model-weights`` once before Ray starts: a missing, pickled or corrupt file fails in one line.

    Whether it fits the model is checked once the classes are known (``run_training``'s planning).
    """
    from rmd_ray.nn.safe_load import read_state_dict

    if args.model_weights is None:
        return
    try:
        read_state_dict(args.model_weights)
    except FileNotFoundError:
        raise ValueError(
            f"--model-weights {args.model_weights!r} not found: pass a state dict file (.pt, .pth or .safetensors)"
        ) from None


def train_one_run(args: argparse.Namespace, *, loss: str, hparams: dict, scores_path, output: str, run_name: str):
    from rmd_ray.distributed.runtime.dashboards import TrainProgressCallback
    from rmd_ray.distributed.sources.plan import check_source_spec, open_source
    from rmd_ray.distributed.training import loss_needs_weights, run_training
    from rmd_ray.distributed.training.run import TRAIN_SHARD_ROWS
    from rmd_ray.io import storage

    try:
        config = train_config(args, loss=loss, hparams=hparams)  # validates before any data is read
    except TypeError as err:  # a hyper-parameter of the wrong type: name the --loss-param item
        raise ValueError(loss_param_error(getattr(args, "loss_param", None), err)) from None
    if loss_needs_weights(config.loss) and not scores_path:
        raise ValueError(
            f"loss {config.loss!r} needs difficulty weights: pass --scores <scores.parquet from rmd-ray score>"
        )
    check_source_spec(args.train_source)
    if args.carve_validation:
        check_validation_args(args)
    else:
        check_source_spec(args.val_source)
    check_model_weights(args)
    check_tracking_args(args)
    start_ray(args)
    # planned, not read: the images are read and decoded in Ray tasks, every epoch
    train = open_source(args.train_source, limit=args.limit, shard_rows=TRAIN_SHARD_ROWS)
    train, val, _ = plan_validation(args, train, record_dir=storage.join(str(output), run_name))
    if not args.carve_validation:
        test = val  # `run`: its evaluation data is the test split, and nothing is selected on it
    elif args.test_source.lower() in ("", "none"):
        test = None
    else:  # predicted once, after training (run_training's last step); nothing is chosen from it
        test = open_source(args.test_source, limit=args.test_limit)
    args.tensorboard_dir = tensorboard_dir(output, run_name)
    board = TrainProgressCallback(
        f"train {run_name}",
        epochs=config.optim.epochs,
        rows_per_epoch=train.n_rows,
        tensorboard_dir=args.tensorboard_dir,
    )
    return tracked(args, config, run_name=run_name, fit=lambda tracking: run_training(
        train,
        val=val,
        test=test,
        scores=str(scores_path) if scores_path else None,
        config=config,
        output_dir=str(output),
        run_name=run_name,
        callbacks=[board, *tracking],
    ))


def tracked(args: argparse.Namespace, config, *, run_name: str, fit):
    """``fit(callbacks)`` inside the MLflow run of ``--mlflow`` (``fit([])`` without one).

    The run is opened before training (parameters: the config and the data flags), gets each epoch's
    metrics from the Ray Train controller, and is closed with the final artefacts, or as FAILED.
    """
    import dataclasses

    if getattr(args, "mlflow", None) is None:
        return fit([])
    from rmd_ray.distributed.runtime.tracking import MLflowEpochCallback, end_train_run, start_train_run

    params = {**dataclasses.asdict(config), "loss_hparams": dict(config.loss_hparams), "run_name": run_name,
              "data": {name: getattr(args, name, None) for name in _DATA_PARAMS}}
    experiment = args.mlflow_experiment or DEFAULT_EXPERIMENT
    run_id = start_train_run(args.mlflow, experiment=experiment, run_name=run_name, params=params)
    try:
        result = fit([MLflowEpochCallback(args.mlflow, run_id=run_id)])
    except BaseException:
        end_train_run(failed=True)
        raise
    end_train_run(result)
    print(f"mlflow: run {run_id} in experiment {experiment!r} at {args.mlflow}", flush=True)
    return result


def loss_param_error(items: list[str] | None, err: TypeError) -> str:
    """One line for a loss hyper-parameter of the wrong type, naming the ``--loss-param`` item behind it."""
    text = str(err)
    for item in items or []:
        name, _, value = item.partition("=")
        if f" {name} must be " in text:
            want = text.split(f" {name} must be ", 1)[1].rsplit(", got ", 1)[0]
            return f"--loss-param {item}: {name} must be {want}, got {value!r}"
    return f"{text} (check --loss-param)"


def tensorboard_dir(output: str, run_name: str) -> Path:
    """``<output>/<run_name>/tensorboard``; for a URI output, a local temporary folder (TensorBoard
    appends to its event files as training goes, which object stores do not allow)."""
    import tempfile

    from rmd_ray.io.storage import is_remote

    if is_remote(str(output)):
        return Path(tempfile.mkdtemp(prefix=f"rmd-ray-tensorboard-{run_name}-"))
    return Path(output) / run_name / "tensorboard"


def cmd_train(args: argparse.Namespace) -> int:
    hparams = {k: number(v) for k, v in parse_pairs(args.loss_param, what="--loss-param").items()}
    result = train_one_run(
        args,
        loss=args.loss,
        hparams=hparams,
        scores_path=args.scores,
        output=str(args.output),
        run_name=args.run_name or args.loss,
    )
    print_table({args.run_name or args.loss: result.test_metrics or result.final_val})
    print(f"predictions: {result.predictions_path}")
    print(f"checkpoint:  {result.last_checkpoint}")
    print(f"tensorboard --logdir {args.tensorboard_dir}")
    return 0

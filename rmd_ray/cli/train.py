"""``rmd-ray train``: one Ray Train run with a difficulty-aware or baseline loss."""

from __future__ import annotations

import argparse
from pathlib import Path

from rmd_ray.cli.common import DEFAULT_SOURCE, _number, _parse_pairs, _print_table
from rmd_ray.cli.console import start_ray


def _add_train_args(
    parser: argparse.ArgumentParser,
    *,
    epochs: int,
    width: float,
    limit: int | None,
    val_limit: int | None,
    with_source: bool = True,
) -> None:
    if with_source:  # `run` trains on its --source / --limit
        parser.add_argument("--train-source", default=DEFAULT_SOURCE, help="training data (a source spec)")
        parser.add_argument("--limit", type=int, default=limit, help="first N training rows")
    parser.add_argument("--val-source", default="fashion-mnist:test", help="evaluation data (a source spec)")
    parser.add_argument("--val-limit", type=int, default=val_limit, help="first N evaluation rows")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--width", type=float, default=width, help="channel multiplier (1.0: torchvision's)")
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


def _train_config(args: argparse.Namespace, *, loss: str, hparams: dict):
    from rmd_ray.distributed.training import TrainConfig
    from rmd_ray.nn.engine import OptimConfig

    return TrainConfig(
        model=args.model,
        width=args.width,
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
    )


def _train(args: argparse.Namespace, *, loss: str, hparams: dict, scores_path, output: Path, run_name: str):
    from rmd_ray.distributed.dashboards import TrainProgressCallback
    from rmd_ray.distributed.sources import check_source_spec, open_source
    from rmd_ray.distributed.training import loss_needs_weights, run_training
    from rmd_ray.distributed.training.run import TRAIN_SHARD_ROWS

    config = _train_config(args, loss=loss, hparams=hparams)  # validates before any data is read
    if loss_needs_weights(config.loss) and not scores_path:
        raise ValueError(
            f"loss {config.loss!r} needs difficulty weights: pass --scores <scores.parquet from rmd-ray score>"
        )
    check_source_spec(args.train_source)
    check_source_spec(args.val_source)
    start_ray(args)
    # planned, not read: the images are read and decoded in Ray tasks, every epoch
    train = open_source(args.train_source, limit=args.limit, shard_rows=TRAIN_SHARD_ROWS)
    val = open_source(args.val_source, limit=args.val_limit)
    args.tensorboard_dir = tensorboard_dir(output, run_name)
    board = TrainProgressCallback(
        f"train {run_name}",
        epochs=config.optim.epochs,
        rows_per_epoch=train.n_rows,
        tensorboard_dir=args.tensorboard_dir,
    )
    return run_training(
        train,
        val=val,
        test=val,
        scores=str(scores_path) if scores_path else None,
        config=config,
        output_dir=str(output),
        run_name=run_name,
        callbacks=[board],
    )


def tensorboard_dir(output, run_name: str) -> Path:
    """``<output>/<run_name>/tensorboard``; for a URI output, a local temporary folder (TensorBoard
    appends to its event files as training goes, which object stores do not allow)."""
    import tempfile

    from rmd_ray.data.storage import is_remote

    if is_remote(str(output)):
        return Path(tempfile.mkdtemp(prefix=f"rmd-ray-tensorboard-{run_name}-"))
    return Path(output) / run_name / "tensorboard"


def cmd_train(args: argparse.Namespace) -> int:
    hparams = {k: _number(v) for k, v in _parse_pairs(args.loss_param, what="--loss-param").items()}
    result = _train(
        args,
        loss=args.loss,
        hparams=hparams,
        scores_path=args.scores,
        output=Path(args.output),
        run_name=args.run_name or args.loss,
    )
    _print_table({args.run_name or args.loss: result.test_metrics or result.final_val})
    print(f"predictions: {result.predictions_path}")
    print(f"checkpoint:  {result.last_checkpoint}")
    print(f"tensorboard --logdir {args.tensorboard_dir}")
    return 0

"""``rmd-ray train``: one Ray Train run with a difficulty-aware or baseline loss."""

from __future__ import annotations

import argparse
from pathlib import Path

from rmd_ray.cli.common import DEFAULT_SOURCE, _number, _parse_pairs, _print_table


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
    parser.add_argument("--train-image-size", type=int, default=None, help="resize training images (default: native)")
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
        seed=args.seed,
    )


def _train(args: argparse.Namespace, *, loss: str, hparams: dict, scores_path, output: Path, run_name: str):
    from rmd_ray.data.parts import read_table
    from rmd_ray.data.readers import read_source
    from rmd_ray.distributed.runtime import init_ray
    from rmd_ray.distributed.training import loss_needs_weights, run_training

    config = _train_config(args, loss=loss, hparams=hparams)  # validates before any data is read
    if loss_needs_weights(config.loss) and not scores_path:
        raise ValueError(
            f"loss {config.loss!r} needs difficulty weights: pass --scores <scores.parquet from rmd-ray score>"
        )
    train = read_source(args.train_source, limit=args.limit)
    val = read_source(args.val_source, limit=args.val_limit)
    init_ray(args.address, num_cpus=args.num_cpus)
    scores = read_table(scores_path) if scores_path else None
    return run_training(
        train, val_table=val, test_table=val, scores=scores, config=config, output_dir=output, run_name=run_name
    )


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
    return 0

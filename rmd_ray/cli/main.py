"""The ``rmd-ray`` parser (one sub-command per module of this package) and ``main``."""

from __future__ import annotations

import argparse
import sys
import traceback
from typing import Any

from rmd_ray.cli.common import (
    add_ray_args,
    add_tracking_args,
    check_output,
    check_output_outside_sources,
    file_error_line,
)
from rmd_ray.cli.console import setup_console
from rmd_ray.cli.evaluate import add_shift_args, cmd_evaluate
from rmd_ray.cli.label_issues import cmd_find_label_issues
from rmd_ray.cli.report import cmd_report
from rmd_ray.cli.run import SMOKE_TEST, cmd_run
from rmd_ray.cli.score import add_score_args, cmd_score
from rmd_ray.cli.train import DEFAULT_EXPERIMENT, add_fault_args, add_train_args, cmd_train
from rmd_ray.cli.tune import cmd_tune
from rmd_ray.core.difficulty import DIFFICULTY_SOURCES
from rmd_ray.core.weights import NORMALIZATIONS


def build_parser() -> argparse.ArgumentParser:
    """The ``rmd-ray`` parser: global options, then one sub-command per module, in help order.

    Each ``_add_*_command(sub)`` adds one sub-parser to ``sub``, the ``add_subparsers`` action.
    """
    parser = argparse.ArgumentParser(prog="rmd-ray", description="Sample difficulty from pre-trained models, on Ray.")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_score_command(sub)
    _add_label_issues_command(sub)
    _add_train_command(sub)
    _add_evaluate_command(sub)
    _add_report_command(sub)
    _add_tune_command(sub)
    _add_run_command(sub)
    return parser


def _add_score_command(sub: Any) -> None:
    score = sub.add_parser("score", help="embed a dataset and write per-sample RMD difficulty and weights")
    add_score_args(score)
    add_ray_args(score)
    score.add_argument("--output", required=True, help="output folder")
    score.set_defaults(func=cmd_score)


def _add_label_issues_command(sub: Any) -> None:
    issues = sub.add_parser("find-label-issues", help="rank samples by likely label error and show the top suspects")
    issues.add_argument("--scores", required=True, help="scores.parquet from `rmd-ray score`")
    issues.add_argument("--source", required=True, help="the source that was scored (for the images)")
    issues.add_argument("--top", type=int, default=100)
    issues.add_argument("--output", required=True)
    issues.add_argument(
        "--score", choices=["rmd", "margin", "combined"], default="combined",
        help="ranking: RMD, the Mahalanobis margin MD(x, y) - min_{k!=y} MD(x, k), or the mean of the two ranks "
        "(default combined: the winner of benchmarks/label_noise.py)",
    )
    issues.set_defaults(func=cmd_find_label_issues)


def _add_train_command(sub: Any) -> None:
    train = sub.add_parser("train", help="train a classifier with a difficulty-aware or baseline loss (Ray Train)")
    add_train_args(train, epochs=30, width=1.0, limit=None, val_limit=None)
    add_fault_args(train)
    add_ray_args(train)
    train.add_argument("--loss", default="proposed", help="loss registry name (proposed, ce, entropy_reg, ...)")
    train.add_argument("--loss-param", action="append", help="loss hyper-parameter NAME=VALUE (repeatable)")
    train.add_argument("--scores", default=None, help="scores.parquet (weights, joined by id) for the proposed loss")
    train.add_argument(
        "--difficulty", default=None, choices=DIFFICULTY_SOURCES.names(),
        help="recompute the weights from this difficulty source of --scores (rmd, md, kmeans, loss; the controls "
        "shuffled_rmd and uniform) with --temperature / --normalization; default: the weights as scored",
    )
    train.add_argument("--temperature", type=float, default=0.7, help="T of the recomputed weights (--difficulty)")
    train.add_argument(
        "--normalization", default="minmax", choices=NORMALIZATIONS.names(),
        help="normalisation of the recomputed weights (--difficulty)",
    )
    train.add_argument("--run-name", default=None)
    add_tracking_args(train, experiment=DEFAULT_EXPERIMENT)
    train.add_argument("--output", required=True)
    train.set_defaults(func=cmd_train)


def _add_evaluate_command(sub: Any) -> None:
    evaluate = sub.add_parser(
        "evaluate", help="metrics of prediction files (ACC, ECE, NLL, detection, ...), corruption shift, proxy test"
    )
    evaluate.add_argument("--predictions", action="append", required=True, help="NAME=predictions.parquet")
    add_shift_args(evaluate)
    add_ray_args(evaluate)
    evaluate.set_defaults(uses_ray=_evaluate_uses_ray)
    evaluate.add_argument("--output", default=None, help="folder for metrics, corruption, proxy and ood JSON")
    evaluate.set_defaults(func=cmd_evaluate)


def _add_report_command(sub: Any) -> None:
    report = sub.add_parser("report", help="a self-contained HTML report with figures")
    report.add_argument("--predictions", action="append", required=True, help="NAME=predictions.parquet")
    report.add_argument("--scores", default=None, help="scores.parquet of the training set (weights, galleries)")
    report.add_argument("--source", default=None, help="the scored source, for image galleries")
    report.add_argument("--corruption", default=None, help="corruption.json from `rmd-ray evaluate`")
    report.add_argument("--proxy", default=None, help="proxy.json from `rmd-ray evaluate`")
    report.add_argument("--ood", default=None, help="ood.json from `rmd-ray evaluate --ood-source`")
    report.add_argument(
        "--compare", nargs=2, default=None, metavar=("A", "B"), help="runs whose accuracy-rejection gap is shaded"
    )
    report.add_argument("--title", default="rmd-ray report")
    report.add_argument("--output", required=True)
    report.set_defaults(func=cmd_report)


def _add_tune_command(sub: Any) -> None:
    tune = sub.add_parser("tune", help="Ray Tune over the loss family, its own hyper-parameters, backbone and lr")
    tune.add_argument("--space", required=True, help="tune_spaces/*.yaml")
    tune.add_argument(
        "--scores",
        action="append",
        default=None,
        help="BACKBONE=scores.parquet (repeatable); needed only when a loss in the space reads weights (proposed)",
    )
    add_train_args(tune, epochs=8, width=0.25, limit=None, val_limit=None)
    add_ray_args(tune)
    add_tracking_args(tune, experiment="the space's name; one MLflow run per trial")
    tune.add_argument("--output", required=True)
    tune.set_defaults(func=cmd_tune)


def _add_run_command(sub: Any) -> None:
    run = sub.add_parser("run", help="the main job on the embedded default: score, train (proposed, CE), evaluate")
    add_score_args(run)
    add_train_args(run, epochs=6, width=0.125, limit=None, val_limit=5_000, with_source=False, split=False)
    add_shift_args(run, with_checkpoint=False)
    add_ray_args(run)
    run.add_argument("--alpha", type=float, default=0.3, help="alpha of the proposed loss")
    run.add_argument("--output", default="runs/demo")
    run.add_argument(
        "--smoke-test",
        action="store_true",
        help="a one-minute check: " + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in SMOKE_TEST.items()),
    )
    run.set_defaults(func=cmd_run, limit=10_000, corruption_limit=1_000)


def _evaluate_uses_ray(args: argparse.Namespace) -> bool:
    # Ray (and its log file) only for OOD sets and generated corruptions; metrics of files need none
    source = args.corruption_source or ""
    return bool(args.ood_source) or bool(args.checkpoint and source)  # generated or ImageNet-C: in Ray


# OSErrors a user's input causes (a path that is a file, is missing, is not writable): one line too
_FILE_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "smoke_test", False):
        vars(args).update(SMOKE_TEST)
    try:
        check_output(getattr(args, "output", None))  # before the log file goes there
        check_output_outside_sources(getattr(args, "output", None), {
            f"--{name.replace('_', '-')}": value for name, value in vars(args).items()
            if name.endswith("source") and value})
        setup_console(args)
        return args.func(args)
    except ValueError as err:  # user errors: one clear line, no traceback
        return _user_error(args, str(err))
    except _FILE_ERRORS as err:
        return _user_error(args, file_error_line(err))


def _user_error(args: argparse.Namespace, line: str) -> int:
    if args.verbose:
        traceback.print_exc()
    print(f"rmd-ray {args.command}: error: {' '.join(line.split())}", file=sys.stderr)
    return 2

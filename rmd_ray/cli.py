"""The ``rmd-ray`` command line: ``score``, ``find-label-issues`` and ``run`` (the main job).

Every command takes ``--address`` (join a running cluster; default: a local Ray instance) and the
``jobs/*.py`` scripts call these same functions for ``ray job submit``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from rmd_ray.core import CovarianceConfig, WeightConfig
from rmd_ray.core.covariance import SHRINKAGE
from rmd_ray.core.weights import NORMALIZATIONS

DEFAULT_SOURCE = "fashion-mnist:train"
DEFAULT_IMAGE_SIZE = 32  # Fashion-MNIST is 28 px: 32 keeps EfficientNet-Lite0 fast on 2 CPU cores


def _add_ray_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default=None, help="Ray cluster address ('auto' inside `ray job submit`); "
                        "default: start a local Ray instance")
    parser.add_argument("--num-cpus", type=int, default=None, help="logical CPUs for a local instance "
                        "(default: physical + 1, so data tasks never starve)")


def _add_score_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", default=DEFAULT_SOURCE,
                        help="fashion-mnist:train | parquet:/path | folder:/path | cifar-pickle:/path:train")
    parser.add_argument("--limit", type=int, default=None, help="keep the first N rows of the source")
    parser.add_argument("--encoder", default="efficientnet_lite0", help="encoder registry name")
    parser.add_argument("--checkpoint", default=None, help="local weights file for the encoder")
    parser.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE, help="encoder input size in pixels")
    parser.add_argument("--n-views", type=int, default=1, help="augmented views per image (the paper uses 5)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-actors", type=int, default=None, help="encoder actors (default: per GPU or CPU)")
    parser.add_argument("--shrinkage", default="none", choices=SHRINKAGE.names())
    parser.add_argument("--temperature", type=float, default=0.7, help="T of the weights")
    parser.add_argument("--c", type=float, default=1e-3, help="c of the weights")
    parser.add_argument("--normalization", default="minmax", choices=NORMALIZATIONS.names())
    parser.add_argument("--features-cache", default=None,
                        help="features.parquet of an earlier run on the same data: rescore without re-embedding")


def _score(args: argparse.Namespace, output: Path):
    from rmd_ray.data.readers import read_source
    from rmd_ray.distributed.runtime import init_ray
    from rmd_ray.distributed.scoring import EncoderSpec, ExtractConfig, run_scoring

    table = read_source(args.source, limit=args.limit)
    init_ray(args.address, num_cpus=args.num_cpus)
    return run_scoring(
        table,
        output_dir=output,
        encoder=EncoderSpec(args.encoder, checkpoint=args.checkpoint, image_size=args.image_size),
        extract=ExtractConfig(batch_size=args.batch_size, num_actors=args.num_actors, n_views=args.n_views),
        covariance=CovarianceConfig(shrinkage=args.shrinkage),
        weights=WeightConfig(temperature=args.temperature, c=args.c, normalization=args.normalization),
        features_cache=args.features_cache,
    )


def cmd_score(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    result = _score(args, Path(args.output))
    print(f"scored {result.rows_scored} of {result.rows_in} rows ({result.rows_error} in the errors table) "
          f"in {time.perf_counter() - start:.1f} s")
    print(f"scores:   {result.scores_path}")
    print(f"errors:   {result.errors_path}")
    if result.features_path:
        print(f"features: {result.features_path}  (pass --features-cache to rescore without re-embedding)")
    print(f"scorer:   {result.scorer_path}")
    return 0


def cmd_find_label_issues(args: argparse.Namespace) -> int:
    from rmd_ray.data.label_issues import find_label_issues

    report = find_label_issues(args.scores, source=args.source, top=args.top, output_dir=args.output,
                               limit=args.limit)
    print(f"top {report.n_written} suspects by RMD: {report.table_path}")
    print(f"image grid: {report.grid_path}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """The main job on the embedded default: score the training set and report the hardest samples."""
    output = Path(args.output)
    start = time.perf_counter()
    result = _score(args, output / "scores")
    print(f"[score] {result.rows_scored} of {result.rows_in} rows scored, {result.rows_error} errors, "
          f"{time.perf_counter() - start:.1f} s -> {result.scores_path}")
    from rmd_ray.data.label_issues import find_label_issues

    report = find_label_issues(result.scores_path, source=args.source, top=64, output_dir=output / "label_issues",
                               limit=args.limit)
    print(f"[label issues] {report.table_path} and {report.grid_path}")
    summary = {"scores": str(result.scores_path), "label_issues": str(report.table_path),
               "grid": str(report.grid_path), "seconds": round(time.perf_counter() - start, 1)}
    (output / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"results in {output}/")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rmd-ray", description="Sample difficulty from pre-trained models, on Ray.")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    score = sub.add_parser("score", help="embed a dataset and write per-sample RMD difficulty and weights")
    _add_score_args(score)
    _add_ray_args(score)
    score.add_argument("--output", required=True, help="output folder")
    score.set_defaults(func=cmd_score)

    issues = sub.add_parser("find-label-issues", help="rank samples by RMD and show the top suspects")
    issues.add_argument("--scores", required=True, help="scores.parquet from `rmd-ray score`")
    issues.add_argument("--source", required=True, help="the source that was scored (for the images)")
    issues.add_argument("--limit", type=int, default=None, help="the --limit used when scoring")
    issues.add_argument("--top", type=int, default=100)
    issues.add_argument("--output", required=True)
    issues.set_defaults(func=cmd_find_label_issues)

    run = sub.add_parser("run", help="the main job on the embedded default (local Ray, Fashion-MNIST)")
    _add_score_args(run)
    _add_ray_args(run)
    run.add_argument("--output", default="runs/demo")
    run.set_defaults(func=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("rmd_ray").setLevel(logging.INFO)
    try:
        return args.func(args)
    except ValueError as err:  # user errors: one clear line, no traceback
        print(f"rmd-ray {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

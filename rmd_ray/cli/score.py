"""``rmd-ray score``: embed a source and write per-sample RMD difficulty and weights."""

from __future__ import annotations

import argparse
import time

from rmd_ray.cli.common import DEFAULT_IMAGE_SIZE, DEFAULT_SOURCE, progress_printer
from rmd_ray.cli.console import start_ray
from rmd_ray.core import CovarianceConfig, WeightConfig
from rmd_ray.core.covariance import SHRINKAGE
from rmd_ray.core.weights import NORMALIZATIONS, SET_RELATIVE


def add_score_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source",
        default=DEFAULT_SOURCE,
        help="fashion-mnist:train | parquet:PATH-DIR-GLOB-OR-URI | hf-parquet:PATH | "
        "webdataset:TARS-{0..9}.tar-GLOB-OR-INDEX.json | folder:ROOT-OR-URI | imagenet-val:ROOT | "
        "cifar-pickle:/path:train",
    )
    parser.add_argument("--limit", type=int, default=None, help="keep the first N rows of the source")
    parser.add_argument(
        "--num-classes", type=int, default=None,
        help="the number of classes K when the source names none (labels outside 0..K-1 become reported rows)",
    )
    parser.add_argument("--encoder", default="efficientnet_lite0", help="encoder registry name")
    parser.add_argument("--checkpoint", default=None, help="local weights file for the encoder")
    parser.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE, help="encoder input size in pixels")
    parser.add_argument("--n-views", type=int, default=1, help="augmented views per image (the paper uses 5)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-actors", type=int, default=None, help="encoder actors (default: per GPU or CPU)")
    parser.add_argument(
        "--shrinkage",
        default="ridge",
        choices=SHRINKAGE.names(),
        help="ridge (default): finite distances when the encoder features are rank-deficient",
    )
    parser.add_argument("--temperature", type=float, default=0.7, help="T of the weights")
    parser.add_argument("--c", type=float, default=1e-3, help="c of the weights")
    parser.add_argument(
        "--normalization", default="minmax", choices=[n for n in NORMALIZATIONS.names() if n not in SET_RELATIVE],
        help="of the stored weights (rank weights: rmd-ray train --difficulty rmd --normalization rank)",
    )
    parser.add_argument(
        "--features-cache",
        default=None,
        help="features.parquet of an earlier run on the same data: rescore without re-embedding",
    )
    parser.add_argument(
        "--scorer",
        default=None,
        help="scorer.npz of a training-set run: score this source under its Gaussians (a validation set "
        "for the proxy test) instead of fitting new ones",
    )
    parser.add_argument(
        "--shard-rows",
        type=int,
        default=2048,
        help="rows per shard, the unit a killed run resumes from (row groups and class folders stay whole)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="re-embed everything; by default a run resumes from the features an interrupted run left in --output",
    )


def score_run(args: argparse.Namespace, output: str, *, source: str | None = None, limit: int | None = None,
           scorer: str | None = None, fresh: bool | None = None):
    from rmd_ray.distributed.scoring.run import EncoderSpec, ExtractConfig, run_scoring
    from rmd_ray.distributed.sources.plan import check_source_spec

    check_source_spec(source or args.source)  # a typo fails before Ray starts
    if args.checkpoint and not args.checkpoint.endswith(".safetensors"):
        from rmd_ray.nn.encoders.helpers import load_state_dict

        load_state_dict(args.checkpoint)  # a pickled or corrupt file fails here, in one line, not in an actor
    start_ray(args)
    return run_scoring(
        source or args.source,
        limit=args.limit if limit is None else limit,
        output_dir=output,
        encoder=EncoderSpec(args.encoder, checkpoint=args.checkpoint, image_size=args.image_size),
        extract=ExtractConfig(batch_size=args.batch_size, num_actors=args.num_actors, n_views=args.n_views),
        covariance=CovarianceConfig(shrinkage=args.shrinkage),
        weights=WeightConfig(temperature=args.temperature, c=args.c, normalization=args.normalization),
        features_cache=args.features_cache if source is None else None,
        scorer=scorer if scorer is not None else getattr(args, "scorer", None),
        fresh=args.fresh if fresh is None else fresh,
        shard_rows=args.shard_rows,
        n_classes=getattr(args, "num_classes", None),
        progress=progress_printer("embed"),
    )


def cmd_score(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    result = score_run(args, args.output)
    reused = f", {result.shards_reused} shards reused from an earlier run" if result.shards_reused else ""
    if result.shards_changed:
        reused += f", {result.shards_changed} shards changed since then and embedded again"
    print(
        f"scored {result.rows_scored} of {result.rows_in} rows ({result.rows_error} in the errors table) "
        f"in {time.perf_counter() - start:.1f} s{reused}"
    )
    print(f"scores:   {result.scores_path}")
    print(f"errors:   {result.errors_path}")
    if result.features_path:
        print(f"features: {result.features_path}  (pass --features-cache to rescore without re-embedding)")
    print(f"scorer:   {result.scorer_path}")
    return 0

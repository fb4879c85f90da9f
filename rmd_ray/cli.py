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
from rmd_ray.core.atomic import write_json_atomic
from rmd_ray.core.covariance import SHRINKAGE
from rmd_ray.core.weights import NORMALIZATIONS

DEFAULT_SOURCE = "fashion-mnist:train"
DEFAULT_IMAGE_SIZE = 32  # Fashion-MNIST is 28 px: 32 keeps EfficientNet-Lite0 fast on 2 CPU cores


def _add_ray_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address",
        default=None,
        help="Ray cluster address ('auto' inside `ray job submit`); default: start a local Ray instance",
    )
    parser.add_argument(
        "--num-cpus",
        type=int,
        default=None,
        help="logical CPUs for a local instance (default: physical + 1, so data tasks never starve)",
    )


def _add_score_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source",
        default=DEFAULT_SOURCE,
        help="fashion-mnist:train | parquet:PATH-DIR-GLOB-OR-URI | folder:ROOT-OR-URI | imagenet-val:ROOT | "
        "cifar-pickle:/path:train",
    )
    parser.add_argument("--limit", type=int, default=None, help="keep the first N rows of the source")
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
    parser.add_argument("--normalization", default="minmax", choices=NORMALIZATIONS.names())
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


def _progress_printer(stage: str):
    """A progress callback that prints one line every few seconds (a log file, not a redraw)."""
    state = {"last": 0.0, "start": time.perf_counter()}

    def report(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - state["last"] < 5.0 and done < total:
            return
        state["last"] = now
        elapsed = now - state["start"]
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else float("nan")
        print(f"  [{stage}] {done}/{total} rows, {rate:.0f} rows/s, ETA {eta:.0f} s", flush=True)

    return report


def _score(args: argparse.Namespace, output: str, *, source: str | None = None, limit: int | None = None,
           scorer: str | None = None, fresh: bool | None = None):
    from rmd_ray.distributed.runtime import init_ray
    from rmd_ray.distributed.scoring import EncoderSpec, ExtractConfig, run_scoring
    from rmd_ray.distributed.sources import check_source_spec

    check_source_spec(source or args.source)  # a typo fails before Ray starts
    init_ray(args.address, num_cpus=args.num_cpus)
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
        progress=_progress_printer("embed"),
    )


def cmd_score(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    result = _score(args, args.output)
    reused = f", {result.shards_reused} shards reused from an earlier run" if result.shards_reused else ""
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


def cmd_find_label_issues(args: argparse.Namespace) -> int:
    from rmd_ray.data.label_issues import find_label_issues

    report = find_label_issues(
        args.scores, source=args.source, top=args.top, output_dir=args.output, score=args.score
    )
    print(f"top {report.n_written} suspects by {args.score}: {report.table_path}")
    print(f"image grid: {report.grid_path}")
    return 0


def _parse_pairs(items: list[str] | None, *, what: str) -> dict[str, str]:
    pairs = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"{what} {item!r} must look like NAME=VALUE")
        pairs[key] = value
    return pairs


def _number(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


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


def _print_table(results: dict[str, dict]) -> None:
    header = f"{'run':<12} {'ACC %':>7} {'ECE mass %':>11} {'ECE width %':>12} {'NLL':>7} {'AUROC(MSP)':>11}"
    print(header)
    print("-" * len(header))
    for name, m in results.items():
        print(
            f"{name:<12} {100 * m['acc']:>7.2f} {100 * m['ece_mass']:>11.2f} {100 * m['ece_width']:>12.2f} "
            f"{m['nll']:>7.3f} {m.get('msp_auroc', float('nan')):>11.4f}"
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


def _int_list(text: str, *, what: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated integers, got {text!r}") from None


def _corruption_results(checkpoints: dict[str, str], table, args: argparse.Namespace) -> dict[str, list[dict]]:
    """Corruption rows (clean first) of each checkpoint on ``table``, as --corruptions / --severities / --preset say."""
    from rmd_ray.distributed.evaluation import checkpoint_corruption_eval

    names = [c for c in args.corruptions.split(",") if c] if args.corruptions else None
    severities = _int_list(args.severities, what="--severities")
    return {
        name: checkpoint_corruption_eval(
            checkpoint, table, corruptions=names, severities=severities, preset=args.preset
        )
        for name, checkpoint in checkpoints.items()
    }


def _proxy_results(scores_path, runs: dict[str, str], *, n_groups: int) -> dict:
    from rmd_ray.evaluation.proxy import proxy_test_from_files

    return {name: proxy_test_from_files(scores_path, path, n_groups=n_groups) for name, path in runs.items()}


def _print_shift_and_proxy(shift: dict[str, list[dict]], proxy: dict) -> None:
    for name, found in proxy.items():
        print(
            f"proxy test {name}: error rate hardest -> easiest " + " ".join(f"{100 * e:.1f}%" for e in found.error_rate)
        )
    for name, rows in shift.items():
        corrupted = [r for r in rows if r["severity"] > 0]
        print(
            f"corruption {name}: mean ACC {100 * sum(r['acc'] for r in corrupted) / len(corrupted):.2f}%, "
            f"mean ECE mass {100 * sum(r['ece_mass'] for r in corrupted) / len(corrupted):.2f}%"
        )


def cmd_evaluate(args: argparse.Namespace) -> int:
    from rmd_ray.evaluation.evaluate import evaluate_run

    runs = _parse_pairs(args.predictions, what="--predictions")
    checkpoints = _parse_pairs(args.checkpoint, what="--checkpoint")
    if checkpoints and not args.corruption_source:
        raise ValueError(
            "--checkpoint needs --corruption-source: the clean images to corrupt (e.g. fashion-mnist:test)"
        )
    if (checkpoints or args.proxy_scores) and not args.output:
        raise ValueError("corruption and proxy results are written to files: pass --output DIR")
    results = {name: evaluate_run(path)["metrics"] for name, path in runs.items()}
    _print_table(results)
    shift = {}
    if checkpoints:
        from rmd_ray.data.readers import read_source

        shift = _corruption_results(checkpoints, read_source(args.corruption_source, limit=args.corruption_limit), args)
    proxy = _proxy_results(args.proxy_scores, runs, n_groups=args.proxy_groups) if args.proxy_scores else {}
    _print_shift_and_proxy(shift, proxy)
    if args.output:
        output = Path(args.output)
        print(f"metrics: {write_json_atomic(output / 'metrics.json', results)}")
        if shift:
            print(f"corruption: {write_json_atomic(output / 'corruption.json', shift)}")
        if proxy:
            print(f"proxy: {write_json_atomic(output / 'proxy.json', {k: v.to_dict() for k, v in proxy.items()})}")
    return 0


def _read_json(path: str | None, *, what: str):
    if path is None:
        return None
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"{what} file {path!r} not found; write it with `rmd-ray evaluate --output DIR`")
    try:
        return json.loads(file.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{what} file {path!r} is not JSON: {err}") from None


def cmd_report(args: argparse.Namespace) -> int:
    from rmd_ray.evaluation.proxy import ProxyResult
    from rmd_ray.evaluation.report import build_report

    proxy = _read_json(args.proxy, what="--proxy")
    if proxy is not None:
        if not isinstance(proxy, dict):
            raise ValueError(f"--proxy {args.proxy!r} must hold an object {{run name: proxy result}}")
        proxy = {name: ProxyResult.from_dict(value) for name, value in proxy.items()}
    path = build_report(
        runs=_parse_pairs(args.predictions, what="--predictions"),
        scores_path=args.scores,
        source=args.source,
        corruption_results=_read_json(args.corruption, what="--corruption"),
        proxy_results=proxy,
        output_dir=args.output,
        title=args.title,
        compare=args.compare,
    )
    print(f"report: {path}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from rmd_ray.core.search_space import load_search_space
    from rmd_ray.data.readers import read_source
    from rmd_ray.distributed.runtime import init_ray
    from rmd_ray.distributed.tuning import run_tune

    space = load_search_space(args.space)
    scores = _parse_pairs(args.scores, what="--scores")
    base = _train_config(args, loss="proposed", hparams={})
    train = read_source(args.train_source, limit=args.limit)
    val = read_source(args.val_source, limit=args.val_limit)
    init_ray(args.address, num_cpus=args.num_cpus)
    result = run_tune(space, train_table=train, val_table=val, scores_paths=scores, base=base, output_dir=args.output)
    print(f"{result.n_trials} trials; {len(result.pareto)} on the Pareto front")
    print(f"results: {result.results_path}")
    print(f"pareto:  {result.pareto_path}")
    print(f"tensorboard --logdir {result.experiment_path}")
    return 0


def _shift_for_run(args: argparse.Namespace, result, runs: dict, checkpoints: dict, output: Path):
    """Validation-set scores under the training Gaussians -> proxy test; corruption shift of each model."""
    from rmd_ray.data.readers import read_source

    val_scores = _score(
        args, str(output / "val_scores"), source=args.val_source, limit=args.val_limit, scorer=result.scorer_path
    )
    proxy = _proxy_results(val_scores.scores_path, runs, n_groups=args.proxy_groups)
    write_json_atomic(output / "evaluate" / "proxy.json", {k: v.to_dict() for k, v in proxy.items()})
    shift = {}
    if args.corruption_limit:
        shift = _corruption_results(checkpoints, read_source(args.val_source, limit=args.corruption_limit), args)
        write_json_atomic(output / "evaluate" / "corruption.json", shift)
    return proxy, shift


def cmd_run(args: argparse.Namespace) -> int:
    """The main job on the embedded default: score -> train (proposed and CE) -> evaluate -> report."""
    output = Path(args.output)
    start = time.perf_counter()
    result = _score(args, str(output / "scores"))
    print(
        f"[1/5 score] {result.rows_scored} of {result.rows_in} rows scored, {result.rows_error} errors, "
        f"{time.perf_counter() - start:.0f} s -> {result.scores_path}"
    )
    args.train_source = args.source
    runs, metrics, checkpoints = {}, {}, {}
    for step, (name, loss, hparams) in enumerate(
        (("proposed", "proposed", {"alpha": args.alpha}), ("ce", "ce", {})), start=2
    ):
        tic = time.perf_counter()
        trained = _train(
            args, loss=loss, hparams=hparams, scores_path=result.scores_path, output=output / "train", run_name=name
        )
        runs[name], metrics[name] = trained.predictions_path, trained.test_metrics
        checkpoints[name] = trained.last_checkpoint
        print(f"[{step}/5 train {name}] {args.epochs} epochs, {time.perf_counter() - tic:.0f} s")
    tic = time.perf_counter()
    proxy, shift = _shift_for_run(args, result, runs, checkpoints, output)
    from rmd_ray.data.label_issues import find_label_issues
    from rmd_ray.evaluation.report import build_report

    issues = find_label_issues(
        result.scores_path, source=args.source, top=32, output_dir=output / "label_issues"
    )
    print(
        f"[4/5 evaluate] test set: {args.val_source} (first {args.val_limit} rows); corruption shift on the "
        f"first {args.corruption_limit or 0}; {time.perf_counter() - tic:.0f} s"
    )
    _print_table(metrics)
    _print_shift_and_proxy(shift, proxy)
    report = build_report(
        runs=runs,
        scores_path=result.scores_path,
        source=args.source,
        corruption_results=shift or None,
        proxy_results=proxy,
        output_dir=output / "report",
        title="rmd-ray main job: Fashion-MNIST",
    )
    print("[5/5 report]")
    summary = {
        "seconds": round(time.perf_counter() - start, 1),
        "scores": str(result.scores_path),
        "predictions": {k: str(v) for k, v in runs.items()},
        "checkpoints": {k: str(v) for k, v in checkpoints.items()},
        "metrics": metrics,
        "proxy": {k: v.to_dict() for k, v in proxy.items()},
        "corruption": shift,
        "label_issues": str(issues.grid_path),
        "report": str(report),
    }
    write_json_atomic(output / "summary.json", summary)
    print(f"report: {report}\nlabel issues: {issues.grid_path}\nall results in {output}/ ({summary['seconds']:.0f} s)")
    return 0


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


def _add_shift_args(parser: argparse.ArgumentParser, *, with_checkpoint: bool = True) -> None:
    if with_checkpoint:  # `run` evaluates the checkpoints it trains
        parser.add_argument(
            "--checkpoint",
            action="append",
            help="NAME=checkpoint (model.pt or a Ray checkpoint folder): evaluate it under corruption shift",
        )
        parser.add_argument(
            "--corruption-source", default=None,
            help="clean images to corrupt (a source spec, e.g. the test set), or imagenet-c:ROOT to read a "
            "published ImageNet-C / CIFAR-10-C directory instead of generating",
        )
        parser.add_argument(
            "--proxy-scores",
            default=None,
            help="scores.parquet of the evaluation set from `rmd-ray score --scorer` (the proxy test)",
        )
    parser.add_argument("--corruption-limit", type=int, default=None, help="first N rows of the corruption source")
    parser.add_argument("--corruptions", default=None, help="comma-separated names (default: all 19)")
    parser.add_argument("--severities", default="1,2,3,4,5", help="comma-separated, in 1..5")
    parser.add_argument(
        "--preset", default="auto", choices=["auto", "cifar", "imagenet"], help="severity table (auto: by image size)"
    )
    parser.add_argument("--proxy-groups", type=int, default=5, help="groups of the difficulty proxy test")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rmd-ray", description="Sample difficulty from pre-trained models, on Ray.")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    score = sub.add_parser("score", help="embed a dataset and write per-sample RMD difficulty and weights")
    _add_score_args(score)
    _add_ray_args(score)
    score.add_argument("--output", required=True, help="output folder")
    score.set_defaults(func=cmd_score)

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

    train = sub.add_parser("train", help="train a classifier with a difficulty-aware or baseline loss (Ray Train)")
    _add_train_args(train, epochs=30, width=1.0, limit=None, val_limit=None)
    _add_ray_args(train)
    train.add_argument("--loss", default="proposed", help="loss registry name (proposed, ce, entropy_reg, ...)")
    train.add_argument("--loss-param", action="append", help="loss hyper-parameter NAME=VALUE (repeatable)")
    train.add_argument("--scores", default=None, help="scores.parquet (weights, joined by id) for the proposed loss")
    train.add_argument("--run-name", default=None)
    train.add_argument("--output", required=True)
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser(
        "evaluate", help="metrics of prediction files (ACC, ECE, NLL, detection, ...), corruption shift, proxy test"
    )
    evaluate.add_argument("--predictions", action="append", required=True, help="NAME=predictions.parquet")
    _add_shift_args(evaluate)
    evaluate.add_argument("--output", default=None, help="folder for metrics.json, corruption.json, proxy.json")
    evaluate.set_defaults(func=cmd_evaluate)

    report = sub.add_parser("report", help="a self-contained HTML report with figures")
    report.add_argument("--predictions", action="append", required=True, help="NAME=predictions.parquet")
    report.add_argument("--scores", default=None, help="scores.parquet of the training set (weights, galleries)")
    report.add_argument("--source", default=None, help="the scored source, for image galleries")
    report.add_argument("--corruption", default=None, help="corruption.json from `rmd-ray evaluate`")
    report.add_argument("--proxy", default=None, help="proxy.json from `rmd-ray evaluate`")
    report.add_argument(
        "--compare", nargs=2, default=None, metavar=("A", "B"), help="runs whose accuracy-rejection gap is shaded"
    )
    report.add_argument("--title", default="rmd-ray report")
    report.add_argument("--output", required=True)
    report.set_defaults(func=cmd_report)

    tune = sub.add_parser("tune", help="Ray Tune over alpha, T, backbone, loss family and lr")
    tune.add_argument("--space", required=True, help="tune_spaces/*.yaml")
    tune.add_argument("--scores", action="append", required=True, help="BACKBONE=scores.parquet (repeatable)")
    _add_train_args(tune, epochs=8, width=0.25, limit=None, val_limit=None)
    _add_ray_args(tune)
    tune.add_argument("--output", required=True)
    tune.set_defaults(func=cmd_tune)

    run = sub.add_parser("run", help="the main job on the embedded default: score, train (proposed, CE), evaluate")
    _add_score_args(run)
    _add_train_args(run, epochs=6, width=0.125, limit=None, val_limit=5_000, with_source=False)
    _add_shift_args(run, with_checkpoint=False)
    _add_ray_args(run)
    run.add_argument("--alpha", type=float, default=0.3, help="alpha of the proposed loss")
    run.add_argument("--output", default="runs/demo")
    run.set_defaults(func=cmd_run, limit=10_000, corruption_limit=1_000)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    logging.getLogger("rmd_ray").setLevel(logging.INFO)
    try:
        return args.func(args)
    except ValueError as err:  # user errors: one clear line, no traceback
        print(f"rmd-ray {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

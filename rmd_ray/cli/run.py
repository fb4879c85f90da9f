"""``rmd-ray run``: the main job on the embedded default (score -> train proposed and CE -> evaluate -> report)."""

from __future__ import annotations

import argparse
import time

from rmd_ray.cli.common import print_table
from rmd_ray.cli.evaluate import corruption_results_of, ood_results, print_ood, print_shift_and_proxy, proxy_results_of
from rmd_ray.cli.score import score_run
from rmd_ray.cli.train import train_one_run
from rmd_ray.io import storage

#: The main job's far-OOD set: scikit-learn's bundled handwritten digits against Fashion-MNIST.
DEFAULT_OOD = "digits=sklearn-digits:"
#: ``rmd-ray run --smoke-test``: the whole main job on a few hundred images, one epoch each.
SMOKE_TEST = {"limit": 512, "epochs": 1, "val_limit": 256, "corruption_limit": 64, "severities": "1,5"}


def _shift_for_run(args: argparse.Namespace, result, runs: dict, checkpoints: dict, output: str):
    """Validation-set scores under the training Gaussians -> proxy test; corruption shift of each model."""
    val_scores = score_run(
        args, storage.join(output, "val_scores"), source=args.val_source, limit=args.val_limit,
        scorer=result.scorer_path,
    )
    proxy = proxy_results_of(val_scores.scores_path, runs, n_groups=args.proxy_groups)
    proxy_json = {k: v.to_dict() for k, v in proxy.items()}
    storage.write_json_atomic(storage.join(output, "evaluate", "proxy.json"), proxy_json)
    shift = {}
    if args.corruption_limit:
        shift = corruption_results_of(checkpoints, args.val_source, args, limit=args.corruption_limit)
        storage.write_json_atomic(storage.join(output, "evaluate", "corruption.json"), shift)
    return proxy, shift


def cmd_run(args: argparse.Namespace) -> int:
    """The main job on the embedded default: score -> train (proposed and CE) -> evaluate -> report."""
    output = str(args.output)
    start = time.perf_counter()
    result = score_run(args, storage.join(output, "scores"))
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
        trained = train_one_run(
            args, loss=loss, hparams=hparams, scores_path=result.scores_path, output=storage.join(output, "train"),
            run_name=name,
        )
        runs[name], metrics[name] = trained.predictions_path, trained.test_metrics
        checkpoints[name] = trained.last_checkpoint
        print(f"[{step}/5 train {name}] {args.epochs} epochs, {time.perf_counter() - tic:.0f} s")
    tic = time.perf_counter()
    proxy, shift = _shift_for_run(args, result, runs, checkpoints, output)
    args.ood_source = args.ood_source or [DEFAULT_OOD]
    ood = ood_results(args, runs, checkpoints, storage.join(output, "evaluate"))
    storage.write_json_atomic(storage.join(output, "evaluate", "ood.json"), ood)
    from rmd_ray.data.label_issues import find_label_issues
    from rmd_ray.evaluation.report import build_report

    issues = find_label_issues(
        result.scores_path, source=args.source, top=32, output_dir=storage.join(output, "label_issues")
    )
    print(
        f"[4/5 evaluate] test set: {args.val_source} (first {args.val_limit} rows); corruption shift on the "
        f"first {args.corruption_limit or 0}; OOD: {', '.join(args.ood_source)}; {time.perf_counter() - tic:.0f} s"
    )
    print_table(metrics)
    print_shift_and_proxy(shift, proxy)
    print_ood(ood)
    report = build_report(
        runs=runs,
        scores_path=result.scores_path,
        source=args.source,
        corruption_results=shift or None,
        proxy_results=proxy,
        ood_results=ood,
        output_dir=storage.join(output, "report"),
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
        "ood": ood,
        "label_issues": str(issues.grid_path),
        "report": str(report),
    }
    storage.write_json_atomic(storage.join(output, "summary.json"), summary)
    print(f"report: {report}\nlabel issues: {issues.grid_path}\nall results in {output}/ ({summary['seconds']:.0f} s)")
    return 0

"""``rmd-ray evaluate``: metrics of prediction files, corruption shift of checkpoints, the proxy test."""

from __future__ import annotations

import argparse

from rmd_ray.cli.common import int_list, parse_pairs, print_table


def add_shift_args(parser: argparse.ArgumentParser, *, with_checkpoint: bool = True) -> None:
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
    parser.add_argument(
        "--ood-source", action="append", default=None,
        help="NAME=SOURCE (repeatable): out-of-distribution images, predicted by each --checkpoint in Ray and "
        "scored against that run's --predictions (MaxLogit, entropy, MSP: AUROC, AUPR, FPR@95%%TPR); "
        "offline sets: sklearn-digits:, parquet:..., folder:...",
    )
    parser.add_argument("--ood-limit", type=int, default=None, help="first N rows of each OOD source")
    if with_checkpoint:
        parser.add_argument(
            "--use-gpu", action="store_true",
            help="one GPU per prediction actor for the corruption shift and OOD sets (the checkpoint's model)",
        )


def ood_results(args: argparse.Namespace, runs: dict[str, str], checkpoints: dict[str, str], output) -> dict:
    """``{run: {ood name: report}}`` for every run with both predictions and a checkpoint."""
    from rmd_ray.distributed.prediction.ood import ood_eval
    from rmd_ray.io import storage

    sources = parse_pairs(args.ood_source, what="--ood-source")
    missing = sorted(set(checkpoints) ^ set(runs))
    if missing:
        raise ValueError(
            f"--ood-source needs both --predictions and --checkpoint for each run; unmatched: {missing}"
        )
    return {
        run: ood_eval(checkpoints[run], runs[run], sources, output_dir=storage.join(str(output), "ood", run),
                      limit=args.ood_limit, use_gpu=args.use_gpu)
        for run in runs
    }


def print_ood(results: dict) -> None:
    for run, sets in results.items():
        for name, report in sets.items():
            print(
                f"ood {run} vs {name} ({report['n_out']} images): AUROC MaxLogit {report['maxlogit']['auroc']:.4f}, "
                f"entropy {report['entropy']['auroc']:.4f}, MSP {report['msp']['auroc']:.4f}; "
                f"FPR95 MaxLogit {100 * report['maxlogit']['fpr_at_95_tpr']:.1f}%"
            )


def corruption_results_of(
    checkpoints: dict[str, str], source: str, args: argparse.Namespace, *, limit: int | None
) -> dict[str, list[dict]]:
    """Corruption rows (clean first) of each checkpoint on ``source``, as --corruptions / --severities / --preset say.

    Generated corruptions run in Ray (corrupt in tasks, predict in model actors:
    ``rmd_ray.distributed.prediction.shift_eval``); a published ImageNet-C tree (``imagenet-c:ROOT``) is
    planned per (corruption, severity) and predicted in Ray too
    (``rmd_ray.distributed.prediction.published_shift``); CIFAR-10-C arrays are read in this process.
    """
    from rmd_ray.distributed.prediction.published_shift import is_imagenet_c_tree
    from rmd_ray.distributed.sources.plan import check_source_spec

    names = [c for c in args.corruptions.split(",") if c] if args.corruptions else None
    severities = int_list(args.severities, what="--severities")
    root = source.partition(":")[2]
    if source.startswith("imagenet-c:") and is_imagenet_c_tree(root):  # lazy: planned and predicted in Ray
        from rmd_ray.cli.console import start_ray
        from rmd_ray.distributed.prediction.published_shift import published_shift_eval
        from rmd_ray.io import storage

        start_ray(args)
        return {
            name: published_shift_eval(checkpoint, root, output_dir=storage.join(str(args.output), "published", name),
                                       corruptions=names, severities=severities, limit=limit,
                                       use_gpu=getattr(args, "use_gpu", False))
            for name, checkpoint in checkpoints.items()
        }
    if source.startswith("imagenet-c:"):  # CIFAR-10-C arrays: memory-mapped, in this process
        from rmd_ray.data.readers import read_source
        from rmd_ray.evaluation.shift import checkpoint_corruption_eval

        table = read_source(source, limit=limit)
        return {
            name: checkpoint_corruption_eval(checkpoint, table, corruptions=names, severities=severities,
                                             preset=args.preset)
            for name, checkpoint in checkpoints.items()
        }
    from rmd_ray.cli.console import start_ray
    from rmd_ray.distributed.prediction.shift_eval import shift_eval
    from rmd_ray.distributed.sources.plan import open_source

    check_source_spec(source)
    start_ray(args)
    planned = open_source(source, limit=limit)
    return {
        name: shift_eval(checkpoint, planned, corruptions=names, severities=severities, preset=args.preset,
                         use_gpu=getattr(args, "use_gpu", False))
        for name, checkpoint in checkpoints.items()
    }


def proxy_results_of(scores_path, runs: dict[str, str], *, n_groups: int) -> dict:
    from rmd_ray.evaluation.proxy import proxy_test_from_files

    return {name: proxy_test_from_files(scores_path, path, n_groups=n_groups) for name, path in runs.items()}


def print_shift_and_proxy(shift: dict[str, list[dict]], proxy: dict) -> None:
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

    runs = parse_pairs(args.predictions, what="--predictions")
    checkpoints = parse_pairs(args.checkpoint, what="--checkpoint")
    if checkpoints and not (args.corruption_source or args.ood_source):
        raise ValueError(
            "--checkpoint needs --corruption-source (the clean images to corrupt, e.g. fashion-mnist:test) "
            "or --ood-source NAME=SOURCE"
        )
    if args.ood_source and not checkpoints:
        raise ValueError("--ood-source needs --checkpoint NAME=... for each --predictions NAME=...")
    if (checkpoints or args.proxy_scores) and not args.output:
        raise ValueError("corruption, OOD and proxy results are written to files: pass --output DIR")
    results = {name: evaluate_run(path)["metrics"] for name, path in runs.items()}
    print_table(results)
    shift = {}
    ood = {}
    if args.ood_source:
        from rmd_ray.cli.console import start_ray

        start_ray(args)
        ood = ood_results(args, runs, checkpoints, args.output)
        print_ood(ood)
    if checkpoints and args.corruption_source:
        shift = corruption_results_of(checkpoints, args.corruption_source, args, limit=args.corruption_limit)
    proxy = proxy_results_of(args.proxy_scores, runs, n_groups=args.proxy_groups) if args.proxy_scores else {}
    print_shift_and_proxy(shift, proxy)
    if args.output:
        from rmd_ray.io import storage

        outputs = {"metrics": results, "corruption": shift, "proxy": {k: v.to_dict() for k, v in proxy.items()},
                   "ood": ood}
        for name, value in outputs.items():
            if value or name == "metrics":
                print(f"{name}: {storage.write_json_atomic(storage.join(str(args.output), f'{name}.json'), value)}")
    return 0

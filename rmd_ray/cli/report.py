"""``rmd-ray report``: the self-contained HTML report."""

from __future__ import annotations

import argparse

from rmd_ray.cli.common import parse_pairs, read_json


def cmd_report(args: argparse.Namespace) -> int:
    from rmd_ray.distributed.sources.fetch import fetch_rows
    from rmd_ray.evaluation.proxy import ProxyResult
    from rmd_ray.evaluation.report import build_report

    proxy = read_json(args.proxy, what="--proxy")
    if proxy is not None:
        if not isinstance(proxy, dict):
            raise ValueError(f"--proxy {args.proxy!r} must hold an object {{run name: proxy result}}")
        proxy = {name: ProxyResult.from_dict(value) for name, value in proxy.items()}
    path = build_report(
        runs=parse_pairs(args.predictions, what="--predictions"),
        scores_path=args.scores,
        source=args.source,
        corruption_results=read_json(args.corruption, what="--corruption"),
        proxy_results=proxy,
        ood_results=read_json(args.ood, what="--ood"),
        output_dir=args.output,
        title=args.title,
        compare=args.compare,
        fetch=fetch_rows,
    )
    print(f"report: {path}")
    return 0

"""``rmd-ray find-label-issues``: rank samples by likely label error (RMD, margin or both), draw the top."""

from __future__ import annotations

import argparse


def cmd_find_label_issues(args: argparse.Namespace) -> int:
    from rmd_ray.data.label_issues import find_label_issues
    from rmd_ray.distributed.sources.fetch import fetch_rows

    report = find_label_issues(
        args.scores, source=args.source, top=args.top, output_dir=args.output, score=args.score, fetch=fetch_rows
    )
    print(f"top {report.n_written} suspects by {args.score}: {report.table_path}")
    print(f"image grid: {report.grid_path}")
    return 0

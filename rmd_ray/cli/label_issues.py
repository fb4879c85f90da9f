"""``rmd-ray find-label-issues``: rank samples by RMD and draw the top suspects."""

from __future__ import annotations

import argparse


def cmd_find_label_issues(args: argparse.Namespace) -> int:
    from rmd_ray.data.label_issues import find_label_issues

    report = find_label_issues(args.scores, source=args.source, top=args.top, output_dir=args.output)
    print(f"top {report.n_written} suspects by RMD: {report.table_path}")
    print(f"image grid: {report.grid_path}")
    return 0

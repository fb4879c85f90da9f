"""The report's metrics table and the runs' provenance (model, loss, hyper-parameters, file)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from markupsafe import Markup

from rmd_ray.evaluation.evaluate import TABLE_METRICS, metrics_table
from rmd_ray.evaluation.report.templating import render

# metric -> (label, larger is better, shown as percent)
_METRIC_FORMAT = {
    "acc": ("ACC (%)", True, True),
    "ece_mass": ("ECE mass (%)", False, True),
    "ece_width": ("ECE width (%)", False, True),
    "nll": ("NLL", False, False),
    "brier": ("Brier", False, False),
    "aurc": ("AURC (%)", False, True),
    "msp_auroc": ("MSP AUROC (%)", True, True),
    "msp_fpr_at_95_tpr": ("MSP FPR@95 (%)", False, True),
}


def _fmt(metric: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "&ndash;"
    percent = _METRIC_FORMAT.get(metric, ("", False, False))[2]
    return f"{100 * value:.2f}" if percent else f"{value:.4f}"


def ood_section(results: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """``{run: {OOD set: ood_report + n_in, n_out}}`` (``rmd_ray.distributed.prediction.ood.ood_eval``) as one table."""
    from rmd_ray.core.metrics import OOD_SCORES

    sets = sorted({name for per_run in results.values() for name in per_run})
    best = {
        (name, score): max(results[run][name][score]["auroc"] for run in results if name in results[run])
        for name in sets
        for score in OOD_SCORES
    }
    rows = []
    for run, per_run in results.items():
        for name in sets:
            if name not in per_run:
                continue
            report = per_run[name]
            cells = []
            for score in OOD_SCORES:
                auroc = report[score]["auroc"]
                multi = sum(name in r for r in results.values()) > 1
                cells.append(("best" if multi and auroc == best[(name, score)] else "", f"{auroc:.4f}"))
                cells.append(("", f"{report[score]['aupr']:.4f}"))
                cells.append(("", f"{100 * report[score]['fpr_at_95_tpr']:.1f}%"))
            rows.append({"run": run, "set": name, "n_in": report["n_in"], "n_out": report["n_out"], "cells": cells})
    return render("ood.html.j2", scores=list(OOD_SCORES), rows=rows)


def metrics_section(results: dict[str, dict]) -> str:
    metrics = [m for m in TABLE_METRICS]
    table = metrics_table(results, metrics=metrics).to_pydict()
    best = {}
    for m in metrics:
        vals = [v for v in table[m] if v is not None]
        if len(vals) > 1:
            best[m] = max(vals) if _METRIC_FORMAT[m][1] else min(vals)
    rows = [
        {
            "run": run,
            "n": table["n_samples"][i],
            "cells": [
                ("best" if m in best and table[m][i] == best[m] else "", Markup(_fmt(m, table[m][i])))
                for m in metrics
            ],
        }
        for i, run in enumerate(table["run"])
    ]
    provenance = [
        {
            "run": run,
            "fields": [str(res["metadata"].get(k, "")) for k in ("model", "loss", "epochs", "seed")],
            "hparams": format_hparams(res["metadata"]),
            "duplicates": res["n_duplicates_dropped"],
            "path": res["path"],
        }
        for run, res in results.items()
    ]
    return render(
        "metrics.html.j2",
        headings=[_METRIC_FORMAT[m][0] for m in metrics],
        rows=rows,
        provenance=provenance,
        different_samples=len({r["ids_fingerprint"] for r in results.values()}) > 1,
    )


def format_hparams(meta: dict) -> str:
    """The loss hyper-parameters of a run's metadata as ``alpha=0.3, temperature=0.7``.

    Training writes them as ``loss_hparams`` (``distributed/training.py``); ``hparams`` is read too,
    for prediction files written by other tools. An empty string when the run has none (e.g. CE).
    """
    hp = meta.get("loss_hparams", meta.get("hparams"))
    if isinstance(hp, dict):
        return ", ".join(f"{k}={v}" for k, v in sorted(hp.items()))
    return "" if hp is None else str(hp)

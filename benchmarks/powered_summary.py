"""Tables and the verdict of the powered study from its run records (``powered_study.py summarise``).

Paired differences a - b over the seeds both arms have, 95% t-intervals (scipy.stats.t), paired
t-test p-values with Holm's step-down correction over every (setting, comparison, metric) the verdict
states. ECE and accuracy in percentage points, NLL in nats.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from _common import RESULTS, markdown_table, write_result
from scipy import stats

STUDY = RESULTS / "powered_study"
#: (a, b): arm names as resolved by ``resolve``; a suffix ``+ts`` reads the temperature-scaled metrics
COMPARISONS = (
    ("proposed", "shuffled_rmd"), ("proposed", "uniform"), ("proposed", "ce"), ("proposed", "er_tuned"),
    ("proposed", "md"), ("proposed", "rank"), ("proposed", "robust"), ("proposed+ts", "ce+ts"),
    ("proposed", "ce+ts"),
)
METRICS = ("ece_mass", "acc", "nll")
SCALE = {"ece_mass": 100.0, "ece_width": 100.0, "acc": 100.0, "nll": 1.0, "brier": 1.0, "aurc": 100.0}
VERDICT_START, VERDICT_END = "<!-- powered-study-verdict:start -->", "<!-- powered-study-verdict:end -->"


def tuned(records, setting: str, arm: str) -> float | None:
    """The strength m with the lowest seed-0 validation NLL among the tuning runs of ``arm``."""
    rows = [r for (s, _), r in records.items() if s == setting and r["arm"] == arm and r["seed"] == 0]
    strengths = {r["m"] for r in rows}
    from powered_study import STRENGTHS

    if not set(STRENGTHS) <= strengths:
        return None
    return min((r for r in rows if r["m"] in STRENGTHS), key=lambda r: r["val"]["nll"])["m"]


def missing_tuning(records, setting: str) -> list[str]:
    """The seed-0 tuning runs of ``setting`` not recorded yet (proposed, then uniform)."""
    from powered_study import STRENGTHS, run_name

    return [run_name(arm, m, 0) for arm in ("proposed", "uniform") for m in STRENGTHS
            if (setting, run_name(arm, m, 0)) not in records]


def resolve(records, setting: str, name: str) -> dict[int, dict]:
    """seed -> record of the arm ``name`` (``er_tuned`` is ``uniform`` at its own tuned m)."""
    base = name.removesuffix("+ts")
    if base == "ce":
        arm, m = "ce", 0.0
    elif base == "er_tuned":
        arm, m = "uniform", tuned(records, setting, "uniform")
    else:
        arm, m = base, tuned(records, setting, "proposed")
    return {r["seed"]: r for (s, _), r in records.items() if s == setting and r["arm"] == arm and r["m"] == m}


def metric(record: dict, name: str, key: str) -> float:
    return record["test_ts" if name.endswith("+ts") else "test"][key] * SCALE[key]


def paired(records, setting: str, a: str, b: str, key: str) -> dict | None:
    ra, rb = resolve(records, setting, a), resolve(records, setting, b)
    seeds = sorted(set(ra) & set(rb))
    if len(seeds) < 2:
        return None
    d = np.array([metric(ra[k], a, key) - metric(rb[k], b, key) for k in seeds])
    half = float(stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size))
    p = float(stats.ttest_1samp(d, 0.0).pvalue) if d.std() > 0 else 1.0
    return {"mean": float(d.mean()), "half_width": half, "n": int(d.size), "p": p}


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order."""
    order = np.argsort(pvalues)
    adjusted, running = np.empty(len(pvalues)), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted.tolist()


def settings_of(records) -> list[str]:
    from powered_study import SETTINGS

    present = {s for s, _ in records}
    return [s for s in SETTINGS if s in present]


def build(records) -> dict:
    out: dict = {"settings": {}}
    for s in settings_of(records):
        ce = list(resolve(records, s, "ce").values())
        entry = {"ce_train_acc": float(np.mean([r["train"]["acc_noisy"] for r in ce])) if ce else None,
                 "ce_memorised_mislabelled": _mean([r["train"]["memorised_mislabelled"] for r in ce]),
                 "strength": tuned(records, s, "proposed"), "er_beta": tuned(records, s, "uniform"),
                 "comparisons": {}}
        for a, b in COMPARISONS:
            cells = {key: paired(records, s, a, b, key) for key in METRICS}
            if any(cells.values()):
                entry["comparisons"][f"{a}-{b}"] = {k: v for k, v in cells.items() if v}
        out["settings"][s] = entry
    cells = [c for e in out["settings"].values() for comp in e["comparisons"].values() for c in comp.values()]
    for cell, adjusted in zip(cells, holm([c["p"] for c in cells])):
        cell["p_holm"] = adjusted
    out["holm_family"] = len(cells)
    return out


def _mean(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def verdict_word(cell: dict, key: str) -> str:
    if cell["p_holm"] >= 0.05:
        return "no significant difference"
    better = cell["mean"] < 0 if key in ("ece_mass", "nll") else cell["mean"] > 0
    return "**better**" if better else "**worse**"


#: the comparisons the README's verdict states (the full table is in powered_study.md)
README_COMPARISONS = ("proposed-shuffled_rmd", "proposed-uniform")


def verdict_table(summary: dict, *, only: tuple[str, ...] | None = None) -> str:
    rows = []
    for s, e in summary["settings"].items():
        for comp, cells in e["comparisons"].items():
            if only is not None and comp not in only:
                continue
            row = [s, comp.replace("-", " - ")]
            for key in METRICS:
                c = cells.get(key)
                digits = 3 if key == "nll" else 2
                row.append(f"{c['mean']:+.{digits}f} +- {c['half_width']:.{digits}f} (n={c['n']}, "
                           f"{verdict_word(c, key)})" if c else "-")
            rows.append(row)
    return markdown_table(["setting", "difference", "ECE mass (pp)", "ACC (pp)", "NLL"], rows)


def arm_table(records, setting: str) -> str:
    names = ("ce", "ce+ts", "proposed", "proposed+ts", "shuffled_rmd", "uniform", "er_tuned", "md", "rank", "robust")
    rows = []
    for name in names:
        runs = list(resolve(records, setting, name).values())
        if not runs:
            continue
        tr = [r["train"] for r in runs]
        row = [name, len(runs), f"{runs[0]['alpha']:.3f}", f"{100 * np.mean([t['acc_noisy'] for t in tr]):.1f}",
               _pct(_mean([t["memorised_mislabelled"] for t in tr])),
               f"{_fmt(_mean([t['conf_given_mislabelled'] for t in tr]))} / "
               f"{_fmt(_mean([t['conf_given_clean'] for t in tr]))}"]
        for key in ("acc", "ece_mass", "ece_width", "nll"):
            v = np.array([metric(r, name, key) for r in runs])
            digits = 3 if key == "nll" else 2
            row.append(f"{v.mean():.{digits}f} +- {v.std(ddof=1) if v.size > 1 else 0:.{digits}f}")
        rows.append(row)
    return markdown_table(["arm", "seeds", "alpha", "train acc (noisy) %", "mislabelled fitted %",
                           "train conf on given label: mislabelled / clean", "test ACC %", "ECE mass %",
                           "ECE width %", "NLL"], rows)


def _pct(v):
    return "-" if v is None else f"{100 * v:.1f}"


def _fmt(v):
    return "-" if v is None else f"{v:.3f}"


def quintile_table(records, setting: str) -> str:
    rows = []
    for name in ("ce", "proposed", "shuffled_rmd", "uniform"):
        runs = list(resolve(records, setting, name).values())
        if runs:
            q = np.array([r["test_ece_by_rmd_quintile"] for r in runs]) * 100
            rows.append([name, len(runs)] + [f"{v:.2f}" for v in q.mean(0)])
    return markdown_table(["arm", "seeds", "easiest", "2", "3", "4", "hardest"], rows)


def tuning_table(records, setting: str) -> str:
    from powered_study import STRENGTHS

    rows = []
    for arm in ("proposed", "uniform"):
        cells = []
        for m in STRENGTHS:
            r = [x for (s, _), x in records.items() if s == setting and x["arm"] == arm and x["m"] == m
                 and x["seed"] == 0]
            cells.append(f"{r[0]['val']['nll']:.3f}" if r else "-")
        rows.append([arm] + cells)
    return markdown_table(["arm (seed 0)"] + [f"m = {m:g}" for m in STRENGTHS], rows)


def render(records, summary: dict) -> str:
    lines = ["# powered_study\n", "Generated by `python benchmarks/powered_study.py summarise` from the run records in "
             "`benchmarks/results/powered_study/runs/`; the regime and method are in docs/benchmarks.md.\n",
             f"Holm family: {summary['holm_family']} (setting, comparison, metric) cells; a verdict is better / worse "
             "when the Holm-adjusted paired t-test p < 0.05.\n", verdict_table(summary), ""]
    contrast = STUDY / "weight_contrast.json"
    for s, e in summary["settings"].items():
        missing = missing_tuning(records, s)
        if missing:
            lines.append(f"Tuning runs not recorded yet: {', '.join(missing)} (comparisons at m* wait for the "
                         "proposed ones, er_tuned for the uniform ones).\n")
        lines += [f"## {s}\n", f"Chosen on validation NLL (seed 0): proposed m* = {e['strength']}, ER beta = "
                  f"{e['er_beta']}; CE train accuracy on the noisy labels {_pct(e['ce_train_acc'])}%, mislabelled "
                  f"samples fitted {_pct(e['ce_memorised_mislabelled'])}%.\n", "Validation NLL per strength:\n",
                  tuning_table(records, s), "", "Test metrics (mean +- std over seeds):\n", arm_table(records, s), "",
                  "Test ECE mass (%) within test-RMD quintiles:\n", quintile_table(records, s), ""]
        curves = [r["train"]["curve"] for r in resolve(records, s, "ce").values() if r["train"]["curve"]]
        if curves:
            lines.append("CE seed 0, train accuracy on the noisy labels by epoch: "
                         + ", ".join(f"{e_}: {100 * a:.1f}%" for e_, a in curves[0]) + "\n")
    if contrast.exists():
        lines += ["## Weight contrast\n", contrast_table(json.loads(contrast.read_text())), ""]
    return "\n".join(lines)


def contrast_table(rows: list[dict]) -> str:
    return markdown_table(
        ["setting", "weighting", "mean s", "mean s(mislabelled) / mean s(clean)", "bonus share on mislabelled",
         "mislabelled share of samples", "Spearman(RMD, out-of-fold loss)"],
        [[r["setting"], r["weighting"], f"{r['mean']:.3f}", f"{r['contrast']:.3f}", f"{100 * r['bonus_share']:.1f}%",
          f"{100 * r['mislabelled_share']:.1f}%", _fmt(r.get("spearman_oof"))] for r in rows])


def summarise(records, *, readme: Path) -> None:
    summary = build(records)
    write_result("powered_study.json", json.dumps(summary, indent=1) + "\n")
    write_result("powered_study.md", render(records, summary))
    if readme.exists():
        text = readme.read_text()
        block = f"{VERDICT_START}\n{verdict_table(summary, only=README_COMPARISONS)}\n{VERDICT_END}"
        if VERDICT_START in text:
            text = re.sub(re.escape(VERDICT_START) + ".*?" + re.escape(VERDICT_END), lambda _: block, text,
                          flags=re.S)
            readme.write_text(text)
    print(verdict_table(summary))

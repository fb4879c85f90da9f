"""A self-contained HTML report: metrics, calibration, selective prediction, robustness and difficulty.

:func:`build_report` writes one ``report.html`` with every figure embedded as a base64 PNG data URI
(no external files, scripts or fonts), so the page can be mailed or archived as is. Sections whose
inputs were not given are replaced by a note saying what would enable them.

Figures are drawn with matplotlib's Agg canvas on :class:`matplotlib.figure.Figure` objects (not
``pyplot``), so nothing touches matplotlib's global state and nothing needs a display.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from rmd_ray.core.atomic import atomic_path
from rmd_ray.core.config import WeightConfig
from rmd_ray.core.weights import difficulty_weights
from rmd_ray.data import storage
from rmd_ray.data.decode import DecodeError, decode_image
from rmd_ray.data.io import read_metadata
from rmd_ray.data.locations import fetch_rows_by_id
from rmd_ray.data.parts import column_names, read_table
from rmd_ray.evaluation.evaluate import TABLE_METRICS, evaluate_run, metrics_table
from rmd_ray.evaluation.proxy import ProxyResult

__all__ = ["SECTIONS", "build_report", "gallery_selection"]

#: Section id -> heading, in page order.
SECTIONS = {
    "metrics": "Metrics",
    "reliability": "Reliability diagrams",
    "rejection": "Accuracy vs rejection rate",
    "corruption": "Calibration under corruption",
    "proxy": "Difficulty proxy test",
    "gallery": "Hardest and easiest training images by RMD",
    "weights": "Distribution of the weight s",
}

_DPI = 90
_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
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
_CSS = """
body{font-family:Helvetica,Arial,sans-serif;margin:24px auto;max-width:1320px;color:#222;line-height:1.4}
h1{font-size:26px;margin-bottom:4px}
h2{font-size:20px;border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:32px}
.sub{color:#666;font-size:13px}
.note{background:#fff7e0;border-left:4px solid #e0a800;padding:8px 12px;color:#555}
.caption{color:#555;font-size:13px;margin:4px 0 12px}
table{border-collapse:collapse;font-size:14px;margin:8px 0}
th,td{border:1px solid #ccc;padding:4px 9px;text-align:right}
th{background:#f3f3f3} td.l,th.l{text-align:left} td.best{font-weight:bold;background:#e8f4e8}
.grid{display:flex;flex-wrap:wrap;gap:12px} .grid figure{margin:0;flex:1 1 600px;max-width:640px}
img{max-width:100%;height:auto;display:block}
"""


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------


@dataclass
class _Section:
    key: str
    body: str

    def html(self) -> str:
        return f'<section id="{self.key}">\n<h2>{html.escape(SECTIONS[self.key])}</h2>\n{self.body}\n</section>'


def _figure(width: float, height: float, *, constrained: bool = True) -> Figure:
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained" if constrained else None)
    FigureCanvasAgg(fig)
    return fig


def _img(fig: Figure, alt: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _caption(text: str) -> str:
    return f'<p class="caption">{html.escape(text)}</p>'


def _color(i: int) -> str:
    return _COLORS[i % len(_COLORS)]


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------


def _check_named(value: Any, what: str, item_ok, item_desc: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        value = {"model": value}
    if not value:
        raise ValueError(f"{what} is empty; pass None to leave the section out")
    for name, item in value.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"{what} keys must be non-empty strings (method names), got {name!r}")
        if not item_ok(item):
            raise ValueError(f"{what}[{name!r}] must be {item_desc}, got {type(item).__name__}")
    return dict(value)


_CORRUPTION_KEYS = ("corruption", "severity", "ece_mass", "ece_width")


def _corruption_rows_ok(rows: Any) -> bool:
    return (
        isinstance(rows, Sequence)
        and len(rows) > 0
        and all(isinstance(r, Mapping) and all(k in r for k in _CORRUPTION_KEYS) for r in rows)
    )


def _check_inputs(runs, compare, scores_path, temperatures, title) -> tuple[str, str] | None:
    if not isinstance(runs, Mapping):
        raise ValueError(f"runs must be a dict {{run name: predictions path}}, got {type(runs).__name__}")
    for name, path in runs.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"run names must be non-empty strings, got {name!r}")
        if not Path(path).is_file():
            raise FileNotFoundError(f"predictions file for run {name!r} not found: {str(path)!r}")
    if compare is None:
        compare = tuple(runs)[:2] if len(runs) >= 2 else None
    elif (
        not isinstance(compare, Sequence)
        or isinstance(compare, str)
        or len(compare) != 2
        or any(c not in runs for c in compare)
        or compare[0] == compare[1]
    ):
        raise ValueError(f"compare must name two different runs from {list(runs)}, got {compare!r}")
    if scores_path is not None:
        if not storage.exists(scores_path):
            raise FileNotFoundError(f"scores file not found: {str(scores_path)!r}")
        names = column_names(scores_path)
        missing = [c for c in ("id", "label", "rmd") if c not in names]
        if missing:
            raise ValueError(f"scores file {str(scores_path)!r} lacks column(s) {missing}; pass a scores.parquet")
    temps = list(temperatures) if isinstance(temperatures, Sequence) else []
    if not temps or not all(isinstance(t, (int, float)) and not isinstance(t, bool) and t > 0 for t in temps):
        raise ValueError(f"temperatures must be a non-empty list of positive numbers, got {temperatures!r}")
    if not isinstance(title, str):
        raise TypeError(f"title must be a str, got {type(title).__name__}")
    return None if compare is None else (compare[0], compare[1])


# ---------------------------------------------------------------------------------------------
# sections from predictions
# ---------------------------------------------------------------------------------------------


def _fmt(metric: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "&ndash;"
    percent = _METRIC_FORMAT.get(metric, ("", False, False))[2]
    return f"{100 * value:.2f}" if percent else f"{value:.4f}"


def _metrics_section(results: dict[str, dict]) -> str:
    metrics = [m for m in TABLE_METRICS]
    table = metrics_table(results, metrics=metrics).to_pydict()
    head = "".join(f"<th>{html.escape(_METRIC_FORMAT[m][0])}</th>" for m in metrics)
    best = {}
    for m in metrics:
        vals = [v for v in table[m] if v is not None]
        if len(vals) > 1:
            best[m] = max(vals) if _METRIC_FORMAT[m][1] else min(vals)
    rows = []
    for i, run in enumerate(table["run"]):
        cells = "".join(
            f'<td class="{"best" if m in best and table[m][i] == best[m] else ""}">{_fmt(m, table[m][i])}</td>'
            for m in metrics
        )
        rows.append(f'<tr><td class="l">{html.escape(run)}</td><td>{table["n_samples"][i]}</td>{cells}</tr>')
    out = [
        f'<table><tr><th class="l">run</th><th>N</th>{head}</tr>{"".join(rows)}</table>',
        _caption(
            "ECE: 15 equal-mass / equal-width bins (L1). AURC: area under the risk-coverage curve with "
            "the max softmax probability (MSP) as confidence. MSP AUROC / FPR@95: "
            "misclassification detection with correct predictions as positives. "
            "Best value per column in bold."
        ),
    ]
    prov = []
    for run, res in results.items():
        meta = res["metadata"]
        fields = [str(meta.get(k, "")) for k in ("model", "loss", "epochs", "seed")]
        hp = format_hparams(meta)
        prov.append(
            f'<tr><td class="l">{html.escape(run)}</td>'
            + "".join(f'<td class="l">{html.escape(f)}</td>' for f in fields)
            + f'<td class="l">{html.escape(str(hp))}</td><td>{res["n_duplicates_dropped"]}</td>'
            + f'<td class="l">{html.escape(res["path"])}</td></tr>'
        )
    out.append(
        '<table><tr><th class="l">run</th><th class="l">model</th><th class="l">loss</th>'
        '<th class="l">epochs</th><th class="l">seed</th><th class="l">hparams</th>'
        '<th>duplicates dropped</th><th class="l">file</th></tr>' + "".join(prov) + "</table>"
    )
    if len({r["ids_fingerprint"] for r in results.values()}) > 1:
        out.append(_note("The runs were evaluated on different sets of samples: their numbers are not comparable."))
    return "\n".join(out)


def format_hparams(meta: dict) -> str:
    """The loss hyper-parameters of a run's metadata as ``alpha=0.3, temperature=0.7``.

    Training writes them as ``loss_hparams`` (``distributed/training.py``); ``hparams`` is read too,
    for prediction files written by other tools. An empty string when the run has none (e.g. CE).
    """
    hp = meta.get("loss_hparams", meta.get("hparams"))
    if isinstance(hp, dict):
        return ", ".join(f"{k}={v}" for k, v in sorted(hp.items()))
    return "" if hp is None else str(hp)


def _reliability_panel(ax, diagram, ece: float, binning: str, color: str) -> None:
    ax.plot([0, 1], [0, 1], ls="--", color="#888", lw=1, label="perfect calibration")
    if binning == "width":
        width = diagram.upper - diagram.lower
        ax.bar(
            diagram.lower,
            diagram.accuracy,
            width=width,
            align="edge",
            color=color,
            alpha=0.75,
            edgecolor="white",
            label="accuracy",
        )
        ax.bar(
            diagram.lower,
            diagram.confidence - diagram.accuracy,
            bottom=diagram.accuracy,
            width=width,
            align="edge",
            color="none",
            edgecolor="#d62728",
            hatch="//",
            lw=0.8,
            label="gap to confidence",
        )
    else:
        ax.plot(diagram.confidence, diagram.accuracy, "o-", color=color, ms=4, label="accuracy per bin")
        ax.vlines(diagram.confidence, diagram.accuracy, diagram.confidence, color="#d62728", lw=1.2, label="gap")
    name = "equal-mass" if binning == "mass" else "equal-width"
    ax.set_title(f"{name} bins, ECE = {100 * ece:.2f}%", fontsize=11)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("confidence (max softmax prob.)")
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)


def _reliability_section(results: dict[str, dict]) -> str:
    figs = []
    for i, (run, res) in enumerate(results.items()):
        fig = _figure(8.6, 5.0)
        axes = fig.subplots(1, 2)
        for ax, binning in zip(axes, ("mass", "width")):
            _reliability_panel(ax, res["reliability"][binning], res["metrics"][f"ece_{binning}"], binning, _color(i))
        fig.suptitle(f"{run}  (accuracy {100 * res['metrics']['acc']:.2f}%)", fontsize=12)
        figs.append(f"<figure>{_img(fig, f'reliability diagrams of {run}')}</figure>")
    return f'<div class="grid">{"".join(figs)}</div>' + _caption(
        "Points/bars below the diagonal: overconfident; above: underconfident. 15 bins each."
    )


def _rejection_section(results: dict[str, dict], compare: tuple[str, str] | None) -> str:
    fig = _figure(8.0, 4.8)
    ax = fig.subplots()
    curves = {}
    for i, (run, res) in enumerate(results.items()):
        rates, acc = 100 * res["rejection_rates"], 100 * res["accuracy_rejection"]
        curves[run] = (rates, acc)
        ax.plot(rates, acc, "o-", ms=3, color=_color(i), label=run)
    parts = []
    if compare is not None:
        (ra, aa), (rb, ab) = curves[compare[0]], curves[compare[1]]
        ab_on_a = np.interp(ra, rb, ab)
        ax.fill_between(ra, aa, ab_on_a, color="#999", alpha=0.3, label=f"gap {compare[0]} vs {compare[1]}")
        gap = float(np.mean(aa - ab_on_a))
        ax.set_title(f"mean accuracy difference {compare[0]} - {compare[1]}: {gap:+.2f} points", fontsize=11)
    ax.set_xlabel("rejection rate (%) — least confident (MSP) rejected first")
    ax.set_ylabel("accuracy on kept samples (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    parts.append(_img(fig, "accuracy against rejection rate"))
    if compare is None:
        parts.append(_note("The gap between two methods is shaded when runs holds at least two runs."))
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# sections from other inputs
# ---------------------------------------------------------------------------------------------


def _corruption_section(results: dict[str, list[Mapping[str, Any]]]) -> str:
    fig = _figure(11.5, 4.4)
    axes = fig.subplots(1, 2, sharey=True)
    methods = list(results)
    n_m = len(methods)
    width = 0.8 / n_m
    severities = sorted({int(r["severity"]) for rows in results.values() for r in rows if int(r["severity"]) > 0})
    n_types = {m: len({r["corruption"] for r in rows if int(r["severity"]) > 0}) for m, rows in results.items()}
    for ax, key in zip(axes, ("ece_mass", "ece_width")):
        handles = []
        for j, m in enumerate(methods):
            rows = results[m]
            offset = (j - (n_m - 1) / 2) * width
            data = [[100 * r[key] for r in rows if int(r["severity"]) == s] for s in severities]
            keep = [k for k, d in enumerate(data) if d]
            if keep:  # a method may have only its clean row
                bp = ax.boxplot(
                    [data[k] for k in keep],
                    positions=[severities[k] + offset for k in keep],
                    widths=width * 0.85,
                    patch_artist=True,
                    manage_ticks=False,
                    flierprops={"markersize": 3},
                )
                for box in bp["boxes"]:
                    box.set(facecolor=_color(j), alpha=0.55)
                for med in bp["medians"]:
                    med.set(color="black")
            clean = [100 * r[key] for r in rows if int(r["severity"]) == 0]
            if clean:
                ax.plot([offset], [float(np.mean(clean))], marker="D", color=_color(j), ms=6)
            handles.append(Patch(facecolor=_color(j), alpha=0.55, edgecolor="black", label=m))
        ax.set_xticks([0, *severities], ["clean", *map(str, severities)])
        ax.set_xlabel("severity")
        ax.set_title("equal-mass ECE (%)" if key == "ece_mass" else "equal-width ECE (%)", fontsize=11)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(handles=handles, fontsize=9)
    axes[0].set_ylabel("ECE (%)")
    types = ", ".join(f"{m}: {n}" for m, n in n_types.items())
    return _img(fig, "ECE against corruption severity") + _caption(
        f"Each box spans the corruption types at one severity (types per method: {types}); diamonds: clean data."
    )


def _proxy_section(results: dict[str, ProxyResult]) -> str:
    fig = _figure(9.0, 4.4)
    ax = fig.subplots()
    methods = list(results)
    g = max(r.n_groups for r in results.values())
    width = 0.8 / len(methods)
    for j, m in enumerate(methods):
        r = results[m]
        x = np.arange(r.n_groups) + (j - (len(methods) - 1) / 2) * width
        ax.bar(
            x,
            100 * r.error_rate,
            width=width * 0.95,
            color=_color(j),
            label=f"{m} (Spearman ρ with loss = {r.spearman:.3f})",
        )
    ticks = [f"{k + 1}" for k in range(g)]
    ticks[0], ticks[-1] = "1\nhardest", f"{g}\neasiest"
    ax.set_xticks(np.arange(g), ticks)
    ax.set_xlabel("validation group, sorted by RMD from hardest to easiest")
    ax.set_ylabel("classifier error rate (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=9)
    sizes = ", ".join(f"{m}: {r.n_samples} samples in {r.n_groups} groups" for m, r in results.items())
    return _img(fig, "proxy test error rate per difficulty group") + _caption(
        f"{sizes}. A useful difficulty measure gives error rates falling from left to right."
    )


def _scores(scores_path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    table = read_table(scores_path, columns=["id", "label", "rmd"])
    rmd = table.column("rmd").to_numpy(zero_copy_only=False).astype(np.float64)
    if not np.isfinite(rmd).all():
        bad = int((~np.isfinite(rmd)).sum())
        raise ValueError(f"scores file {str(scores_path)!r} has {bad} NaN/inf RMD value(s); rescore those samples")
    ids = np.asarray(table.column("id").to_pylist(), dtype=object)
    return ids, table.column("label").to_numpy().astype(np.int64), rmd, read_metadata(scores_path)


def gallery_selection(ids: Any, labels: Any, rmd: Any, *, per_class: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Positions of the hardest and the easiest samples of every class, by RMD (paper Fig. 1).

    Parameters
    ----------
    ids : array-like of str, shape (N,)
        Used only to break ties in RMD (ascending id), so the choice does not depend on row order.
    labels : array-like of int, shape (N,)
    rmd : array-like of float, shape (N,)
    per_class : int
        Samples on each side; a class with fewer than ``2 * per_class`` samples gets
        ``max(1, n_k // 2)`` per side (a class of one shows its single sample on both sides).

    Returns
    -------
    dict {class: (hardest, easiest)}
        For each class present, in increasing class order: positions into the inputs. ``hardest`` in
        decreasing RMD (hardest first); ``easiest`` also in decreasing RMD, so its last entry is the
        easiest sample of the class.
    """
    ids = np.asarray(ids).astype(str)
    labels = np.asarray(labels)
    rmd = np.asarray(rmd, dtype=np.float64)
    out = {}
    for k in np.unique(labels):
        idx = np.flatnonzero(labels == k)
        idx = idx[np.lexsort((ids[idx], -rmd[idx]))]  # hardest first, ties by id
        n = min(per_class, idx.size // 2) or 1
        out[int(k)] = (idx[:n], idx[idx.size - n :])
    return out


def _label_decimals(values: np.ndarray) -> int:
    """Decimals that keep the shown values apart: one more than the order of their spread, 1 to 6.

    A fixed ``.1f`` prints ``-4.0`` for every image when RMD is nearly constant (e.g. fewer samples
    than feature dimensions, where every in-sample distance is close to the same value).
    """
    spread = float(np.ptp(values)) if values.size else 0.0
    if not np.isfinite(spread) or spread <= 0:
        return 1
    return int(np.clip(1 - math.floor(math.log10(spread)), 1, 6))


def _gallery_picks(
    ids: np.ndarray, labels: np.ndarray, rmd: np.ndarray, usable: np.ndarray, *, per_class: int, max_classes: int
) -> tuple[list[tuple[int, np.ndarray, np.ndarray]], str]:
    """(class, hardest positions, easiest positions) for the classes shown, and a note on the choice."""
    rows = np.flatnonzero(usable)
    chosen = gallery_selection(ids[rows], labels[rows], rmd[rows], per_class=per_class)
    note = ""
    if len(chosen) > max_classes:
        # With many classes (ImageNet: 1000) the first few by index say little; show the classes whose
        # samples are hardest on average, where label problems and confusions concentrate.
        means = {k: float(rmd[rows][labels[rows] == k].mean()) for k in chosen}
        keep = sorted(sorted(chosen, key=lambda k: (-means[k], k))[:max_classes])
        note = _note(
            f"Showing the {max_classes} of {len(chosen)} classes with the highest mean RMD (hardest on average)."
        )
        chosen = {k: chosen[k] for k in keep}
    return [(k, rows[h], rows[e]) for k, (h, e) in chosen.items()], note


def _gallery_section(scores, source: str, per_class: int, max_classes: int) -> str:
    ids, labels, rmd, meta = scores
    names = list(meta.get("classes") or [])
    names += [str(k) for k in range(len(names), int(labels.max()) + 1)]
    notes: list[str] = []
    # Only the selected images are read from the source (a lazy source may be ImageNet-sized): an id
    # the source lacks is dropped and the selection redone without it, a few rounds at most.
    usable = np.ones(len(ids), dtype=bool)
    by_id: dict[str, dict] = {}
    for _ in range(4):
        picks, note = _gallery_picks(ids, labels, rmd, usable, per_class=per_class, max_classes=max_classes)
        wanted = sorted({int(i) for _, h, e in picks for i in np.r_[h, e]})
        need = [ids[i] for i in wanted if ids[i] not in by_id]
        by_id.update({row["id"]: row for row in fetch_rows_by_id(source, need).to_pylist()})
        missing = [i for i in wanted if ids[i] not in by_id]
        if not missing:
            break
        usable[missing] = False
        if not usable.any():
            break
    if not by_id or not usable.any():
        return _note(
            f"None of the {len(ids)} scored ids occur in source {source!r}: pass the source the scores were "
            "computed from."
        )
    if (~usable).any():
        dropped = int((~usable).sum())
        notes.append(_note(f"{dropped} scored id(s) are missing from source {source!r} and are skipped."))
    if note:
        notes.append(note)
    wanted = [i for i in wanted if ids[i] in by_id]
    rows = [by_id[ids[i]] for i in wanted]
    images, undecodable = {}, 0
    for i, row in zip(wanted, rows):
        try:
            images[i] = np.asarray(decode_image(row))
        except DecodeError:  # shown as a grey tile; the page is still worth having
            images[i] = np.full((8, 8, 3), 200, dtype=np.uint8)
            undecodable += 1
    if undecodable:
        notes.append(_note(f"{undecodable} selected image(s) could not be decoded and are shown grey."))

    # A fixed grid (not constrained layout, which spaces equal-aspect image axes unevenly): square
    # cells, a narrow spacer column between the hardest and the easiest block, margins in inches.
    cell, label_w, head_h, title_h = 0.95, 1.4, 0.55, 0.22
    ratios = [1.0] * per_class + [0.35] + [1.0] * per_class
    width = label_w + cell * sum(ratios) * 1.08 + 0.1
    height = head_h + (cell + title_h) * len(picks) + 0.1
    fig = _figure(width, height, constrained=False)
    grid = fig.subplots(
        len(picks),
        len(ratios),
        squeeze=False,
        gridspec_kw={
            "width_ratios": ratios,
            "left": label_w / width,
            "right": 1 - 0.1 / width,
            "top": 1 - head_h / height,
            "bottom": 0.1 / height,
            "wspace": 0.08,
            "hspace": title_h / cell,
        },
    )
    for ax in grid.ravel():
        ax.set_axis_off()
    decimals = _label_decimals(rmd[np.asarray(wanted, dtype=np.int64)])
    for r, (k, hard, easy) in enumerate(picks):
        cells = [(c, i) for c, i in enumerate(hard)] + [(per_class + 1 + c, i) for c, i in enumerate(easy)]
        for c, i in cells:
            ax = grid[r, c]
            ax.imshow(images[int(i)], interpolation="nearest")
            ax.set_title(f"{rmd[i]:.{decimals}f}", fontsize=8, pad=2)
        fig.text(
            (label_w - 0.12) / width,
            grid[r, 0].get_position().y0 + grid[r, 0].get_position().height / 2,
            str(names[k]),
            ha="right",
            va="center",
            fontsize=10,
        )
    for first, text in ((0, "hardest (largest RMD)"), (per_class + 1, "easiest (smallest RMD)")):
        left, right = grid[0, first].get_position().x0, grid[0, first + per_class - 1].get_position().x1
        fig.text((left + right) / 2, 1 - 0.2 / height, text, ha="center", va="center", fontsize=11, weight="bold")
    encoder = meta.get("encoder", "unknown encoder")
    return (
        "\n".join(notes)
        + _img(fig, "hardest and easiest training images per class")
        + _caption(
            f"Per class (row): the {per_class} training images with the largest RMD under their given "
            f"label (left) and the {per_class} with the smallest (right); the number above each image is "
            f"its RMD ({encoder} features)."
        )
    )


def _weights_section(scores, temperatures: Sequence[float]) -> str:
    _, _, rmd, meta = scores
    c = float(meta.get("c", WeightConfig().c))
    normalization = str(meta.get("normalization", WeightConfig().normalization))
    fig = _figure(3.0 * len(temperatures) + 0.6, 3.4)
    axes = fig.subplots(1, len(temperatures), squeeze=False)[0]
    for ax, t in zip(axes, temperatures):
        s = difficulty_weights(rmd, config=WeightConfig(temperature=float(t), c=c, normalization=normalization))
        ax.hist(s, bins=40, range=(0.0, 1.0), color="#1f77b4", alpha=0.85)
        ax.set_title(f"T = {t:g}   mean s = {s.mean():.3f}", fontsize=10)
        ax.set_xlabel("weight s")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("training samples (log scale)")
    return _img(fig, "histograms of the weight s at several temperatures") + _caption(
        f"s_i = exp(r_i/T) / (max_j exp(r_j/T) + c) with c = {c:g} and {normalization!r} normalisation "
        f"of the RMD r over the {rmd.size} scored training samples; smaller T concentrates weight on the "
        "hardest samples."
    )


# ---------------------------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------------------------


def build_report(
    *,
    runs: Mapping[str, str | os.PathLike[str]],
    scores_path: str | os.PathLike[str] | None = None,
    source: str | None = None,
    corruption_results: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    proxy_results: ProxyResult | Mapping[str, ProxyResult] | None = None,
    output_dir: str | os.PathLike[str],
    title: str = "rmd-ray report",
    compare: Sequence[str] | None = None,
    temperatures: Sequence[float] = (0.1, 0.3, 0.7, 2.0),
    gallery_per_class: int = 6,
    max_gallery_classes: int = 20,
) -> Path:
    """Write ``output_dir/report.html`` (atomically) and return its path.

    Parameters
    ----------
    runs : dict {run name: predictions Parquet}
        Metrics table, reliability diagrams and accuracy-rejection curves (may be empty).
    scores_path : scores.parquet of the training set, optional
        Weight histograms; with ``source`` also the image galleries.
    source : str, optional
        Reader spec (:func:`rmd_ray.data.readers.read_source`) of the images that were scored; joined by id.
    corruption_results : list of dict, or dict {method: list of dict}, optional
        Output of :func:`rmd_ray.evaluation.corruption.corruption_eval`.
    proxy_results : ProxyResult, or dict {scorer name: ProxyResult}, optional
        Output of :func:`rmd_ray.evaluation.proxy.difficulty_proxy_test`.
    output_dir : folder to write into (created if needed)
    title : page title
    compare : (run a, run b), optional
        The two runs whose accuracy-rejection gap is shaded; default the first two of ``runs``.
    temperatures : temperatures of the weight histograms (paper Fig. 10)
    gallery_per_class : images per class on each side of the gallery
    max_gallery_classes : classes shown in the gallery at most

    Returns
    -------
    pathlib.Path of the written ``report.html``

    Raises
    ------
    FileNotFoundError
        A predictions or scores file does not exist.
    ValueError
        Bad ``compare``, ``temperatures``, ``corruption_results`` / ``proxy_results`` of the wrong form,
        a scores file without ``id``/``label``/``rmd`` or with NaN RMD, an unknown source spec.
    """
    compare = _check_inputs(runs, compare, scores_path, temperatures, title)
    corruption = (
        None
        if corruption_results is None
        else _check_named(
            corruption_results,
            "corruption_results",
            _corruption_rows_ok,
            f"a non-empty list of dicts with keys {list(_CORRUPTION_KEYS)} (from corruption_eval)",
        )
    )
    proxy = (
        None
        if proxy_results is None
        else _check_named(proxy_results, "proxy_results", lambda r: isinstance(r, ProxyResult), "a ProxyResult")
    )
    for name, value in (
        ("gallery_per_class", gallery_per_class),
        ("max_gallery_classes", max_gallery_classes),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")

    sections: list[_Section] = []
    results = {name: evaluate_run(path) for name, path in runs.items()}
    no_runs = _note("No runs given: pass runs={name: predictions.parquet} (written by training) to enable this.")
    sections.append(_Section("metrics", _metrics_section(results) if results else no_runs))
    sections.append(_Section("reliability", _reliability_section(results) if results else no_runs))
    sections.append(_Section("rejection", _rejection_section(results, compare) if results else no_runs))
    sections.append(
        _Section(
            "corruption",
            _corruption_section(corruption)
            if corruption
            else _note(
                "Not computed: pass corruption_results=corruption_eval(...) "
                "(rmd_ray.evaluation.corruption), or a dict {method: results}, to plot ECE against "
                "corruption severity."
            ),
        )
    )
    sections.append(
        _Section(
            "proxy",
            _proxy_section(proxy)
            if proxy
            else _note(
                "Not computed: pass proxy_results=difficulty_proxy_test(...) (rmd_ray.evaluation.proxy) "
                "to show the error rate of a trained classifier on validation groups sorted by RMD."
            ),
        )
    )
    scores = None if scores_path is None else _scores(str(scores_path))
    if scores is None:
        gallery = _note("Not shown: pass scores_path=<scores.parquet> and source=<reader spec of the scored images>.")
    elif source is None:
        gallery = _note("Not shown: pass source=<reader spec of the scored images> (e.g. 'fashion-mnist:train').")
    else:
        gallery = _gallery_section(scores, source, gallery_per_class, max_gallery_classes)
    sections.append(_Section("gallery", gallery))
    sections.append(
        _Section(
            "weights",
            _weights_section(scores, temperatures)
            if scores
            else _note(
                "Not shown: pass scores_path=<scores.parquet> (from `rmd-ray score`) to plot the weights it implies."
            ),
        )
    )

    inputs = ", ".join(
        f"{k}: {v}"
        for k, v in (
            ("runs", len(runs)),
            ("scores", scores_path),
            ("source", source),
            ("corruption methods", len(corruption) if corruption else None),
            ("proxy results", len(proxy) if proxy else None),
        )
        if v
    )
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_CSS}</style></head><body>\n<h1>{html.escape(title)}</h1>\n"
        f'<p class="sub">{html.escape(inputs or "no inputs")}</p>\n'
        + "\n".join(s.html() for s in sections)
        + "\n</body></html>\n"
    )
    path = Path(output_dir) / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path

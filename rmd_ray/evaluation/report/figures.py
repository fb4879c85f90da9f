"""The report's figures: reliability diagrams, accuracy-rejection curves, ECE under corruption, the
proxy test and weight histograms, each drawn on its own :class:`matplotlib.figure.Figure` (Agg, no
``pyplot`` state) and embedded as a base64 PNG."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from rmd_ray.core.weights import WeightConfig, difficulty_weights
from rmd_ray.evaluation.proxy import ProxyResult

_DPI = 90


_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def figure(width: float, height: float, *, constrained: bool = True) -> Figure:
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained" if constrained else None)
    FigureCanvasAgg(fig)
    return fig


def img(fig: Figure, alt: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def note_html(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def caption(text: str) -> str:
    return f'<p class="caption">{html.escape(text)}</p>'


def _color(i: int) -> str:
    return _COLORS[i % len(_COLORS)]


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


def reliability_section(results: dict[str, dict]) -> str:
    figs = []
    for i, (run, res) in enumerate(results.items()):
        fig = figure(8.6, 5.0)
        axes = fig.subplots(1, 2)
        for ax, binning in zip(axes, ("mass", "width")):
            _reliability_panel(ax, res["reliability"][binning], res["metrics"][f"ece_{binning}"], binning, _color(i))
        fig.suptitle(f"{run}  (accuracy {100 * res['metrics']['acc']:.2f}%)", fontsize=12)
        figs.append(f"<figure>{img(fig, f'reliability diagrams of {run}')}</figure>")
    return f'<div class="grid">{"".join(figs)}</div>' + caption(
        "Points/bars below the diagonal: overconfident; above: underconfident. 15 bins each."
    )


def rejection_section(results: dict[str, dict], compare: tuple[str, str] | None) -> str:
    fig = figure(8.0, 4.8)
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
    parts.append(img(fig, "accuracy against rejection rate"))
    if compare is None:
        parts.append(note_html("The gap between two methods is shaded when runs holds at least two runs."))
    return "\n".join(parts)


def corruption_section(results: dict[str, list[Mapping[str, Any]]]) -> str:
    fig = figure(11.5, 4.4)
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
    return img(fig, "ECE against corruption severity") + caption(
        f"Each box spans the corruption types at one severity (types per method: {types}); diamonds: clean data."
    )


def proxy_section(results: dict[str, ProxyResult]) -> str:
    fig = figure(9.0, 4.4)
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
    return img(fig, "proxy test error rate per difficulty group") + caption(
        f"{sizes}. A useful difficulty measure gives error rates falling from left to right."
    )


def weights_section(scores, temperatures: Sequence[float]) -> str:
    _, _, rmd, meta = scores
    c = float(meta.get("c", WeightConfig().c))
    normalization = str(meta.get("normalization", WeightConfig().normalization))
    fig = figure(3.0 * len(temperatures) + 0.6, 3.4)
    axes = fig.subplots(1, len(temperatures), squeeze=False)[0]
    for ax, t in zip(axes, temperatures):
        s = difficulty_weights(rmd, config=WeightConfig(temperature=float(t), c=c, normalization=normalization))
        ax.hist(s, bins=40, range=(0.0, 1.0), color="#1f77b4", alpha=0.85)
        ax.set_title(f"T = {t:g}   mean s = {s.mean():.3f}", fontsize=10)
        ax.set_xlabel("weight s")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("training samples (log scale)")
    return img(fig, "histograms of the weight s at several temperatures") + caption(
        f"s_i = exp(r_i/T) / (max_j exp(r_j/T) + c) with c = {c:g} and {normalization!r} normalisation "
        f"of the RMD r over the {rmd.size} scored training samples; smaller T concentrates weight on the "
        "hardest samples."
    )

"""Checks the report's inputs, builds each section and renders the page from its Jinja2 templates."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from markupsafe import Markup

from rmd_ray.evaluation.evaluate import evaluate_run
from rmd_ray.evaluation.proxy import ProxyResult
from rmd_ray.evaluation.report.figures import (
    corruption_section,
    note_html,
    proxy_section,
    rejection_section,
    reliability_section,
    weights_section,
)
from rmd_ray.evaluation.report.gallery import gallery_section, load_scores
from rmd_ray.evaluation.report.tables import metrics_section, ood_section
from rmd_ray.evaluation.report.templating import TEMPLATES, render
from rmd_ray.io import storage
from rmd_ray.io.parts import column_names

#: Section id -> heading, in page order.
SECTIONS = {
    "metrics": "Metrics",
    "reliability": "Reliability diagrams",
    "rejection": "Accuracy vs rejection rate",
    "corruption": "Calibration under corruption",
    "proxy": "Difficulty proxy test",
    "ood": "Out-of-distribution detection",
    "gallery": "Hardest and easiest training images by RMD",
    "weights": "Distribution of the weight s",
}


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
        if not storage.exists(path):  # a file, or the parts directory that training writes (any URI)
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


def build_report(
    *,
    runs: Mapping[str, str | os.PathLike[str]],
    scores_path: str | os.PathLike[str] | None = None,
    source: str | None = None,
    corruption_results: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    proxy_results: ProxyResult | Mapping[str, ProxyResult] | None = None,
    ood_results: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
    output_dir: str | os.PathLike[str],
    title: str = "rmd-ray report",
    compare: Sequence[str] | None = None,
    temperatures: Sequence[float] = (0.1, 0.3, 0.7, 2.0),
    gallery_per_class: int = 6,
    max_gallery_classes: int = 20,
    fetch: Callable[[str, list[str]], Any] | None = None,
) -> str:
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
    ood_results : dict {run: {OOD set name: report}}, optional
        Output of :func:`rmd_ray.distributed.prediction.ood.ood_eval` per run (``ood.json`` of ``rmd-ray evaluate``).
    output_dir : folder to write into (created if needed)
    title : page title
    compare : (run a, run b), optional
        The two runs whose accuracy-rejection gap is shaded; default the first two of ``runs``.
    temperatures : temperatures of the weight histograms (paper Fig. 10)
    gallery_per_class : images per class on each side of the gallery
    max_gallery_classes : classes shown in the gallery at most
    fetch : callable, optional
        ``fetch(source, ids)`` -> the reader rows of ``ids`` (default
        :func:`rmd_ray.data.locations.fetch_rows_by_id`; the CLI passes
        :func:`rmd_ray.distributed.sources.fetch.fetch_rows`, which reads any source in Ray tasks).

    Returns
    -------
    str: where ``report.html`` went (a local path or a URI)

    Raises
    ------
    FileNotFoundError
        A predictions or scores file does not exist.
    ValueError
        Bad ``compare``, ``temperatures``, ``corruption_results`` / ``proxy_results`` of the wrong form,
        a scores file without ``id``/``label``/``rmd`` or with NaN RMD, an unknown source spec.
    """
    compare = _check_inputs(runs, compare, scores_path, temperatures, title)
    corruption, proxy = _check_results(
        corruption_results, proxy_results, ood_results,
        gallery_per_class=gallery_per_class, max_gallery_classes=max_gallery_classes,
    )
    # load the runs and draw their sections, then load the scores and draw theirs; render; write
    results = {name: evaluate_run(path) for name, path in runs.items()}
    sections = _run_sections(results, compare, corruption, proxy, ood_results)
    scores = None if scores_path is None else load_scores(str(scores_path))
    sections += _score_sections(
        scores, source, temperatures=temperatures, per_class=gallery_per_class, max_classes=max_gallery_classes,
        fetch=fetch,
    )
    inputs = _inputs_line(runs, scores_path, source, corruption, proxy, ood_results)
    return _write_page(_render_page(title, inputs, sections), output_dir)


def _check_results(
    corruption_results, proxy_results, ood_results, *, gallery_per_class, max_gallery_classes
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Check the optional results and gallery sizes; ``(corruption, proxy)`` keyed by method (or None).

    A bare list of corruption rows or a single ProxyResult becomes ``{"model": value}``.
    """
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
    if ood_results is not None:
        _check_named(
            ood_results, "ood_results",
            lambda r: isinstance(r, Mapping) and all(isinstance(v, Mapping) and "msp" in v for v in r.values()),
            "a dict {OOD set: report} (from rmd_ray.distributed.prediction.ood.ood_eval)",
        )
    for name, value in (
        ("gallery_per_class", gallery_per_class),
        ("max_gallery_classes", max_gallery_classes),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return corruption, proxy


def _run_sections(results, compare, corruption, proxy, ood_results) -> list[tuple[str, str]]:
    """``(section id, HTML)`` of the sections from predictions and evaluation results, in page order.

    A section without its input holds a note saying what to pass.
    """
    sections: list[tuple[str, str]] = []
    no_runs = note_html("No runs given: pass runs={name: predictions.parquet} (written by training) to enable this.")
    sections.append(("metrics", metrics_section(results) if results else no_runs))
    sections.append(("reliability", reliability_section(results) if results else no_runs))
    sections.append(("rejection", rejection_section(results, compare) if results else no_runs))
    sections.append(
        (
            "corruption",
            corruption_section(corruption)
            if corruption
            else note_html(
                "Not computed: pass corruption_results=corruption_eval(...) "
                "(rmd_ray.evaluation.corruption), or a dict {method: results}, to plot ECE against "
                "corruption severity."
            ),
        )
    )
    sections.append(
        (
            "proxy",
            proxy_section(proxy)
            if proxy
            else note_html(
                "Not computed: pass proxy_results=difficulty_proxy_test(...) (rmd_ray.evaluation.proxy) "
                "to show the error rate of a trained classifier on validation groups sorted by RMD."
            ),
        )
    )
    sections.append(
        (
            "ood",
            ood_section(ood_results)
            if ood_results
            else note_html(
                "Not computed: pass ood_results (rmd-ray evaluate --ood-source NAME=SOURCE writes ood.json) to "
                "show MaxLogit / entropy / MSP OOD detection."
            ),
        )
    )
    return sections


def _score_sections(
    scores, source: str | None, *, temperatures: Sequence[float], per_class: int, max_classes: int,
    fetch: Callable[[str, list[str]], Any] | None,
) -> list[tuple[str, str]]:
    """``(section id, HTML)`` of the gallery and the weight histograms, from the training set's scores."""
    if scores is None:
        gallery = note_html(
            "Not shown: pass scores_path=<scores.parquet> and source=<reader spec of the scored images>."
        )
    elif source is None:
        gallery = note_html("Not shown: pass source=<reader spec of the scored images> (e.g. 'fashion-mnist:train').")
    else:
        gallery = gallery_section(scores, source, per_class, max_classes, fetch=fetch)
    weights = (
        weights_section(scores, temperatures)
        if scores
        else note_html(
            "Not shown: pass scores_path=<scores.parquet> (from `rmd-ray score`) to plot the weights it implies."
        )
    )
    return [("gallery", gallery), ("weights", weights)]


def _inputs_line(runs, scores_path, source, corruption, proxy, ood_results) -> str:
    """The page's one-line summary of what it was built from, e.g. ``runs: 2, scores: s.parquet``."""
    return ", ".join(
        f"{k}: {v}"
        for k, v in (
            ("runs", len(runs)),
            ("scores", scores_path),
            ("source", source),
            ("corruption methods", len(corruption) if corruption else None),
            ("proxy results", len(proxy) if proxy else None),
            ("OOD results", len(ood_results) if ood_results else None),
        )
        if v
    )


def _render_page(title: str, inputs: str, sections: list[tuple[str, str]]) -> str:
    """The page HTML from ``page.html.j2``, the inline stylesheet and the sections with their headings."""
    return render(
        "page.html.j2",
        title=title,
        inputs=inputs or "no inputs",
        css=(TEMPLATES / "style.css").read_text(encoding="utf-8"),
        sections=[{"key": key, "heading": SECTIONS[key], "body": Markup(body)} for key, body in sections],
    )


def _write_page(page: str, output_dir: str | os.PathLike[str]) -> str:
    """Write ``output_dir/report.html`` atomically (a local folder or any URI); return where it went."""
    return storage.write_bytes_atomic(storage.join(str(output_dir), "report.html"), page.encode("utf-8"))

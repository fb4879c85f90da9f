"""The report's image gallery: the hardest and easiest training images of each class by RMD."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from rmd_ray.data.decode import DecodeError, decode_image
from rmd_ray.data.locations import fetch_rows_by_id
from rmd_ray.evaluation.report.figures import caption, figure, img, note_html
from rmd_ray.io.parts import read_table
from rmd_ray.io.parts import read_table_metadata as read_metadata


def load_scores(scores_path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
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
        note = note_html(
            f"Showing the {max_classes} of {len(chosen)} classes with the highest mean RMD (hardest on average)."
        )
        chosen = {k: chosen[k] for k in keep}
    return [(k, rows[h], rows[e]) for k, (h, e) in chosen.items()], note


def gallery_section(scores, source: str, per_class: int, max_classes: int, *,
                    fetch: Callable[[str, list[str]], Any] | None = None) -> str:
    """The gallery section's HTML: notes, the figure of :func:`_gallery_figure` and its caption.

    ``scores`` is ``(ids, labels, rmd, metadata)`` as read by :func:`load_scores`; ``source`` the reader
    spec of the scored images, joined by id; ``fetch(source, ids)`` reads their rows (default
    :func:`rmd_ray.data.locations.fetch_rows_by_id`).
    """
    ids, labels, rmd, meta = scores
    names = list(meta.get("classes") or [])
    names += [str(k) for k in range(len(names), int(labels.max()) + 1)]
    notes: list[str] = []
    picks, note, usable, by_id, wanted = _fetch_picks(
        ids, labels, rmd, source, per_class=per_class, max_classes=max_classes, fetch=fetch or fetch_rows_by_id
    )
    if not by_id or not usable.any():
        return note_html(
            f"None of the {len(ids)} scored ids occur in source {source!r}: pass the source the scores were "
            "computed from."
        )
    if (~usable).any():
        dropped = int((~usable).sum())
        notes.append(note_html(f"{dropped} scored id(s) are missing from source {source!r} and are skipped."))
    if note:
        notes.append(note)
    wanted = [i for i in wanted if ids[i] in by_id]
    images, undecodable = _decode_picks(wanted, [by_id[ids[i]] for i in wanted])
    if undecodable:
        notes.append(note_html(f"{undecodable} selected image(s) could not be decoded and are shown grey."))
    fig = _gallery_figure(picks, images, rmd, names, wanted, per_class=per_class)
    encoder = meta.get("encoder", "unknown encoder")
    return (
        "\n".join(notes)
        + img(fig, "hardest and easiest training images per class")
        + caption(
            f"Per class (row): the {per_class} training images with the largest RMD under their given "
            f"label (left) and the {per_class} with the smallest (right); the number above each image is "
            f"its RMD ({encoder} features)."
        )
    )


def _fetch_picks(
    ids: np.ndarray, labels: np.ndarray, rmd: np.ndarray, source: str, *, per_class: int, max_classes: int,
    fetch: Callable[[str, list[str]], Any],
) -> tuple[list[tuple[int, np.ndarray, np.ndarray]], str, np.ndarray, dict[str, dict], list[int]]:
    """The picks of :func:`_gallery_picks` and their rows from ``source``: ``(picks, note, usable, by_id, wanted)``.

    Only the selected images are read from the source (a lazy source may be ImageNet-sized): an id
    the source lacks is dropped (``usable`` False) and the selection redone without it, a few rounds
    at most. ``wanted`` holds the positions of the last selection, ``by_id`` the rows fetched so far.
    """
    usable = np.ones(len(ids), dtype=bool)
    by_id: dict[str, dict] = {}
    for _ in range(4):
        picks, note = _gallery_picks(ids, labels, rmd, usable, per_class=per_class, max_classes=max_classes)
        wanted = sorted({int(i) for _, h, e in picks for i in np.r_[h, e]})
        need = [ids[i] for i in wanted if ids[i] not in by_id]
        by_id.update({row["id"]: row for row in fetch(source, need).to_pylist()})
        missing = [i for i in wanted if ids[i] not in by_id]
        if not missing:
            break
        usable[missing] = False
        if not usable.any():
            break
    return picks, note, usable, by_id, wanted


def _decode_picks(wanted: list[int], rows: list[dict]) -> tuple[dict[int, np.ndarray], int]:
    """``({position: image array}, number undecodable)``; an undecodable image becomes a grey 8x8 tile."""
    images, undecodable = {}, 0
    for i, row in zip(wanted, rows):
        try:
            images[i] = np.asarray(decode_image(row))
        except DecodeError:  # shown as a grey tile; the page is still worth having
            images[i] = np.full((8, 8, 3), 200, dtype=np.uint8)
            undecodable += 1
    return images, undecodable


def _gallery_figure(
    picks: list[tuple[int, np.ndarray, np.ndarray]],
    images: dict[int, np.ndarray],
    rmd: np.ndarray,
    names: list[str],
    wanted: list[int],
    *,
    per_class: int,
) -> Figure:
    """One row per picked class: the hardest images, a spacer, the easiest, each titled with its RMD.

    A fixed grid (not constrained layout, which spaces equal-aspect image axes unevenly): square
    cells, a narrow spacer column between the hardest and the easiest block, margins in inches.
    """
    cell, label_w, head_h, title_h = 0.95, 1.4, 0.55, 0.22
    ratios = [1.0] * per_class + [0.35] + [1.0] * per_class
    width = label_w + cell * sum(ratios) * 1.08 + 0.1
    height = head_h + (cell + title_h) * len(picks) + 0.1
    fig = figure(width, height, constrained=False)
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
    return fig

"""Beyond the paper: rank training samples to find likely label errors.

A mislabelled sample sits far from its given class and near another one (docs/design.md 1.3 and
1.11). Three rankings (:data:`rmd_ray.core.label_ranking.LABEL_SCORES`): ``rmd``, the Mahalanobis
``margin`` MD(x, y) - min_{k != y} MD(x, k), and ``combined``, the mean of their normalised ranks
(the default, :data:`rmd_ray.core.label_ranking.DEFAULT_LABEL_SCORE`, chosen on the label-noise
benchmark). We list the top ``k`` with the given label and the class whose mean is nearest under the
shared covariance, and draw their images in a grid for a person to check.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rmd_ray.core.label_ranking import (
    DEFAULT_LABEL_SCORE,
    LABEL_SCORES,
    label_issue_scores,
    rank_average_within,
)
from rmd_ray.data.decode import DecodeError, decode_image
from rmd_ray.data.locations import fetch_rows_by_id
from rmd_ray.io import storage
from rmd_ray.io.parts import column_names, is_parts_dir, iter_parts, read_manifest, read_table_metadata

_COLUMNS = ["id", "label", "rmd", "md", "weight", "nearest_class", "margin"]


@dataclass(frozen=True)
class LabelIssueReport:
    table_path: str
    grid_path: str
    n_written: int


def _check_columns(names: list[str], score: str) -> None:
    missing = set(_COLUMNS) - set(names)
    if missing == {"margin"}:
        raise ValueError(
            f"scores table lacks the margin column needed by --score {score}: rescore with this version of "
            "`rmd-ray score` (or pass --score rmd)"
        )
    if missing:
        raise ValueError(f"scores table lacks columns {sorted(missing)}: pass the scores.parquet of `rmd-ray score`")


def _top(table: pa.Table, top: int) -> pa.Table:
    order = pc.sort_indices(table, sort_keys=[("score", "descending"), ("id", "ascending")])
    return table.take(order[: min(top, table.num_rows)])


def rank_suspects(scores: pa.Table, *, top: int, classes: list[str], score: str = DEFAULT_LABEL_SCORE) -> pa.Table:
    """The ``top`` most suspect rows under ``score``, most suspect first, with class names.

    ``scores`` holds every sample ranked together (``combined`` ranks against the whole table), or
    already carries a ``score`` column (then ``score`` only names it).

    Columns: rank, id, given_label, given_class, nearest_class, nearest_name, score, rmd, margin, md,
    weight, label_disagrees (nearest class differs from the given label).
    """
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be an int >= 1, got {top!r}")
    LABEL_SCORES.get(score)
    _check_columns(scores.column_names, score)
    if "score" not in scores.column_names:
        values = label_issue_scores(scores.column("rmd").to_numpy(), scores.column("margin").to_numpy(), score=score)
        scores = scores.append_column("score", pa.array(values, pa.float64()))
    best = _top(scores, top)
    given = best.column("label").to_numpy()
    nearest = best.column("nearest_class").to_numpy()

    def name(k: int) -> str:
        return classes[k] if 0 <= k < len(classes) else str(k)

    return pa.table(
        {
            "rank": np.arange(1, best.num_rows + 1),
            "id": best.column("id"),
            "given_label": given,
            "given_class": [name(int(k)) for k in given],
            "nearest_class": nearest,
            "nearest_name": [name(int(k)) for k in nearest],
            "score": best.column("score"),
            "rmd": best.column("rmd"),
            "margin": best.column("margin"),
            "md": best.column("md"),
            "weight": best.column("weight"),
            "label_disagrees": given != nearest,
        }
    )


def _row_count(scores_path: str) -> int:
    """Rows of a scores table: its manifest's count, or a single file's footer."""
    if is_parts_dir(scores_path):
        return int(read_manifest(scores_path)["rows"])
    import pyarrow.parquet as pq

    with storage.open_input(scores_path) as handle, storage.parquet_errors(scores_path):
        return pq.ParquetFile(handle).metadata.num_rows


def _sorted_references(scores_path: str, score: str) -> tuple[np.ndarray, np.ndarray] | None:
    """For ``combined`` (ranks against every row): the rmd and margin of all rows, each sorted; else None.

    Filled part by part into arrays of the table's row count and sorted in place: 16 bytes a row at the
    peak (a list of per-part arrays concatenated took about 45, small arrays fragmenting the heap).
    """
    if score != "combined":
        return None
    n = _row_count(scores_path)
    rmd, margin, at = np.empty(n), np.empty(n), 0
    for part in iter_parts(scores_path, columns=["rmd", "margin"]):
        stop = at + part.num_rows
        if stop > n:
            raise ValueError(f"scores {scores_path!r} hold more rows than their manifest's {n}: rescore")
        rmd[at:stop] = part.column("rmd").to_numpy()
        margin[at:stop] = part.column("margin").to_numpy()
        at = stop
    if at != n:
        raise ValueError(f"scores {scores_path!r} hold {at} rows, their manifest {n}: rescore")
    if not n:
        return None
    rmd.sort()
    margin.sort()
    return rmd, margin


def find_label_issues(
    scores_path: str | os.PathLike[str],
    *,
    source: str,
    top: int = 100,
    output_dir: str | os.PathLike[str],
    grid_columns: int = 8,
    score: str = DEFAULT_LABEL_SCORE,
    fetch: Callable[[str, list[str]], pa.Table] = fetch_rows_by_id,
) -> LabelIssueReport:
    """Write ``label_issues.parquet`` + ``.csv`` and ``label_issues.png`` (a grid of the suspects).

    The scores (a parts directory or one file, any URI) are streamed one part at a time keeping the
    running top ``top``, so memory does not grow with the dataset beyond, for ``combined``, two floats
    per row: a first pass reads only the rmd and margin columns and sorts each, and every part's rows are
    then ranked against them (:func:`rmd_ray.core.label_ranking.rank_average_within`, equal to ranking
    the whole table at once).
    Only the suspects' images are read from ``source``, by ``fetch(source, ids)`` (the reader rows of
    those ids; the CLI passes :func:`rmd_ray.distributed.sources.fetch.fetch_rows`, which reads any source).
    """
    scores_path = str(scores_path)
    LABEL_SCORES.get(score)
    if not storage.exists(scores_path):
        raise ValueError(f"scores file {scores_path!r} not found; run `rmd-ray score` first")
    meta = read_table_metadata(scores_path)
    classes = list(meta.get("classes", []))
    _check_columns(column_names(scores_path), score)
    best: pa.Table | None = None
    references = _sorted_references(scores_path, score)
    for part in iter_parts(scores_path):
        part = part.select(_COLUMNS)
        rmd, margin = part.column("rmd").to_numpy(), part.column("margin").to_numpy()
        if references is not None:
            values = rank_average_within(references, (rmd, margin))
        else:
            values = label_issue_scores(rmd, margin, score=score)
        part = part.append_column("score", pa.array(values, pa.float64()))
        best = _top(part if best is None else pa.concat_tables([best, part]), top)
    if best is None:
        raise ValueError(f"scores {scores_path!r} hold no rows")
    suspects = rank_suspects(best, top=top, classes=classes, score=score)
    output_dir = str(output_dir)
    table_path = storage.write_parquet_atomic(
        suspects, storage.join(output_dir, "label_issues.parquet"), metadata={**meta, "label_score": score}
    )
    _write_csv_atomic(suspects, storage.join(output_dir, "label_issues.csv"))
    images = _images_by_id(fetch(source, suspects.column("id").to_pylist()))
    grid_path = _draw_grid(
        suspects, images, storage.join(output_dir, "label_issues.png"), columns=grid_columns, score=score
    )
    return LabelIssueReport(table_path, grid_path, suspects.num_rows)


def _images_by_id(rows: pa.Table) -> dict[str, object]:
    images = {}
    for row in rows.to_pylist():
        try:
            images[row["id"]] = decode_image(row)
        except DecodeError:  # it is in the errors table already; draw an empty cell
            continue
    return images


def _write_csv_atomic(table: pa.Table, uri: str) -> None:
    import pyarrow.csv as pacsv

    buffer = pa.BufferOutputStream()
    pacsv.write_csv(table, buffer)
    storage.write_bytes_atomic(uri, buffer.getvalue())


def _draw_grid(suspects: pa.Table, images: dict[str, object], path: str, *, columns: int, score: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = grid_figure(suspects, images, columns=columns, score=score)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=110, format="png")
    plt.close(fig)
    return storage.write_bytes_atomic(path, buffer.getvalue())


def grid_figure(suspects: pa.Table, images: dict[str, object], *, columns: int, score: str = "rmd"):
    """The suspects' images in a grid, each titled with its rank, ``score``, given and nearest class.

    Each cell's three title lines get their own band above the image: constrained layout sizes the
    gaps from the drawn titles, so a title never overlaps the image of the row above
    (``tests/data/test_label_issues.py`` checks the bounding boxes).
    """
    import matplotlib.pyplot as plt

    n = max(suspects.num_rows, 1)
    columns = min(columns, n)
    rows = math.ceil(n / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(1.9 * columns, 2.4 * rows + 0.4), squeeze=False, layout="constrained"
    )
    records = suspects.to_pylist()
    for ax, record in zip(axes.flat, records + [None] * (rows * columns - len(records))):
        ax.axis("off")
        if record is None:
            continue
        image = images.get(record["id"])
        if image is not None:
            ax.imshow(np.asarray(image), interpolation="nearest")
        colour = "tab:red" if record["label_disagrees"] else "black"
        ax.set_title(
            f"#{record['rank']} {score} {record['score']:.3g}\ngiven: {record['given_class'][:14]}\n"
            f"nearest: {record['nearest_name'][:14]}",
            fontsize=7, color=colour,
        )
    fig.suptitle(f"Likely label errors by {score} (red: nearest class differs from the given label)", fontsize=9)
    return fig

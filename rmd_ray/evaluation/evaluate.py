"""Evaluate saved predictions: load a predictions Parquet file (deduplicated by id), compute every metric
of docs/design.md 1.9, and compare runs side by side.

A predictions file has columns ``id`` (string), ``label`` (int64) and ``logits`` (list<float32>, one
list of K logits per row), and provenance metadata under the schema key ``rmd_ray``
(:func:`rmd_ray.io.parts.read_table_metadata`).

Padded distributed evaluation (docs/design.md section 6) repeats some samples so that every rank gets a
full batch; counting them twice biases ECE and AUROC. :func:`dedupe_predictions` drops repeats of an id
whose label and logits agree with its first occurrence and raises for an id whose repeats disagree
(two different samples under one id, or two different models in one file).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from rmd_ray.core.metrics import (
    accuracy_rejection_curve,
    metrics_from_summaries,
    reliability_from_confidence,
)
from rmd_ray.evaluation.summaries import SkippedRowsWarning, iter_prediction_batches, summarise_predictions
from rmd_ray.io import storage
from rmd_ray.io.parts import read_table_metadata as read_metadata

__all__ = [
    "DEFAULT_REJECTION_RATES",
    "DuplicatePredictionsWarning",
    "SkippedRowsWarning",
    "TABLE_METRICS",
    "compare_runs",
    "dedupe_predictions",
    "evaluate_run",
    "load_predictions",
    "metrics_table",
]

#: Rejection rates of the accuracy-rejection curve in :func:`evaluate_run` (0 %, 5 %, ..., 90 %).
DEFAULT_REJECTION_RATES = np.round(np.arange(0, 19) * 0.05, 2)
#: Columns of :func:`metrics_table` (keys of :func:`rmd_ray.core.metrics.evaluate_predictions`).
TABLE_METRICS = (
    "acc",
    "ece_mass",
    "ece_width",
    "nll",
    "brier",
    "aurc",
    "msp_auroc",
    "msp_fpr_at_95_tpr",
)


class DuplicatePredictionsWarning(UserWarning):
    """Repeated ids with identical predictions were dropped (padded distributed evaluation)."""


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------


def _check_path(path: Any, what: str = "predictions file") -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{what} path must be a str or os.PathLike, got {type(path).__name__}")
    if not storage.exists(path):
        raise FileNotFoundError(f"{what} {os.fspath(path)!r} does not exist")
    return os.fspath(path)


def _read(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    batches = list(iter_prediction_batches(path))  # validated batch by batch, then stacked
    return tuple(np.concatenate([b[i] for b in batches]) for i in range(3))


def dedupe_predictions(
    ids: Any, labels: Any, logits: Any, *, rtol: float = 1e-5, atol: float = 1e-6
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Drop repeated ids whose prediction equals the first occurrence; raise if any repeat differs.

    Two rows of one id agree when their labels are equal and every logit satisfies
    ``|a - b| <= atol + rtol * |b|`` (``numpy.isclose``; the small default tolerance absorbs float32
    noise from different batch compositions on different ranks; pass ``rtol=0, atol=0`` to demand
    bitwise equality).

    Parameters
    ----------
    ids : array-like of str, shape (N,)
    labels : array-like of int, shape (N,)
    logits : array-like of float, shape (N, K)

    Returns
    -------
    ids, labels, logits : the first occurrence of every id, in order of first appearance
    n_dropped : int
        Rows removed (``N - number of distinct ids``).

    Raises
    ------
    ValueError
        Lengths differ, or an id repeats with a different label or logits; the message names the
        first such id and how many ids conflict.
    """
    ids = np.asarray(ids, dtype=object)
    labels = np.asarray(labels)
    logits = np.asarray(logits, dtype=np.float64)
    if not (ids.ndim == labels.ndim == 1 and logits.ndim == 2):
        raise ValueError(
            f"ids and labels must be 1-D and logits 2-D, got shapes {ids.shape}, {labels.shape}, "
            f"{logits.shape}"
        )
    if not ids.shape[0] == labels.shape[0] == logits.shape[0]:
        raise ValueError(
            f"{ids.shape[0]} ids, {labels.shape[0]} labels and {logits.shape[0]} logit rows; "
            "pass one of each per sample"
        )
    _, first, inverse = np.unique(ids.astype(str), return_index=True, return_inverse=True)
    ref = first[inverse]  # row index of each row's first occurrence
    same_logits = np.isclose(logits, logits[ref], rtol=rtol, atol=atol, equal_nan=True).all(axis=1)
    conflict = (labels != labels[ref]) | ~same_logits
    if conflict.any():
        rows = np.flatnonzero(conflict)
        bad_ids = np.unique(ids[rows].astype(str))
        row = int(rows[0])
        what = "label" if labels[row] != labels[ref[row]] else "logits"
        raise ValueError(
            f"id {ids[row]!r} appears more than once with different {what} (rows {int(ref[row])} and {row}); "
            f"{bad_ids.size} id(s) conflict in all. Duplicates from padded evaluation are identical: "
            "these are different samples sharing an id, or predictions of different models in one file"
        )
    keep = np.sort(first)
    return ids[keep], labels[keep], logits[keep], int(ids.shape[0] - keep.shape[0])


def load_predictions(
    path: str | os.PathLike[str], *, rtol: float = 1e-5, atol: float = 1e-6
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a predictions Parquet file and drop duplicated ids (see :func:`dedupe_predictions`).

    Parameters
    ----------
    path : path to a Parquet file with ``id`` (str), ``label`` (int) and ``logits`` (list of K floats)
    rtol, atol : float
        Tolerance under which two rows of one id count as the same prediction.

    Returns
    -------
    ids : ndarray of str (object), shape (M,)
    labels : ndarray of int64, shape (M,)
    logits : ndarray of float64, shape (M, K)
        ``M`` distinct ids, in order of first appearance in the file.

    Warns
    -----
    DuplicatePredictionsWarning
        When identical duplicates were dropped; the message gives the count.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Missing columns, no rows, null ids / labels / logits, logits of different lengths, non-integer
        labels, or an id repeated with different predictions.
    """
    ids, labels, logits, _ = load_counted(path, rtol=rtol, atol=atol)
    return ids, labels, logits


def load_counted(path: Any, *, rtol: float, atol: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    path = _check_path(path)
    ids, labels, logits, n_dropped = dedupe_predictions(*_read(path), rtol=rtol, atol=atol)
    if n_dropped:
        warnings.warn(
            f"{str(path)!r}: dropped {n_dropped} duplicated row(s) with identical predictions "
            f"({len(ids)} distinct ids kept); padded distributed evaluation repeats samples",
            DuplicatePredictionsWarning,
            stacklevel=3,
        )
    return ids, labels, logits, n_dropped


# ---------------------------------------------------------------------------------------------
# one run
# ---------------------------------------------------------------------------------------------


def _ids_fingerprint(ids: np.ndarray) -> str:
    digest = hashlib.sha1()
    for i in np.sort(ids.astype(str)):
        digest.update(i.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def evaluate_run(
    path: str | os.PathLike[str],
    *,
    rejection_rates: Sequence[float] | None = None,
    n_bins: int = 15,
    rtol: float = 1e-5,
    atol: float = 1e-6,
) -> dict[str, Any]:
    """Every metric for one predictions file, plus the data of its reliability diagrams and its
    accuracy-rejection curve, read batch by batch (:func:`rmd_ray.evaluation.summaries.summarise_predictions`):
    memory grows by about 60 bytes a row, never by the N x K logits.

    Parameters
    ----------
    path : predictions Parquet file (see :func:`load_predictions`)
    rejection_rates : sequence of float in [0, 1), optional
        Default :data:`DEFAULT_REJECTION_RATES` (0, 0.05, ..., 0.9), keeping only rates that leave at
        least one sample.
    n_bins : int
        Bins of the two reliability diagrams (the ECE numbers always use 15, as the paper).
    rtol, atol : float
        Duplicate tolerance, see :func:`dedupe_predictions`.

    Returns
    -------
    dict
        ``path`` (str); ``metadata`` (the file's provenance dict); ``n_duplicates_dropped`` (int);
        ``ids_fingerprint`` (hash of the sorted ids, to check two runs saw the same samples);
        ``metrics`` (:func:`rmd_ray.core.metrics.evaluate_predictions`); ``rejection_rates`` and
        ``accuracy_rejection`` (ndarrays, accuracy on the kept samples with the max softmax
        probability as confidence); ``reliability`` (``{"mass": ReliabilityDiagram, "width": ...}``).

    Warns
    -----
    DuplicatePredictionsWarning, rmd_ray.core.metrics.SingleClassWarning
    """
    summaries = summarise_predictions(_check_path(path), rtol=rtol, atol=atol)
    if summaries.n_dropped:
        warnings.warn(
            f"{str(path)!r}: dropped {summaries.n_dropped} duplicated row(s) with identical predictions "
            f"({len(summaries.ids)} distinct ids kept); padded distributed evaluation repeats samples",
            DuplicatePredictionsWarning,
            stacklevel=2,
        )
    cols = summaries.columns
    n = summaries.ids.shape[0]
    if rejection_rates is None:
        rates = DEFAULT_REJECTION_RATES[n - np.rint(DEFAULT_REJECTION_RATES * n) >= 1]
    else:
        rates = np.asarray(rejection_rates, dtype=np.float64)
    confidence, correct = cols["confidence"], cols["correct"]
    return {
        "path": str(path),
        "metadata": read_metadata(path),
        "n_duplicates_dropped": summaries.n_dropped,
        "ids_fingerprint": _ids_fingerprint(summaries.ids),
        "metrics": metrics_from_summaries(cols),
        "rejection_rates": rates,
        "accuracy_rejection": accuracy_rejection_curve(confidence, correct, rejection_rates=rates),
        "reliability": {
            binning: reliability_from_confidence(confidence, correct, n_bins=n_bins, binning=binning)
            for binning in ("mass", "width")
        },
    }


# ---------------------------------------------------------------------------------------------
# several runs
# ---------------------------------------------------------------------------------------------


def _check_names(mapping: Any, what: str) -> None:
    if not isinstance(mapping, Mapping) or not mapping:
        raise ValueError(f"{what} must be a non-empty dict {{run name: ...}}, got {mapping!r}")
    bad = [k for k in mapping if not isinstance(k, str) or not k]
    if bad:
        raise ValueError(f"{what} keys must be non-empty strings (run names), got {bad!r}")


def metrics_table(
    results: Mapping[str, Mapping[str, Any]], *, metrics: Sequence[str] = TABLE_METRICS
) -> pa.Table:
    """One row per run from :func:`evaluate_run` results.

    Columns: ``run``, ``n_samples``, ``n_duplicates_dropped`` and one float column per name in
    ``metrics`` (null where a run lacks it, e.g. detection metrics when every prediction was correct).

    Warns
    -----
    UserWarning
        When the runs were evaluated on different sets of ids: their numbers are then not comparable.
    """
    _check_names(results, "results")
    names = list(results)
    columns: dict[str, list[Any]] = {
        "run": names,
        "n_samples": [int(results[r]["metrics"]["n_samples"]) for r in names],
        "n_duplicates_dropped": [int(results[r].get("n_duplicates_dropped", 0)) for r in names],
    }
    for m in metrics:
        columns[m] = [results[r]["metrics"].get(m) for r in names]
    prints = {results[r].get("ids_fingerprint") for r in names}
    if len(prints) > 1:
        warnings.warn(
            f"runs {names} were evaluated on different sets of samples; compare them on the same "
            "evaluation set",
            UserWarning,
            stacklevel=2,
        )
    schema = pa.schema(
        [("run", pa.string()), ("n_samples", pa.int64()), ("n_duplicates_dropped", pa.int64())]
        + [(m, pa.float64()) for m in metrics]
    )
    return pa.table(columns, schema=schema)


def compare_runs(
    paths: Mapping[str, str | os.PathLike[str]], *, metrics: Sequence[str] = TABLE_METRICS
) -> pa.Table:
    """Evaluate several predictions files and tabulate their metrics (:func:`metrics_table`).

    Parameters
    ----------
    paths : dict {run name: predictions file}
        Row order follows the dict.
    metrics : sequence of str
        Keys of :func:`rmd_ray.core.metrics.evaluate_predictions` to tabulate.

    Returns
    -------
    pyarrow.Table
        ``run``, ``n_samples``, ``n_duplicates_dropped`` and one column per metric (fractions).
    """
    _check_names(paths, "paths")
    return metrics_table({name: evaluate_run(p) for name, p in paths.items()}, metrics=metrics)

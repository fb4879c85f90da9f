"""Input validation shared by the metric modules: one specific ValueError / TypeError per bad input,
raised at the public entry (docs/design.md section 4)."""

from __future__ import annotations

from typing import Any

import numpy as np

from rmd_ray.core.validation import check_labels

ROW_SUM_TOL = 1e-4
#: Probabilities are clipped to this before ``log`` in :func:`negative_log_likelihood`, so one
#: sample contributes at most ``-log(tiny) ~= 708.4`` nats.
TINY = float(np.finfo(np.float64).tiny)
_LOGITS_HINT = "looks like logits: apply softmax (rmd_ray.core.metrics.softmax) first"


class SingleClassWarning(UserWarning):
    """Every prediction is correct (or every one wrong), so a detection metric is undefined."""


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------


def as_real_array(x: Any, name: str, *, allow_int: bool) -> np.ndarray:
    arr = np.asarray(x)
    kinds = "fiu" if allow_int else "f"
    if arr.dtype.kind not in kinds:
        want = "a real-valued (int or float)" if allow_int else "a floating-point"
        raise TypeError(
            f"{name} must be {want} array, got dtype {arr.dtype}; cast it (e.g. {name}.astype(float))"
        )
    return arr.astype(np.float64, copy=False)


def _first_bad_row(mask_ok_rows: np.ndarray) -> int:
    return int(np.flatnonzero(~mask_ok_rows)[0])


def _check_finite_2d(arr: np.ndarray, name: str) -> None:
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (N, K), got shape {arr.shape}; reshape to (n_samples, n_classes)"
        )
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); pass at least one sample")
    if arr.shape[1] < 2:
        raise ValueError(f"{name} has {arr.shape[1]} column(s); pass one column per class (at least 2)")
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        raise ValueError(
            f"{name} row {_first_bad_row(finite)} holds NaN or inf ({int((~finite).sum())} bad rows in all); "
            "drop or repair those samples"
        )


def check_metric_labels(labels: Any, n_samples: int, n_classes: int) -> np.ndarray:
    lab = np.asarray(labels)
    check_labels(lab, n_samples=n_samples, n_classes=n_classes, rows_of="probs/logits")
    return lab.astype(np.int64, copy=False)


def check_probabilities(probs: Any, labels: Any = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate class probabilities (and optionally labels); return them as float64 / int64 arrays.

    Parameters
    ----------
    probs : array-like of shape (N, K), floating
        Each row a probability vector: finite, entries in [0, 1], summing to 1 within ``ROW_SUM_TOL``.
    labels : array-like of shape (N,), integer, optional
        Class indices in ``0..K-1``.

    Returns
    -------
    probs : ndarray of shape (N, K), float64
    labels : ndarray of shape (N,), int64, or None when not given

    Raises
    ------
    TypeError
        ``probs`` not floating, or ``labels`` not integer.
    ValueError
        Wrong shape, empty, fewer than 2 classes, NaN/inf (the message names the first bad row),
        entries outside [0, 1] or rows not summing to 1 (the message says it "looks like logits:
        apply softmax"), labels out of range or of the wrong length.
    """
    p = as_real_array(probs, "probs", allow_int=False)
    _check_finite_2d(p, "probs")
    in_range = ((p >= 0.0) & (p <= 1.0)).all(axis=1)
    if not in_range.all():
        row = _first_bad_row(in_range)
        raise ValueError(f"probs row {row} has entries outside [0, 1] (min {p[row].min():.4g}, max "
                         f"{p[row].max():.4g}); it {_LOGITS_HINT}")
    sums = p.sum(axis=1)
    sums_ok = np.abs(sums - 1.0) <= ROW_SUM_TOL
    if not sums_ok.all():
        row = _first_bad_row(sums_ok)
        raise ValueError(f"probs row {row} sums to {sums[row]:.6g}, not 1 (tolerance {ROW_SUM_TOL}); "
                         f"it {_LOGITS_HINT}")
    lab = None if labels is None else check_metric_labels(labels, p.shape[0], p.shape[1])
    return p, lab


def check_logits(logits: Any, name: str) -> np.ndarray:
    z = as_real_array(logits, name, allow_int=True)
    _check_finite_2d(z, name)
    return z


def check_n_bins(n_bins: Any) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    return int(n_bins)


def check_selective(confidence: Any, correct: Any) -> tuple[np.ndarray, np.ndarray]:
    conf = as_real_array(confidence, "confidence", allow_int=True)
    if conf.ndim != 1:
        raise ValueError(f"confidence must be 1-D (N,), got shape {conf.shape}")
    if conf.size == 0:
        raise ValueError("confidence is empty; pass at least one sample")
    if not np.isfinite(conf).all():
        bad = int(np.flatnonzero(~np.isfinite(conf))[0])
        raise ValueError(f"confidence[{bad}] is NaN or inf; drop or repair that sample")
    return conf, check_binary(correct, "correct", conf.shape[0], "confidence")


def check_binary(values: Any, name: str, n: int, other: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind not in "biu":
        raise TypeError(f"{name} must be a boolean (or 0/1 integer) array, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"{other} has {n} entries but {name} has {arr.shape[0]}; pass one per sample")
    if arr.dtype.kind != "b" and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0/1 (or True/False)")
    return arr.astype(bool)



"""Validation at the public entries of the core. Private helpers downstream assume valid input."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from rmd_ray.core.array_api import array_module, to_numpy


class DegenerateClassWarning(UserWarning):
    """A class has 0 or 1 training samples (see ``check_class_counts``)."""


def check_features(features: Any, *, name: str = "features") -> Any:
    """Check a 2-D finite floating array of shape (N, d); return it unchanged (NumPy or CuPy).

    Raises
    ------
    TypeError
        If it is not an array or its dtype is not float32/float64.
    ValueError
        If it is not 2-D, is empty, or holds NaN/inf (the message names the first bad row).
    """
    xp = array_module(features)
    if not isinstance(features, xp.ndarray):
        raise TypeError(f"{name} must be a numpy (or cupy) array of shape (N, d), got {type(features).__name__}")
    if features.dtype not in (xp.float32, xp.float64):
        raise TypeError(
            f"{name} has dtype {features.dtype}; cast to float32 or float64 first "
            f"(e.g. {name}.astype(np.float32))"
        )
    if features.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, d), got shape {tuple(features.shape)}; reshape to (N, -1)")
    if features.shape[0] == 0 or features.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(features.shape)}); pass at least one sample and one feature")
    finite_rows = to_numpy(xp.isfinite(features).all(axis=1))
    if not finite_rows.all():
        bad = int(np.flatnonzero(~finite_rows)[0])
        raise ValueError(
            f"{name} row {bad} holds NaN or inf ({int((~finite_rows).sum())} bad rows in all); "
            "drop or repair those samples before fitting"
        )
    return features


def check_labels(labels: Any, *, n_samples: int, n_classes: int | None = None, rows_of: str = "features") -> Any:
    """Check a 1-D integer label array of length ``n_samples`` with values in 0..n_classes-1.

    Raises
    ------
    TypeError
        If the dtype is not an integer type (floats are refused even when integral: cast explicitly).
    ValueError
        If the shape, length or range is wrong.
    """
    xp = array_module(labels)
    if not isinstance(labels, xp.ndarray):
        raise TypeError(f"labels must be a numpy (or cupy) integer array, got {type(labels).__name__}")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels have dtype {labels.dtype}; pass integer class indices (e.g. labels.astype(np.int64))")
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {tuple(labels.shape)}")
    if labels.shape[0] != n_samples:
        raise ValueError(f"{rows_of} have {n_samples} rows but labels have {labels.shape[0]}; pass one label per row")
    if n_classes is not None and labels.size:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= n_classes:
            bad = lo if lo < 0 else hi
            raise ValueError(
                f"{label_reason(bad, n_classes=n_classes)}; labels must index the {n_classes} classes "
                "(pass n_classes covering every label, or remap labels to 0..K-1)"
            )
    return labels


def label_reason(label: int | None, *, n_classes: int) -> str:
    """``""`` for a label in ``0 .. n_classes - 1``, else why not (``"label missing"``, ``"label 12 outside
    0..9"``): the one wording of a bad label, in errors tables and messages alike."""
    if label is None:
        return "label missing"
    return "" if 0 <= label < n_classes else f"label {label} outside 0..{n_classes - 1}"


def check_n_classes(n_classes: Any) -> int:
    """Check a positive integer number of classes."""
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 1:
        raise ValueError(f"n_classes must be a positive integer, got {n_classes!r}")
    return int(n_classes)


def check_positive(value: Any, *, name: str) -> float:
    """Check a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return float(value)


def check_class_counts(counts: np.ndarray) -> None:
    """Warn about classes with 0 or 1 samples.

    Documented behaviour: a class with 0 samples has no mean of its own; its mean falls back to the
    class-agnostic mean mu_0, so a sample scored with that label gets MD = MD to mu_0 under the shared
    covariance. A class with 1 sample adds nothing to the shared scatter and that sample's MD is 0.
    """
    counts = np.asarray(counts)
    empty = np.flatnonzero(counts == 0)
    single = np.flatnonzero(counts == 1)
    if empty.size:
        warnings.warn(
            f"{empty.size} class(es) have no samples (first: {empty[:5].tolist()}); their mean falls back to the "
            "class-agnostic mean. Check n_classes and the label mapping.",
            DegenerateClassWarning,
            stacklevel=3,
        )
    if single.size:
        warnings.warn(
            f"{single.size} class(es) have a single sample (first: {single[:5].tolist()}); that sample is its class "
            "mean (MD = 0) and adds nothing to the shared covariance.",
            DegenerateClassWarning,
            stacklevel=3,
        )


def require_full_rank(n_samples: int, n_features: int, n_nonempty: int) -> None:
    """Raise when, without shrinkage, a covariance is singular by construction (whatever the data).

    The pooled within-class scatter has rank at most N - (non-empty classes), the class-agnostic one N - 1:
    n > d is not enough (N = 12, d = 10, K = 4 gives every sample MD = 8).
    """
    within_rank, global_rank = rank_bounds(n_samples, n_nonempty)
    deficient = [
        f"the {name} covariance has rank at most {formula} = {rank} < d"
        for name, formula, rank in (
            ("shared within-class", "N - classes", within_rank),
            ("class-agnostic", "N - 1", global_rank),
        )
        if rank < n_features
    ]
    if deficient:
        raise ValueError(
            f"{n_samples} samples for {n_features} feature dimensions ({n_nonempty} non-empty classes): "
            f"{' and '.join(deficient)} (singular). Pass CovarianceConfig(shrinkage='ledoit_wolf') "
            f"(or 'oas'/'ridge'), or at least d + classes = {n_features + n_nonempty} samples"
        )


def rank_bounds(n_samples: int, n_nonempty: int) -> tuple[int, int]:
    """Largest possible ranks of the within-class scatter (N - non-empty classes) and of the
    class-agnostic one (N - 1): each centring on a fitted mean removes one degree of freedom."""
    return n_samples - n_nonempty, n_samples - 1

"""Seeded, stratified train / validation splits of a labelled sample (NumPy only).

Model selection (Tune, every benchmark) must never look at the test split: a validation split is
carved from the training data instead, the same fraction of every class so that a rare class is
neither missing from validation nor drained from training.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["stratified_folds", "stratified_split", "validation_counts"]


def _check_fraction(fraction: Any) -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.integer, np.floating)):
        raise TypeError(f"fraction must be a float in (0, 1), got {type(fraction).__name__}")
    value = float(fraction)
    if not 0.0 < value < 1.0:  # NaN fails this too
        raise ValueError(
            f"fraction must be in (0, 1) (the share of each class held out for validation), got {fraction!r}; "
            "e.g. 0.1"
        )
    return value


def validation_counts(class_sizes: Any, *, fraction: float) -> np.ndarray:
    """How many samples of each class go to validation.

    Parameters
    ----------
    class_sizes : array-like of int, shape (K,)
        ``n_c``, the samples of each class (zeros allowed).
    fraction : float in (0, 1)

    Returns
    -------
    numpy.ndarray of int64, shape (K,)
        ``clip(floor(fraction * n_c + 0.5), 1, n_c - 1)`` for classes with ``n_c >= 2`` (round half
        up, at least one sample so that every such class is validated, at most ``n_c - 1`` so that
        it keeps one training sample); ``0`` for classes with ``n_c <= 1``: a singleton cannot be
        both trained on and validated, and training needs it more.
    """
    fraction = _check_fraction(fraction)
    sizes = np.asarray(class_sizes, dtype=np.int64)
    # half up, not Python's round-half-even: 0.5 * 5 -> 3 whatever the parity (stated, and platform-free)
    counts = np.floor(fraction * sizes + 0.5).astype(np.int64)
    counts = np.clip(counts, 1, np.maximum(sizes - 1, 1))
    return np.where(sizes >= 2, counts, 0)


def _check_labels(labels: Any, seed: Any) -> np.ndarray:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D (N,), got shape {labels.shape}; flatten them first")
    if labels.size and (labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer)):
        raise TypeError(f"labels must be integers, got dtype {labels.dtype}; cast with labels.astype(np.int64)")
    labels = labels.astype(np.int64, copy=False)
    if labels.size and labels.min() < 0:
        bad = int(np.flatnonzero(labels < 0)[0])
        raise ValueError(
            f"labels must be >= 0; position {bad} is {int(labels[bad])} (a missing label?): drop or fix those rows"
        )
    return labels


def stratified_folds(labels: Any, *, folds: int, seed: int) -> np.ndarray:
    """Assign every sample to one of ``folds`` folds, each class spread evenly over them.

    Parameters
    ----------
    labels : array-like of int, shape (N,)
    folds : int, >= 2
    seed : int
        Seeds ``numpy.random.default_rng(seed)``; classes are drawn in increasing label order.

    Returns
    -------
    numpy.ndarray of int64, shape (N,)
        The fold of each sample, in ``0 .. folds - 1``. Within a class of ``n_c`` samples, shuffled,
        the j-th goes to fold ``(j + o_c) mod folds`` with ``o_c`` the samples of the classes before
        it: every fold gets ``floor(n_c / folds)`` or one more of each class, and the folds' sizes
        differ by at most one.

    Raises
    ------
    TypeError, ValueError
        As :func:`stratified_split` for the labels and seed; ``folds`` < 2 or above N.
    """
    labels = _check_labels(labels, seed)
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise ValueError(f"folds must be an int >= 2 (each sample is held out by one fold), got {folds!r}")
    if folds > labels.size:
        raise ValueError(f"folds ({folds}) exceeds the samples ({labels.size}): some folds would hold out nothing")
    rng = np.random.default_rng(seed)
    order = np.argsort(labels, kind="stable")
    _, starts, sizes = np.unique(labels[order], return_index=True, return_counts=True)
    assignment = np.empty(labels.size, dtype=np.int64)
    offset = 0
    for start, size in zip(starts, sizes):
        members = order[start + rng.permutation(size)]
        assignment[members] = (np.arange(size) + offset) % folds
        offset += int(size)
    return assignment


def stratified_split(labels: Any, *, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split sample positions into training and validation, the same fraction of every class.

    Parameters
    ----------
    labels : array-like of int, shape (N,)
        Class index of each sample (any non-negative integers; only equality matters).
    fraction : float in (0, 1)
        Share of each class held out; class ``c`` with ``n_c`` samples gives
        :func:`validation_counts` ``(n_c)`` of them (round half up, at least 1 and at most
        ``n_c - 1`` when ``n_c >= 2``, none for a singleton class).
    seed : int
        Seeds ``numpy.random.default_rng(seed)``; the classes are drawn in increasing label order,
        so the same labels and seed give the same split on every machine.

    Returns
    -------
    train_idx, val_idx : numpy.ndarray of int64, shapes (N - M,) and (M,)
        Sorted, disjoint positions into ``labels`` that together cover ``0 .. N - 1``.

    Raises
    ------
    TypeError
        For labels that are not integers (floats are refused even when integral: cast explicitly), a
        fraction that is not a number or a seed that is not an int.
    ValueError
        For labels that are not 1-D or are negative, or a fraction outside (0, 1).
    """
    fraction = _check_fraction(fraction)
    labels = _check_labels(labels, seed)
    rng = np.random.default_rng(seed)
    # stable sort: within a class, positions stay in input order, so the draw depends only on the data
    order = np.argsort(labels, kind="stable")
    _, starts, sizes = np.unique(labels[order], return_index=True, return_counts=True)
    counts = validation_counts(sizes, fraction=fraction)
    chosen = [
        order[start + rng.choice(size, size=count, replace=False)]
        for start, size, count in zip(starts, sizes, counts)
        if count
    ]
    is_val = np.zeros(labels.size, dtype=bool)
    if chosen:
        is_val[np.concatenate(chosen)] = True
    return np.flatnonzero(~is_val).astype(np.int64), np.flatnonzero(is_val).astype(np.int64)

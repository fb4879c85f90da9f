r"""Difficulty sources: which per-sample score the weights s are computed from (docs/design.md 1.10).

The proposed loss weights each sample's entropy bonus by s_i = w(d_i), with w the weight map of
:mod:`rmd_ray.core.weights` and d a per-sample difficulty, larger = harder. The paper's choice is the
RMD; its ablations (Tables 8 and 10) compare other scores, and two controls separate *which sample*
gets a large weight from *how large the weights are*:

================  ==========================================================================
source            d_i (column of the scores table)
================  ==========================================================================
``rmd``           relative Mahalanobis distance MD_y(x) - MD_0(x) (``rmd``; the default)
``md``            class-conditional Mahalanobis distance MD_y(x) (``md``)
``kmeans``        Euclidean distance to the class mean (``kmeans``)
``loss``          a task-trained model's loss on the sample, out of fold (``loss``)
``shuffled_rmd``  the ``rmd`` weights randomly permuted across samples (seeded): the same
                  distribution of weights with no per-sample information
``uniform``       every sample the mean ``rmd`` weight: an entropy regulariser of matched mean
                  strength
================  ==========================================================================

If ``proposed`` beats ``shuffled_rmd``, per-sample difficulty matters beyond the weights'
distribution; if ``shuffled_rmd`` ties ``uniform``, the spread of the weights does not matter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from rmd_ray.core.array_api import array_module
from rmd_ray.core.registry import Registry
from rmd_ray.core.splits import stratified_folds
from rmd_ray.core.weights import WeightConfig, difficulty_weights

__all__ = [
    "DIFFICULTY_COLUMNS", "DIFFICULTY_SOURCES", "DifficultySource", "out_of_fold_losses", "source_column",
    "source_weights", "weights_from_columns",
]


@dataclass(frozen=True)
class DifficultySource:
    """Where one difficulty source reads its scores and what it does to the weights.

    ``column``: the scores-table column holding d. ``spread``: ``"per_sample"`` (each sample its own
    weight), ``"permuted"`` (the weights shuffled across samples) or ``"constant"`` (every sample the
    mean weight).
    """

    column: str
    spread: str = "per_sample"


DIFFICULTY_SOURCES: Registry[DifficultySource] = Registry("difficulty source")
DIFFICULTY_SOURCES.add("rmd", DifficultySource("rmd"))
DIFFICULTY_SOURCES.add("md", DifficultySource("md"))
DIFFICULTY_SOURCES.add("kmeans", DifficultySource("kmeans"))
DIFFICULTY_SOURCES.add("loss", DifficultySource("loss"))
DIFFICULTY_SOURCES.add("shuffled_rmd", DifficultySource("rmd", spread="permuted"))
DIFFICULTY_SOURCES.add("uniform", DifficultySource("rmd", spread="constant"))

#: Every column some source reads, each once.
DIFFICULTY_COLUMNS: tuple[str, ...] = tuple(
    dict.fromkeys(DIFFICULTY_SOURCES.get(name).column for name in DIFFICULTY_SOURCES.names())
)


def source_column(source: str) -> str:
    """The scores-table column ``source`` reads (``loss`` for ``loss``, ``rmd`` for the controls)."""
    return DIFFICULTY_SOURCES.get(source).column


def source_weights(
    difficulty: Any, *, source: str = "rmd", config: WeightConfig = WeightConfig(), seed: int = 0
) -> Any:
    """Per-sample weights from one difficulty source.

    Parameters
    ----------
    difficulty : ndarray, shape (N,)
        The column :func:`source_column` names, one value per training sample, larger = harder.
    source : str
        A name in :data:`DIFFICULTY_SOURCES`.
    config : WeightConfig
        T, c and the normalisation of the weight map s = exp(r/T) / (max exp(r/T) + c).
    seed : int
        Seeds the permutation of ``shuffled_rmd`` (ignored by the other sources).

    Returns
    -------
    ndarray, shape (N,), float64
        ``per_sample``: s_i = w(d_i). ``permuted``: s_pi(i) for a seeded permutation pi, so the
        multiset of weights is exactly that of ``rmd``. ``constant``: mean_j w(d_j) for every i.

    Raises
    ------
    ValueError
        Unknown source (the message lists them), or a difficulty that is not a finite 1-D array.
    """
    spread = DIFFICULTY_SOURCES.get(source).spread
    weights = difficulty_weights(difficulty, config=config)
    xp = array_module(weights)
    if spread == "permuted":
        order = np.random.default_rng(seed).permutation(weights.shape[0])
        return weights[xp.asarray(order)]
    if spread == "constant":
        return xp.full(weights.shape, float(weights.mean()), dtype=xp.float64)
    return weights


def weights_from_columns(columns: Mapping[str, Any], *, source: str = "rmd", config: WeightConfig = WeightConfig(),
                         seed: int = 0) -> Any:
    """:func:`source_weights` of the column ``source`` reads from ``columns`` (name -> (N,) array).

    Raises
    ------
    ValueError
        The column is missing: the message names it and how to get it.
    """
    column = source_column(source)
    if column not in columns:
        how = ("add the out-of-fold training loss of a task-trained model as a 'loss' column "
               "(rmd_ray.nn.out_of_fold_losses)" if column == "loss" else "pass the scores.parquet of rmd-ray score")
        raise ValueError(f"difficulty source {source!r} reads the column {column!r}, which the scores lack; {how}")
    return source_weights(columns[column], source=source, config=config, seed=seed)


FitPredict = Callable[[np.ndarray, np.ndarray], Any]


def out_of_fold_losses(labels: Any, *, fit_predict: FitPredict, folds: int = 2, seed: int = 0) -> np.ndarray:
    """Each sample's cross-entropy under a model that never trained on it (the ``loss`` source).

    The training loss of a model on its own training samples mostly measures memorisation (near 0
    for every sample once the model fits the set); out of fold, it measures how hard the sample is
    for a model of the task.

    Parameters
    ----------
    labels : array-like of int, shape (N,)
    fit_predict : callable ``(train_idx, held_idx) -> logits``
        Trains a model on the samples ``train_idx`` (int64 positions) and returns its logits on
        ``held_idx``, shape (len(held_idx), K), in that order.
    folds : int, >= 2
        Stratified folds (:func:`rmd_ray.core.splits.stratified_folds`); each is held out once.
    seed : int
        Seeds the fold assignment.

    Returns
    -------
    numpy.ndarray, shape (N,), float64
        loss_i = logsumexp(z_i) - z_i[y_i] >= 0, z_i the held-out logits of sample i.

    Raises
    ------
    ValueError
        ``fit_predict`` returned logits of the wrong shape, non-finite logits (naming a sample), or
        fewer classes than a label needs.
    """
    labels = np.asarray(labels)
    assignment = stratified_folds(labels, folds=folds, seed=seed)
    losses = np.full(labels.shape[0], np.nan)
    for fold in range(folds):
        held = np.flatnonzero(assignment == fold)
        logits = np.asarray(fit_predict(np.flatnonzero(assignment != fold), held), dtype=np.float64)
        if logits.ndim != 2 or logits.shape[0] != held.size:
            raise ValueError(
                f"fit_predict returned logits of shape {logits.shape} for {held.size} held-out samples; "
                "it must return (len(held_idx), n_classes)"
            )
        if logits.shape[1] <= int(labels[held].max()):
            top_label = int(labels[held].max())
            raise ValueError(f"fit_predict returned {logits.shape[1]} classes; label {top_label} needs more")
        finite = np.isfinite(logits).all(axis=1)
        if not finite.all():
            raise ValueError(f"fit_predict returned non-finite logits for sample {int(held[~finite][0])} (fold {fold})")
        top = logits.max(axis=1)
        log_partition = top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
        losses[held] = log_partition - logits[np.arange(held.size), labels[held]]
    return losses

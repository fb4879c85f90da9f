r"""Rank training samples by how likely their given label is wrong (docs/design.md 1.11).

Three rankings, each LARGER = MORE SUSPECT, from the Gaussians of docs/design.md 1.2:

- ``rmd``: RMD(x, y) = MD(x, y) - MD_0(x) (docs/design.md 1.3). Large when the sample is far from its
  given class but not from the data as a whole.
- ``margin``: the Mahalanobis margin

      margin(x, y) = MD(x, y) - min_{k != y} MD(x, k)

  Positive exactly when another class mean is nearer than the given one (then that class is the
  nearest); it measures by how much the given label loses to the best alternative. It ignores MD_0,
  so it does not see how atypical the sample is overall, only which class explains it best.
- ``combined``: the mean of the two normalised ranks, (rank(rmd) + rank(margin)) / (2 N). A rank
  combination because the two scores live on different scales (RMD spans hundreds of units, the margin
  tens) and have different tails, so an average of the raw values would be the larger one's ranking.
  It keeps what each sees: RMD catches samples that sit between classes or off the class manifold,
  the margin catches samples lying inside another class (asymmetric, class-to-class flips).

The default (``DEFAULT_LABEL_SCORE``) is the ranking that wins across the label-noise benchmark
(README, Benchmarks; ``benchmarks/label_noise.py``): ``combined``. The rule: among the rankings that
beat cleanlab (5-fold logistic regression, sklearn's default and C = 0.01 on standardised features) in
all four settings, the best mean AUROC. RMD leads under symmetric noise (0.940 vs margin 0.933 at 10%),
the margin under class-to-class flips (0.840 vs 0.785 at 20%, 0.786 vs 0.702 at 40%), where a flipped
sample lies inside its true class and RMD, which also rewards merely atypical samples, ranks it with the
hard ones. The combination stays within 0.002 of RMD under symmetric noise and recovers 40-60% of the
margin's lead under flips, so it is the safe choice when the noise type is unknown; the margin alone
loses one setting (symmetric 10%) to cleanlab at C = 0.01 by 0.001.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rmd_ray.core._xp import array_module
from rmd_ray.core.registry import Registry

__all__ = ["DEFAULT_LABEL_SCORE", "LABEL_SCORES", "label_issue_scores", "mahalanobis_margin", "rank_average"]


def mahalanobis_margin(distances: Any, labels: Any) -> Any:
    """MD(x, y) - min over k != y of MD(x, k), row-wise.

    Parameters
    ----------
    distances : ndarray, shape (N, K), K >= 2
        MD(x_i, k) to every class mean (:func:`rmd_ray.core.scores.class_distances`).
    labels : ndarray of int, shape (N,)
        The given labels y_i in 0..K-1.

    Returns
    -------
    ndarray of float64, shape (N,)
        > 0 iff some other class is strictly nearer than the given one.
    """
    xp = array_module(distances)
    d = distances.astype(xp.float64)
    n, k = d.shape
    if k < 2:
        raise ValueError(f"the margin needs at least 2 classes, got distances of shape {d.shape}")
    labels = xp.asarray(labels)
    rows = xp.arange(n)
    own = d[rows, labels]
    # The smallest and second-smallest distance per row: the best alternative is the second one
    # exactly when the given class is the nearest. O(N K), no (N, K) copy with the own class masked.
    order = xp.argpartition(d, 1, axis=1)[:, :2]
    first, second = d[rows, order[:, 0]], d[rows, order[:, 1]]
    best_other = xp.where(order[:, 0] == labels, second, first)
    return own - best_other


def rank_average(*scores: np.ndarray) -> np.ndarray:
    """Mean of the normalised ranks of several scores: sum_j rank(s_j) / (J N), in (0, 1].

    Ties get their average rank (``scipy.stats.rankdata``), so the result does not depend on the input
    order, and any strictly increasing transform of a score leaves it unchanged.
    """
    # scipy.stats costs ~1 s to import: imported here, not at module level, because the core (and so every
    # decode task's fresh process) imports this module through the estimator
    from scipy.stats import rankdata

    if not scores:
        raise ValueError("rank_average needs at least one score array")
    n = len(scores[0])
    # Sum the ranks (integers or halves: exact in float64) and divide once, so equal rank sums give
    # bit-equal scores and ties are broken by id downstream, not by rounding.
    total = np.sum([rankdata(np.asarray(s, dtype=np.float64)) for s in scores], axis=0)
    return total / (len(scores) * n)


LABEL_SCORES: Registry[str] = Registry("label-issue score")
LABEL_SCORES.add("rmd", "RMD(x, y) = MD(x, y) - MD_0(x)")
LABEL_SCORES.add("margin", "MD(x, y) - min_{k != y} MD(x, k)")
LABEL_SCORES.add("combined", "(rank(rmd) + rank(margin)) / 2N")

#: Chosen by benchmarks/label_noise.py (README, Benchmarks): see the module docstring for the rule.
DEFAULT_LABEL_SCORE = "combined"


def label_issue_scores(rmd: Any, margin: Any, *, score: str = DEFAULT_LABEL_SCORE) -> np.ndarray:
    """The suspicion score of each sample under one of :data:`LABEL_SCORES`, larger = more suspect.

    Parameters
    ----------
    rmd : array-like, shape (N,)
    margin : array-like, shape (N,)
        :func:`mahalanobis_margin` of the same samples.
    score : {"rmd", "margin", "combined"}

    Returns
    -------
    ndarray of float64, shape (N,)

    Raises
    ------
    ValueError
        Unknown ``score`` (lists the valid ones), arrays of different shapes, not 1-D, or not finite.
    """
    LABEL_SCORES.get(score)
    r = np.asarray(rmd, dtype=np.float64)
    m = np.asarray(margin, dtype=np.float64)
    if r.ndim != 1 or r.shape != m.shape:
        raise ValueError(f"rmd and margin must be 1-D of one length, got shapes {r.shape} and {m.shape}")
    if not (np.isfinite(r).all() and np.isfinite(m).all()):
        raise ValueError("rmd and margin must be finite; rescore with shrinkage='ridge' if a covariance was singular")
    if score == "rmd":
        return r
    if score == "margin":
        return m
    return rank_average(r, m)

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
(``benchmarks/label_noise.py``; numbers in docs/benchmarks.md section 5): ``combined``. The rule: among
the rankings that beat cleanlab (5-fold logistic regression, sklearn's default and C = 0.01 on
standardised features) in all four settings, the best mean AUROC. RMD leads under symmetric noise, the
margin under class-to-class flips, where a flipped sample lies inside its true class and RMD, which also
rewards merely atypical samples, ranks it with the hard ones. The combination stays close to RMD under
symmetric noise and recovers much of the margin's lead under flips, so it is the safe choice when the
noise type is unknown; the margin alone loses one setting (symmetric noise) to cleanlab at C = 0.01.

:func:`rank_label_issues` ranks features held in memory in one call. Under the CLI's shrinkage (``ridge``)
it never forms the float64 scatter: the one solve the rankings need, Sigma^-1 (m_k - mu_0), comes from a
float32 factor refined to float64 accuracy against the exact rows (:mod:`rmd_ray.core.refinement`,
docs/design.md 1.14), and RMD and the margin follow from the discriminant shortcut (docs/design.md 1.13).
Mergeable statistics (``rmd-ray score`` over a source) keep the float64 scatter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rmd_ray.core.array_api import array_module, module_for_device, to_numpy
from rmd_ray.core.covariance import CovarianceConfig
from rmd_ray.core.estimator import DifficultyScorer
from rmd_ray.core.refinement import refined_scatter_solve
from rmd_ray.core.registry import Registry
from rmd_ray.core.scores import discriminant_factor_from_solution, discriminant_parts, mahalanobis_margin
from rmd_ray.core.validation import check_class_counts, check_features, check_labels, check_n_classes

__all__ = [
    "DEFAULT_LABEL_SCORE", "LABEL_SCORES", "LabelIssueRanking", "label_issue_scores", "mahalanobis_margin",
    "rank_average", "rank_average_within", "rank_label_issues",
]


def rank_average(*scores: np.ndarray) -> np.ndarray:
    """Mean of the normalised ranks of several scores: sum_j rank(s_j) / (J N), in (0, 1].

    Ties get their average rank (``scipy.stats.rankdata``), so the result does not depend on the input
    order, and any strictly increasing transform of a score leaves it unchanged.
    """
    # scipy.stats loads much of SciPy when imported (docs/benchmarks.md, Notes moved from code): imported
    # here, not at module level, because the core (and so every decode task's fresh process) imports this
    # module through the estimator
    from scipy.stats import rankdata

    if not scores:
        raise ValueError("rank_average needs at least one score array")
    n = len(scores[0])
    # Sum the ranks (integers or halves: exact in float64) and divide once, so equal rank sums give
    # bit-equal scores and ties are broken by id downstream, not by rounding.
    total = np.sum([rankdata(np.asarray(s, dtype=np.float64)) for s in scores], axis=0)
    return total / (len(scores) * n)


def rank_average_within(references: Sequence[np.ndarray], values: Sequence[Any]) -> np.ndarray:
    """:func:`rank_average` of some rows, ranked against all rows given as sorted references.

    ``references[j]`` is score j of all N rows, sorted ascending (float64); ``values[j]`` is score j of
    the rows to rank, which must be among them. The average rank of a value v is (left + right + 1) / 2,
    with left and right the counts of references < v and <= v: what ``scipy.stats.rankdata`` gives ties.
    So ranking a table part by part against its sorted columns (16 bytes a row for two scores, no
    per-row index) equals ``rank_average`` over the whole table bit for bit.
    """
    if not references or len(references) != len(values):
        raise ValueError("rank_average_within needs one sorted reference per score array, and at least one")
    n = len(references[0])
    total = None
    for reference, value in zip(references, values):
        v = np.asarray(value, dtype=np.float64)
        if not np.isfinite(v).all():
            raise ValueError(
                "rmd and margin must be finite; rescore with shrinkage='ridge' if a covariance was singular"
            )
        ranks = (np.searchsorted(reference, v, side="left") + np.searchsorted(reference, v, side="right") + 1) / 2
        total = ranks if total is None else total + ranks
    return total / (len(references) * n)


LABEL_SCORES: Registry[str] = Registry("label-issue score")
LABEL_SCORES.add("rmd", "RMD(x, y) = MD(x, y) - MD_0(x)")
LABEL_SCORES.add("margin", "MD(x, y) - min_{k != y} MD(x, k)")
LABEL_SCORES.add("combined", "(rank(rmd) + rank(margin)) / 2N")

#: Chosen by benchmarks/label_noise.py (docs/benchmarks.md section 5): see the module docstring for the rule.
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


@dataclass(frozen=True)
class LabelIssueRanking:
    """What :func:`rank_label_issues` returns, every array of shape (N,) in the input's row order, NumPy.

    Attributes
    ----------
    score : ndarray of float64
        The ranking ``score_name``, larger = more suspect.
    rmd, margin : ndarray of float64
        RMD(x, y) and the Mahalanobis margin (module docstring).
    nearest_class : ndarray of int64
        The class whose mean is nearest under the shared covariance.
    score_name : str
    solver : {"refined", "float64"}
        ``refined``: float32 factor + float64 refinement (:mod:`rmd_ray.core.refinement`); ``float64``: the
        float64 statistics of :class:`rmd_ray.core.DifficultyScorer`.
    solver_note : str
        Why ``float64`` was used (empty for ``refined``).
    """

    score: np.ndarray
    rmd: np.ndarray
    margin: np.ndarray
    nearest_class: np.ndarray
    score_name: str
    solver: str
    solver_note: str


def rank_label_issues(
    features: Any,
    labels: Any,
    *,
    n_classes: int,
    covariance: CovarianceConfig = CovarianceConfig(shrinkage="ridge"),
    score: str = DEFAULT_LABEL_SCORE,
    device: str = "cpu",
) -> LabelIssueRanking:
    r"""Rank samples held in memory by how likely their given label is wrong.

    Fits the Gaussians of docs/design.md 1.2 on ``(features, labels)`` and scores the same samples. The
    result equals ``DifficultyScorer(...).fit(features, labels).label_scores(features, labels)`` to float64
    rounding (tests/core/test_refinement.py). With ``shrinkage="ridge"`` (whose eigenvalue floor proves the
    shared covariance well conditioned, so the scorer would use its Cholesky factor too) and K <= d / 2,
    the one solve needed, P = Sigma^-1 (m - mu_0)^T (d, K), is refined from a float32 factor: about half the
    flops of the float64 scatter. Otherwise, or when refinement does not converge, the scorer's float64
    statistics are used and ``solver_note`` says why.

    Parameters
    ----------
    features : ndarray, shape (N, d), float32 or float64 (NumPy, or CuPy with ``device="cuda"``)
    labels : ndarray of int, shape (N,)
        The given labels in 0..K-1.
    n_classes : int
        K.
    covariance : CovarianceConfig
        Default ``ridge`` (1e-4), the CLI's default.
    score : {"rmd", "margin", "combined"}
        The ranking in ``LabelIssueRanking.score`` (:data:`LABEL_SCORES`).
    device : {"cpu", "cuda", "auto"}

    Returns
    -------
    LabelIssueRanking

    Raises
    ------
    ValueError
        Unknown ``score``, invalid features or labels, or, without shrinkage, fewer samples than d + classes.
    """
    LABEL_SCORES.get(score)
    n_classes = check_n_classes(n_classes)
    if not isinstance(covariance, CovarianceConfig):
        raise TypeError("covariance must be a CovarianceConfig, e.g. CovarianceConfig(shrinkage='ridge')")
    xp = module_for_device(device)
    features = xp.asarray(check_features(features))
    labels = xp.asarray(check_labels(labels, n_samples=features.shape[0], n_classes=n_classes))
    note = _refinement_unavailable(covariance, n_classes, features.shape[1])
    parts = None
    if not note:
        parts = _refined_label_scores(features, labels, n_classes, covariance)
        if isinstance(parts, str):
            note, parts = parts, None
    if parts is None:
        scorer = DifficultyScorer(n_classes=n_classes, covariance=covariance, device=device).fit(features, labels)
        parts = scorer.label_scores(features, labels)
    rmd, margin, nearest = parts
    return LabelIssueRanking(
        score=label_issue_scores(rmd, margin, score=score), rmd=rmd, margin=margin, nearest_class=nearest,
        score_name=score, solver="float64" if note else "refined", solver_note=note,
    )


def _refinement_unavailable(covariance: CovarianceConfig, n_classes: int, n_features: int) -> str:
    """Why the refined solve cannot stand in for the scorer's float64 path ("" when it can)."""
    if covariance.shrinkage != "ridge":
        return (
            f"shrinkage {covariance.shrinkage!r}: only the ridge's eigenvalue floor proves, without eigenvalues, "
            "that the scorer would factorise the covariance (not take its pseudo-inverse)"
        )
    eps = covariance.ridge_eps
    if not eps > covariance.rcond * n_features * (1.0 + eps):  # the floor test of covariance.whitening_matrix
        return f"ridge_eps {eps:g} does not bound the condition number below 1 / rcond at d = {n_features}"
    if n_classes > n_features // 2:
        return f"{n_classes} classes > d / 2 = {n_features // 2}: the discriminant shortcut does not apply"
    return ""


# Rows per block when centring on NumPy: 64 x 1,280 float64 is 640 KiB, small enough for a server core's
# L2 cache, so the cast, the centring, the float32 copy and the sum of squares are made from cache.
_BLOCK_ROWS = 64


def _class_anchors(features: Any, labels: Any, counts: Any) -> Any:
    """Each class's first row (in input order) as float64, shape (K, d); zero rows for empty classes."""
    xp = array_module(features)
    order = xp.argsort(labels, kind="stable") if xp is np else xp.argsort(labels)
    present = counts > 0
    first = (xp.cumsum(counts) - counts)[present]
    anchors = xp.zeros((counts.shape[0], features.shape[1]), dtype=xp.float64)
    anchors[present] = features[order[first]]
    return anchors


def _blocks(n: int, xp: Any) -> list[slice]:
    return [slice(0, n)] if xp is not np else [slice(s, s + _BLOCK_ROWS) for s in range(0, n, _BLOCK_ROWS)]


def _shift(features: Any, labels: Any, anchors: Any, rows: Any) -> None:
    """rows = features - anchors[labels] in float64: exact for float32 features (the cast happens here)."""
    xp = array_module(features)
    for block in _blocks(features.shape[0], xp):
        rows[block] = features[block]
        rows[block] -= anchors[labels[block]]


def _centre(rows: Any, labels: Any, offsets: Any, rows32: Any) -> float:
    """rows -= offsets[labels] in place and rows32 = float32(rows), in one pass; returns sum ||rows_i||^2."""
    xp = array_module(rows)
    total = 0.0
    for block in _blocks(rows.shape[0], xp):
        rows[block] -= offsets[labels[block]]
        rows32[block] = rows[block]
        total += float(xp.vdot(rows[block], rows[block]))
    return total


def _class_sums(rows: Any, labels: Any, n_classes: int) -> Any:
    """sum_{i: y_i = k} rows_i for each k, shape (K, d), through a sparse (K, N) indicator."""
    xp = array_module(rows)
    if xp is np:
        from scipy import sparse
    else:  # pragma: no cover - GPU only
        from cupyx.scipy import sparse
    n = rows.shape[0]
    indicator = sparse.coo_matrix((xp.ones(n), (labels, xp.arange(n))), shape=(n_classes, n)).tocsr()
    return xp.asarray(indicator @ rows)


def _refined_label_scores(features: Any, labels: Any, n_classes: int, covariance: CovarianceConfig) -> Any:
    """(rmd, margin, nearest) through the refined solve, or the reason it did not converge (a str)."""
    xp = array_module(features)
    n, d = features.shape
    counts = xp.bincount(labels, minlength=n_classes)
    check_class_counts(to_numpy(counts))
    # The means as in stats.batch_stats: a member a_k of each class plus the mean offset o_k from it, summed
    # over residuals of about one within-class spread, so no digits are lost far from the origin.
    anchors = _class_anchors(features, labels, counts)
    rows, rows32 = xp.empty((n, d), dtype=xp.float64), xp.empty((n, d), dtype=xp.float32)
    _shift(features, labels, anchors, rows)
    offsets = _class_sums(rows, labels, n_classes) / xp.maximum(counts, 1)[:, None]
    global_mean = (counts.astype(xp.float64) @ (anchors + offsets)) / n
    # an empty class's mean is mu_0, as in DifficultyScorer
    means = xp.where((counts > 0)[:, None], anchors + offsets, global_mean[None, :])
    trace = _centre(rows, labels, offsets, rows32)  # trace(W): rows are now f - m_y
    centred_means = means - global_mean
    solved = refined_scatter_solve(
        rows, xp.ascontiguousarray(centred_means.T), ridge=covariance.ridge_eps * trace / d, rows32=rows32
    )
    del rows, rows32
    if not solved.converged:
        return f"refined solve: {solved.reason}"
    # Sigma = (W + ridge I) / N, so Sigma^-1 (m - mu_0)^T = N Y
    precision_means = n * solved.solution
    factor = discriminant_factor_from_solution(precision_means, centred_means, counts)
    # G = (f - mu_0)^T P = (f - m_y)^T P + (m_y - mu_0)^T P, the first term N R Y from the solve
    coordinates = n * solved.row_products + (centred_means @ precision_means)[labels]
    relative, gain = discriminant_parts(coordinates, factor)
    rmd = relative[xp.arange(n), labels] + gain
    nearest = to_numpy(relative.argmin(axis=1)).astype(np.int64)
    return to_numpy(rmd), to_numpy(mahalanobis_margin(relative, labels)), nearest

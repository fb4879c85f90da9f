r"""The difficulty proxy test (paper Fig. 2): does RMD rank validation samples the way a trained
classifier finds them hard?

Given the RMD of every validation sample (from a :class:`rmd_ray.core.DifficultyScorer` fitted on the
*training* features, scored with each validation sample's own label) and a trained classifier's logits
for the same samples, joined by id:

1. sort the samples from hardest (largest RMD) to easiest;
2. split that order into ``n_groups`` consecutive groups with ``np.array_split`` (the first
   ``N mod n_groups`` groups hold one sample more);
3. report the classifier's error rate in each group.

A good difficulty measure gives error rates that fall from the first group to the last. Also reported:
the Spearman rank correlation between RMD and the per-sample cross-entropy
:math:`\ell_i = -\log \mathrm{softmax}(z_i)_{y_i}` (``scipy.stats.spearmanr``, average ranks for ties).

Computing the RMD::

    scorer = DifficultyScorer(n_classes=K).fit(train_features, train_labels)
    _, val_rmd = scorer.score(val_features, val_labels)
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from rmd_ray.evaluation.summaries import summarise_predictions
from rmd_ray.io import storage
from rmd_ray.io.parts import column_names, read_table

__all__ = ["ProxyResult", "difficulty_proxy_test", "proxy_from_rows", "proxy_test_from_files"]


@dataclass(frozen=True, eq=False)
class ProxyResult:
    """Outcome of :func:`difficulty_proxy_test`; group 0 is the hardest.

    Attributes
    ----------
    error_rate : ndarray of float, shape (G,)
        Fraction of misclassified samples in each group.
    group_size : ndarray of int, shape (G,)
    score_mean : ndarray of float, shape (G,)
        Mean difficulty score (RMD) in each group, decreasing.
    spearman : float
        Spearman rho between the score and the per-sample cross-entropy (NaN, with a warning, when
        every loss is equal).
    error_overall : float
        Overall error rate, ``sum(error_rate * group_size) / n_samples``.
    n_samples : int
    """

    error_rate: np.ndarray
    group_size: np.ndarray
    score_mean: np.ndarray
    spearman: float
    error_overall: float
    n_samples: int

    @property
    def n_groups(self) -> int:
        return int(self.error_rate.shape[0])

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values (lists, floats), e.g. for JSON."""
        return {
            "error_rate": self.error_rate.tolist(),
            "group_size": self.group_size.tolist(),
            "score_mean": self.score_mean.tolist(),
            "spearman": self.spearman,
            "error_overall": self.error_overall,
            "n_samples": self.n_samples,
        }

    @classmethod
    def from_dict(cls, value: Any) -> ProxyResult:
        """Inverse of :meth:`to_dict` (e.g. a ``proxy.json`` written by ``rmd-ray evaluate``).

        Raises
        ------
        ValueError
            A key is missing, the per-group lists differ in length or are empty.
        """
        keys = ("error_rate", "group_size", "score_mean", "spearman", "error_overall", "n_samples")
        if not isinstance(value, Mapping) or any(k not in value for k in keys):
            got = sorted(value) if isinstance(value, Mapping) else type(value).__name__
            raise ValueError(f"a proxy result needs the keys {list(keys)} (ProxyResult.to_dict); got {got}")
        groups = [np.asarray(value[k], dtype=float) for k in keys[:3]]
        if any(g.ndim != 1 for g in groups) or len({g.shape[0] for g in groups}) != 1 or groups[0].shape[0] == 0:
            raise ValueError(
                "a proxy result's error_rate, group_size and score_mean must be non-empty lists of one "
                f"length, got lengths {[g.size for g in groups]}"
            )
        spearman = value["spearman"]
        return cls(
            error_rate=groups[0],
            group_size=groups[1].astype(np.int64),
            score_mean=groups[2],
            spearman=float("nan") if spearman is None else float(spearman),
            error_overall=float(value["error_overall"]),
            n_samples=int(value["n_samples"]),
        )


def _ids(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=object)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    arr = arr.astype(str)
    uniq, counts = np.unique(arr, return_counts=True)
    if (counts > 1).any():
        raise ValueError(
            f"{name} repeat {int((counts > 1).sum())} id(s), e.g. {str(uniq[counts > 1][0])!r}; ids must be "
            "unique (deduplicate predictions with rmd_ray.evaluation.evaluate.dedupe_predictions)"
        )
    return arr


def _join(score_ids: np.ndarray, pred_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions in each side of the common ids, sorted by id."""
    common, in_scores, in_preds = np.intersect1d(score_ids, pred_ids, assume_unique=True, return_indices=True)
    n_no_pred = score_ids.shape[0] - common.shape[0]
    n_no_score = pred_ids.shape[0] - common.shape[0]
    if n_no_pred or n_no_score:
        example = (np.setdiff1d(score_ids, common)[:1] if n_no_pred else np.setdiff1d(pred_ids, common)[:1])[0]
        raise ValueError(
            f"scores and predictions cover different samples: {n_no_pred} scored id(s) have no "
            f"prediction and {n_no_score} predicted id(s) have no score (e.g. {str(example)!r}); "
            "score and predict the same validation set"
        )
    return common, in_scores, in_preds


def difficulty_proxy_test(
    score_ids: Any,
    scores: Any,
    pred_ids: Any,
    labels: Any,
    logits: Any,
    *,
    n_groups: int = 10,
    score_labels: Any = None,
) -> ProxyResult:
    """Error rate of a classifier on validation groups sorted from hardest to easiest by a difficulty score.

    Parameters
    ----------
    score_ids : array-like of str, shape (N,)
        Ids of the scored samples (unique).
    scores : array-like of float, shape (N,)
        Difficulty (RMD; larger = harder), aligned with ``score_ids``.
    pred_ids : array-like of str, shape (N,)
        Ids of the predictions (unique, any order: the two sides are joined by id, never by position).
    labels : array-like of int, shape (N,)
        Labels of the predictions, aligned with ``pred_ids``.
    logits : array-like of float, shape (N, K)
        Classifier outputs, aligned with ``pred_ids``.
    n_groups : int
        Number of groups G, ``1 <= G <= N``.
    score_labels : array-like of int, shape (N,), optional
        Labels the scores were computed with; if given they must equal ``labels`` per id (RMD depends
        on the label).

    Returns
    -------
    ProxyResult

    Raises
    ------
    ValueError
        Length mismatches, repeated ids, an id present on one side only (the message gives both
        counts), NaN/inf scores or logits, all scores equal (no ranking), labels outside ``0..K-1``,
        ``score_labels`` disagreeing with ``labels``, ``n_groups`` not in ``1..N``.

    Notes
    -----
    Ties in the score are broken by id (ascending), so the result does not depend on input order.
    """
    pid = _ids(pred_ids, "pred_ids")
    z, y = _checked_predictions(logits, labels, pid)
    shifted = z - z.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_p[np.arange(y.shape[0]), y]
    return proxy_from_rows(score_ids, scores, pid, y, loss, z.argmax(axis=1) != y, n_groups=n_groups,
                           score_labels=score_labels)


def proxy_from_rows(score_ids: Any, scores: Any, pred_ids: Any, labels: np.ndarray, loss: np.ndarray,
                    wrong: np.ndarray, *, n_groups: int, score_labels: Any = None) -> ProxyResult:
    """:func:`difficulty_proxy_test` from per-prediction loss (NLL) and errors instead of logits: what a
    streamed predictions file reduces to (:func:`rmd_ray.evaluation.summaries.summarise_predictions`)."""
    sid = _ids(score_ids, "score_ids")
    pid = _ids(pred_ids, "pred_ids")
    s = _checked_scores(scores, sid)
    _, si, pi = _join(sid, pid)
    s, loss, wrong, y = s[si], np.asarray(loss)[pi], np.asarray(wrong)[pi], np.asarray(labels)[pi].astype(np.int64)
    if score_labels is not None:
        _check_score_labels(score_labels, sid, si, y)
    _check_ranking(s, n_groups)
    return _proxy(s, loss, wrong, int(n_groups))


def _checked_scores(scores: Any, sid: np.ndarray) -> np.ndarray:
    """``scores`` as float64, shape (N,) like ``sid``, all finite."""
    s = np.asarray(scores)
    if s.dtype.kind not in "fiu" or s.ndim != 1 or s.shape[0] != sid.shape[0]:
        raise ValueError(
            f"scores must be a 1-D real array with one value per score id ({sid.shape[0]}), "
            f"got dtype {s.dtype} shape {s.shape}"
        )
    s = s.astype(np.float64)
    if not np.isfinite(s).all():
        bad = np.flatnonzero(~np.isfinite(s))
        raise ValueError(
            f"{bad.size} score(s) are NaN or inf (e.g. id {str(sid[bad[0]])!r}); the scorer produced no "
            "valid difficulty for them: drop or re-score those samples"
        )
    return s


def _checked_predictions(logits: Any, labels: Any, pid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(logits, labels)``: finite float64 (N, K) with K >= 2, and integer (N,) in ``0..K-1``; N = len(pid)."""
    z = np.asarray(logits)
    y = np.asarray(labels)
    if z.dtype.kind not in "fiu" or z.ndim != 2 or z.shape[1] < 2:
        raise ValueError(f"logits must be a real (N, K) array with K >= 2, got dtype {z.dtype} shape {z.shape}")
    if y.dtype.kind not in "iu" or y.ndim != 1:
        raise ValueError(f"labels must be a 1-D integer array, got dtype {y.dtype} shape {y.shape}")
    if not (z.shape[0] == y.shape[0] == pid.shape[0]):
        raise ValueError(
            f"{pid.shape[0]} pred_ids, {y.shape[0]} labels and {z.shape[0]} logit rows; pass one per prediction"
        )
    z = z.astype(np.float64)
    if not np.isfinite(z).all():
        row = int(np.flatnonzero(~np.isfinite(z).all(axis=1))[0])
        raise ValueError(f"logits for id {str(pid[row])!r} hold NaN or inf; drop or repair that prediction")
    if y.min() < 0 or y.max() >= z.shape[1]:
        raise ValueError(f"labels must lie in 0..{z.shape[1] - 1} (one column per class), got {y.min()}..{y.max()}")
    return z, y


def _check_score_labels(score_labels: Any, sid: np.ndarray, si: np.ndarray, y: np.ndarray) -> None:
    """The labels the scores were computed with (aligned with ``sid``) equal the joined labels ``y``."""
    sl = np.asarray(score_labels)
    if sl.shape != sid.shape:
        raise ValueError(f"score_labels must have shape {sid.shape} like score_ids, got {sl.shape}")
    differ = sl[si] != y
    if differ.any():
        raise ValueError(
            f"{int(differ.sum())} sample(s) were scored with a different label than the predictions file "
            f"holds (e.g. id {str(sid[si][differ][0])!r}); RMD depends on the label: use the same labels"
        )


def _check_ranking(s: np.ndarray, n_groups: Any) -> None:
    """``n_groups`` is an integer in ``1..N`` and the joined scores ``s`` are not all equal."""
    n = s.shape[0]
    if isinstance(n_groups, bool) or not isinstance(n_groups, (int, np.integer)) or not 1 <= n_groups <= n:
        raise ValueError(f"n_groups must be an integer in 1..{n} (the number of samples), got {n_groups!r}")
    if s.min() == s.max():
        raise ValueError(f"all {n} scores equal {s[0]:.6g}: they rank nothing; check the scorer")


def _proxy(s: np.ndarray, loss: np.ndarray, wrong: np.ndarray, n_groups: int) -> ProxyResult:
    order = np.argsort(-s, kind="stable")  # hardest first; inputs are sorted by id, so ties go by id
    groups = np.array_split(order, n_groups)
    if loss.min() == loss.max():
        warnings.warn(
            "every sample has the same loss, so the Spearman correlation is undefined: reported as NaN",
            RuntimeWarning,
            stacklevel=3,
        )
        rho = float("nan")
    else:
        rho = float(spearmanr(s, loss).statistic)
    return ProxyResult(
        error_rate=np.array([wrong[g].mean() for g in groups]),
        group_size=np.array([g.shape[0] for g in groups], dtype=np.int64),
        score_mean=np.array([s[g].mean() for g in groups]),
        spearman=rho,
        error_overall=float(wrong.mean()),
        n_samples=int(s.shape[0]),
    )


def proxy_test_from_files(
    scores_path: str | os.PathLike[str],
    predictions_path: str | os.PathLike[str],
    *,
    n_groups: int = 10,
    score: str = "rmd",
) -> ProxyResult:
    """:func:`difficulty_proxy_test` from a validation ``scores.parquet`` and a predictions file.

    Parameters
    ----------
    scores_path : Parquet with ``id``, ``label`` and the ``score`` column (the scoring output, for the
        validation set, from a scorer fitted on the training set)
    predictions_path : predictions Parquet (``id``, ``label``, ``logits``), read batch by batch; identical
        duplicates are dropped as in :func:`rmd_ray.evaluation.summaries.summarise_predictions`
    n_groups : int
    score : str
        Column to rank by (``rmd``; also ``md``, ``kmeans``, ... for the baselines). Larger = harder.
    """
    path = str(scores_path)
    if not storage.exists(path):
        raise FileNotFoundError(f"scores file {path!r} does not exist")
    names = column_names(path)
    missing = [c for c in ("id", "label", score) if c not in names]
    if missing:
        raise ValueError(f"{path!r} lacks column(s) {missing} (has {names})")
    table = read_table(path, columns=["id", "label", score])
    if not storage.exists(predictions_path):
        raise FileNotFoundError(f"predictions file {str(predictions_path)!r} does not exist")
    rows = summarise_predictions(str(predictions_path))  # streamed: no N x K logits in memory
    return proxy_from_rows(
        np.asarray(table.column("id").to_pylist(), dtype=object),
        table.column(score).to_numpy(zero_copy_only=False),
        rows.ids, rows.labels, rows.columns["nll"], ~rows.columns["correct"],
        n_groups=n_groups,
        score_labels=table.column("label").to_numpy(),
    )

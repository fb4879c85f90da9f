"""Detection: misclassification detection (confidence separates right from wrong) and
out-of-distribution detection, scored with AUROC, AUPR and FPR at 95% TPR."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from rmd_ray.core.metrics.checks import as_real_array, check_binary, check_logits, check_probabilities
from rmd_ray.core.metrics.scoring_rules import entropy, softmax_rows
from rmd_ray.core.registry import Registry

# ---------------------------------------------------------------------------------------------
# detection: misclassification and OOD
# ---------------------------------------------------------------------------------------------

PROB_SCORES: Registry[Callable[[np.ndarray], np.ndarray]] = Registry("confidence score")
PROB_SCORES.add("msp", lambda p: p.max(axis=1))
PROB_SCORES.add("entropy", lambda p: -entropy(p))

_LOGIT_SCORES: Registry[Callable[[np.ndarray], np.ndarray]] = Registry("OOD score")
_LOGIT_SCORES.add("maxlogit", lambda z: z.max(axis=1))
_LOGIT_SCORES.add("msp", lambda z: softmax_rows(z).max(axis=1))
_LOGIT_SCORES.add("entropy", lambda z: -entropy(softmax_rows(z)))


def _check_scores(scores: Any, positives: Any) -> tuple[np.ndarray, np.ndarray]:
    s = as_real_array(scores, "scores", allow_int=True)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"scores must be a non-empty 1-D array, got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError(f"scores[{int(np.flatnonzero(~np.isfinite(s))[0])}] is NaN or inf")
    pos = check_binary(positives, "positives", s.shape[0], "scores")
    n_pos = int(pos.sum())
    if n_pos == 0 or n_pos == pos.shape[0]:
        which = "positive" if n_pos == 0 else "negative"
        raise ValueError(
            f"positives holds no {which} sample, so FPR/TPR/AUROC are undefined; "
            "pass both positive and negative samples"
        )
    return s, pos


def _fpr_at_tpr(s: np.ndarray, pos: np.ndarray, tpr: float) -> float:
    # drop_intermediate=False keeps every threshold, so no point with TPR >= tpr is skipped.
    fpr, tprs, _ = roc_curve(pos, s, drop_intermediate=False)
    return float(fpr[tprs >= tpr].min())


def fpr_at_tpr(scores: Any, positives: Any, *, tpr: float = 0.95) -> float:
    """False-positive rate at the loosest threshold that reaches the target true-positive rate.

    A sample is declared positive when ``score >= threshold``. Over all thresholds (each distinct
    score, via ``sklearn.metrics.roc_curve``) this returns the smallest FPR among those with
    ``TPR >= tpr``. Example: scores ``[.9, .8, .7, .6, .4, .2, .1]`` with positives
    ``[1, 0, 1, 0, 0, 1, 0]``: TPR reaches 1 >= 0.95 only at threshold 0.2, where 3 of the 4
    negatives score higher, so FPR@95%TPR = 0.75.

    Raises
    ------
    ValueError
        If ``positives`` lacks either class (TPR or FPR undefined), or ``tpr`` is not in (0, 1].
    """
    s, pos = _check_scores(scores, positives)
    is_number = isinstance(tpr, (int, float, np.floating, np.integer)) and not isinstance(tpr, bool)
    if not is_number or not 0 < tpr <= 1:
        raise ValueError(f"tpr must be a number in (0, 1], got {tpr!r}")
    return _fpr_at_tpr(s, pos, float(tpr))


def detection(s: np.ndarray, pos: np.ndarray) -> dict[str, float]:
    return {
        "fpr_at_95_tpr": _fpr_at_tpr(s, pos, 0.95),
        "auroc": float(roc_auc_score(pos, s)),
        "aupr": float(average_precision_score(pos, s)),
        # The same with the negatives as the class of interest (AUPR-Error / AUPR-Out).
        "aupr_error": float(average_precision_score(~pos, -s)),
    }


def misclassification_detection(probs: Any, labels: Any, *, score: str = "msp") -> dict[str, float]:
    """How well a confidence score separates correct from wrong predictions.

    Positives are the correctly classified samples; a higher score means "more likely correct":
    ``"msp"`` = max softmax probability, ``"entropy"`` = minus the predictive entropy.

    Returns
    -------
    dict with
        ``fpr_at_95_tpr`` (lower is better, see :func:`fpr_at_tpr`), ``auroc``
        (``sklearn.metrics.roc_auc_score``), ``aupr`` (``average_precision_score`` with the correct
        samples as positives, "AUPR-Success"), ``aupr_error`` (misclassified samples as positives,
        score negated).

    Raises
    ------
    ValueError
        If every prediction is correct, or every one wrong: the metrics are undefined and NaN is never
        returned. (:func:`evaluate_predictions` then warns and leaves these keys out.)
    """
    p, y = check_probabilities(probs, labels)
    score_fn = PROB_SCORES.get(score)
    correct = p.argmax(axis=1) == y
    n_ok = int(correct.sum())
    if n_ok in (0, correct.shape[0]):
        state = "correct" if n_ok else "wrong"
        raise ValueError(
            f"every prediction is {state}, so misclassification detection is undefined; "
            "evaluate on a set with both correct and wrong predictions"
        )
    return detection(score_fn(p), correct)


def ood_detection(in_logits: Any, out_logits: Any, *, score: str = "maxlogit") -> dict[str, float]:
    """Separate in-distribution (positive) from out-of-distribution samples by a score on the logits.

    Scores (higher = more in-distribution): ``"maxlogit"`` = max logit (Hendrycks et al. 2022),
    ``"msp"`` = max softmax probability, ``"entropy"`` = minus the predictive entropy.

    Parameters
    ----------
    in_logits : array-like of shape (N_in, K)
    out_logits : array-like of shape (N_out, K)

    Returns
    -------
    dict with ``fpr_at_95_tpr`` (FPR on OOD at 95% TPR on in-distribution), ``auroc``, ``aupr``
    (in-distribution as positives, "AUPR-In") and ``aupr_error`` (OOD as positives, "AUPR-Out").
    """
    z_in = check_logits(in_logits, "in_logits")
    z_out = check_logits(out_logits, "out_logits")
    if z_in.shape[1] != z_out.shape[1]:
        raise ValueError(
            f"in_logits have {z_in.shape[1]} classes but out_logits {z_out.shape[1]}; use one model"
        )
    score_fn = _LOGIT_SCORES.get(score)
    s = np.concatenate([score_fn(z_in), score_fn(z_out)])
    pos = np.r_[np.ones(z_in.shape[0], bool), np.zeros(z_out.shape[0], bool)]
    return detection(s, pos)




#: The OOD scores reported by :func:`ood_report`, in its order (docs/design.md 1.9).
OOD_SCORES = ("maxlogit", "entropy", "msp")


def ood_report(in_logits: Any, out_logits: Any) -> dict[str, dict[str, float]]:
    """The near-OOD report: AUROC, AUPR and FPR@95%TPR for each of MaxLogit, entropy and MSP.

    In-distribution samples are the positives throughout (:func:`ood_detection`, called once per
    score; the inputs are validated there, so a bad array fails with its message).

    Parameters
    ----------
    in_logits : array-like of shape (N_in, K)
    out_logits : array-like of shape (N_out, K)

    Returns
    -------
    dict
        ``{score: {"auroc", "aupr", "aupr_error", "fpr_at_95_tpr"}}`` for score in :data:`OOD_SCORES`.
    """
    return {score: ood_detection(in_logits, out_logits, score=score) for score in OOD_SCORES}

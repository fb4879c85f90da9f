"""Evaluation metrics: accuracy, calibration (ECE / MCE / reliability diagrams), NLL, Brier score,
selective classification (risk-coverage, AURC, accuracy-rejection), misclassification detection and
out-of-distribution detection.

Every public function takes arrays positionally and options keyword-only, validates its inputs once
(``ValueError`` / ``TypeError`` whose message says what to change) and returns plain Python floats,
NumPy arrays or dicts of floats. Lists are accepted wherever an array is. Everything is computed in
float64. Ranking metrics use scikit-learn (``roc_auc_score``, ``average_precision_score``,
``roc_curve``); binning is done here because no well-kept library pins the edge rules we need
(see :func:`expected_calibration_error`).

Conventions used throughout
---------------------------
- ``probs``: (N, K) rows on the probability simplex (each row sums to 1 within 1e-4).
- Top-label confidence ``conf_i = max_k probs[i, k]``; prediction ``argmax_k probs[i, k]`` (ties go to
  the first index, NumPy's rule); ``correct_i = (prediction_i == labels_i)``.
- Values are fractions in [0, 1] (not percentages).

Modules, one topic each: :mod:`~rmd_ray.core.metrics.scoring_rules` (softmax, accuracy, NLL, Brier),
:mod:`~rmd_ray.core.metrics.calibration` (ECE, MCE, reliability diagrams),
:mod:`~rmd_ray.core.metrics.selective` (risk-coverage, AURC, accuracy-rejection),
:mod:`~rmd_ray.core.metrics.detection` (misclassification and OOD detection) and
:mod:`~rmd_ray.core.metrics.summary` (:func:`evaluate_predictions`, all of them at once). Import
public names from this package; the modules are an implementation detail.
"""

from rmd_ray.core.metrics.calibration import (
    ReliabilityDiagram,
    calibration_error_from_confidence,
    expected_calibration_error,
    maximum_calibration_error,
    reliability_diagram_data,
    reliability_from_confidence,
)
from rmd_ray.core.metrics.checks import ROW_SUM_TOL, SingleClassWarning, check_probabilities
from rmd_ray.core.metrics.detection import (
    OOD_SCORES,
    fpr_at_tpr,
    misclassification_detection,
    ood_detection,
    ood_report,
)
from rmd_ray.core.metrics.scoring_rules import (
    accuracy,
    brier_score,
    negative_log_likelihood,
    predictive_entropy,
    softmax,
)
from rmd_ray.core.metrics.selective import accuracy_rejection_curve, aurc, risk_coverage_curve
from rmd_ray.core.metrics.summary import SUMMARY_COLUMNS, evaluate_predictions, metrics_from_summaries, row_summaries
from rmd_ray.core.metrics.temperature import apply_temperature, fit_temperature

__all__ = [
    "ROW_SUM_TOL",
    "SUMMARY_COLUMNS",
    "metrics_from_summaries",
    "reliability_from_confidence",
    "row_summaries",
    "ReliabilityDiagram",
    "SingleClassWarning",
    "accuracy",
    "accuracy_rejection_curve",
    "apply_temperature",
    "aurc",
    "brier_score",
    "calibration_error_from_confidence",
    "check_probabilities",
    "evaluate_predictions",
    "fit_temperature",
    "expected_calibration_error",
    "fpr_at_tpr",
    "maximum_calibration_error",
    "misclassification_detection",
    "negative_log_likelihood",
    "OOD_SCORES",
    "ood_detection",
    "ood_report",
    "predictive_entropy",
    "reliability_diagram_data",
    "risk_coverage_curve",
    "softmax",
]

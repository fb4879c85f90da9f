"""Core layer: NumPy/CuPy statistics, scores, weights and metrics. Imports neither torch nor ray."""

from rmd_ray.core.covariance import (
    SHRINKAGE,
    CovarianceConfig,
    SingularCovarianceWarning,
    apply_shrinkage,
    whitening_matrix,
)
from rmd_ray.core.estimator import DifficultyScorer, NotFittedError
from rmd_ray.core.label_ranking import LabelIssueRanking, rank_label_issues
from rmd_ray.core.registry import Registry
from rmd_ray.core.scores import class_distances, kmeans_distance, label_conditional_md, mahalanobis_sq, relative_md
from rmd_ray.core.splits import stratified_split, validation_counts
from rmd_ray.core.stats import (
    ClassStats,
    batch_stats,
    between_class_covariance,
    class_agnostic_covariance,
    class_agnostic_mean,
    empty_stats,
    merge_all,
    merge_stats,
    residual_fourth_moments,
    stream_stats,
    within_class_covariance,
)
from rmd_ray.core.validation import DegenerateClassWarning
from rmd_ray.core.weights import (
    NORMALIZATIONS,
    WeightConfig,
    difficulty_weights,
    log_difficulty_weights,
    normalize_scores,
)

__all__ = [
    "SHRINKAGE", "NORMALIZATIONS", "ClassStats", "CovarianceConfig", "DegenerateClassWarning", "DifficultyScorer",
    "NotFittedError", "Registry", "SingularCovarianceWarning", "WeightConfig", "apply_shrinkage", "batch_stats",
    "between_class_covariance",
    "class_agnostic_covariance", "class_agnostic_mean", "class_distances", "difficulty_weights", "empty_stats",
    "kmeans_distance", "label_conditional_md", "LabelIssueRanking",
    "rank_label_issues", "log_difficulty_weights", "mahalanobis_sq", "merge_all",
    "merge_stats", "normalize_scores", "relative_md", "residual_fourth_moments", "stratified_split", "stream_stats",
    "validation_counts", "whitening_matrix", "within_class_covariance",
]

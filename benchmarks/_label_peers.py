"""The peers of benchmarks/label_noise.py: cleanlab pipelines and a SimiFeat-style kNN vote.

Every function returns a suspicion score, LARGER = MORE SUSPECT, one per sample, so all rankings are
scored the same way. Each runs with whatever BLAS threading the caller set (the benchmark: one thread).

- cleanlab, logistic regression: 5-fold out-of-fold probabilities, then
  ``cleanlab.rank.get_label_quality_scores(method="self_confidence")``; suspicion = 1 - quality. Four
  models (``LOGISTIC_MODELS``): sklearn's ``LogisticRegression()`` on raw features (cleanlab's documented
  example); standardised with C = 0.01; standardised with C chosen by ``LogisticRegressionCV`` (5-fold,
  Cs 1e-4..1e0, log loss on the noisy labels, once on all samples, then the 5-fold out-of-fold run with
  that C: what a careful user runs); standardised with C = 0.001, the best C of a sweep scored with the
  clean labels of the synthetic settings (an oracle no user has; reported, not a peer of the verdict).
- cleanlab Datalab, the training-free path: ``Datalab(...).find_issues(features=..., issue_types={"label":
  {}})``, whose label check builds out-of-sample probabilities from a 10-nearest-neighbour classifier
  (Euclidean) on the features; suspicion = 1 - ``label_score``.
- kNN vote (SimiFeat, Zhu et al. 2022, its voting step): the share of a sample's 10 cosine nearest
  neighbours (itself excluded) whose label differs from its own. The neighbours do not depend on the
  labels, so :func:`cosine_neighbours` runs once per feature set and :func:`knn_vote` per labelling.
"""

from __future__ import annotations

import numpy as np

N_FOLDS = 5
CV_CS = np.logspace(-4, 0, 5)
KNN_K = 10


def import_all() -> None:
    """Import every library the peers use, so that no timed run pays a first import (Datalab's alone takes
    seconds: it brings in Hugging Face ``datasets``)."""
    import cleanlab.filter  # noqa: F401
    import cleanlab.rank  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    import sklearn.model_selection  # noqa: F401
    import sklearn.neighbors  # noqa: F401
    from cleanlab import Datalab  # noqa: F401


def _standardised(model):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), model)


def _logistic(c: float):
    from sklearn.linear_model import LogisticRegression

    return _standardised(LogisticRegression(C=c, max_iter=1000))


def _default_logistic(features: np.ndarray, noisy: np.ndarray, seed: int):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression()


def _cv_logistic(features: np.ndarray, noisy: np.ndarray, seed: int):
    """Standardised logistic regression with C picked by LogisticRegressionCV on the noisy labels."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    folds = StratifiedKFold(n_splits=N_FOLDS, shuffle=True, random_state=seed)
    search = _standardised(LogisticRegressionCV(Cs=CV_CS, cv=folds, scoring="neg_log_loss", max_iter=1000))
    search.fit(features, noisy)
    return _logistic(float(search[-1].C_[0]))


# name -> (builder(features, noisy, seed) -> estimator, realistic: a peer of the verdict)
LOGISTIC_MODELS = {
    "LogisticRegression() on raw features": (_default_logistic, True),
    "standardised, C = 0.01": (lambda f, y, s: _logistic(0.01), True),
    "standardised, C by LogisticRegressionCV": (_cv_logistic, True),
    "standardised, C = 0.001 (oracle C)": (lambda f, y, s: _logistic(0.001), False),
}


def cleanlab_logistic(
    features: np.ndarray, noisy: np.ndarray, name: str, seed: int
) -> tuple[np.ndarray, np.ndarray, str]:
    """(1 - self-confidence from 5-fold out-of-fold probabilities, the boolean flags of
    ``cleanlab.filter.find_label_issues`` on them, a note: the C used if searched)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    build, _ = LOGISTIC_MODELS[name]
    model = build(features, noisy, seed)
    folds = StratifiedKFold(n_splits=N_FOLDS, shuffle=True, random_state=seed)
    probs = cross_val_predict(model, features, noisy, cv=folds, method="predict_proba")
    quality = get_label_quality_scores(noisy, probs, method="self_confidence")
    note = f"C = {model[-1].C:g}" if build is _cv_logistic else ""
    return 1.0 - quality, find_label_issues(noisy, probs), note


def cleanlab_datalab(features: np.ndarray, noisy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(1 - Datalab's label_score from its kNN classifier on the features (no model to train), its
    boolean is_label_issue flags)."""
    from cleanlab import Datalab

    lab = Datalab(data={"label": noisy}, label_name="label", verbosity=0)
    lab.find_issues(features=features, issue_types={"label": {}})
    issues = lab.get_issues("label")
    return 1.0 - issues["label_score"].to_numpy(), issues["is_label_issue"].to_numpy(dtype=bool)


def cosine_neighbours(features: np.ndarray, *, k: int = KNN_K, block: int = 512) -> np.ndarray:
    """Indices (N, k) of each row's k nearest rows by cosine similarity, itself excluded, by blocked
    float32 matrix products (N x block similarities at a time)."""
    unit = np.asarray(features, dtype=np.float32)
    unit = unit / np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
    n = unit.shape[0]
    out = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, block):
        stop = min(start + block, n)
        sims = unit[start:stop] @ unit.T
        sims[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # never its own neighbour
        top = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1, kind="stable")
        out[start:stop] = np.take_along_axis(top, order, axis=1)
    return out


def knn_vote(neighbours: np.ndarray, noisy: np.ndarray) -> np.ndarray:
    """Share of each sample's neighbours whose label differs from its own, in [0, 1]."""
    return (noisy[neighbours] != noisy[:, None]).mean(axis=1)

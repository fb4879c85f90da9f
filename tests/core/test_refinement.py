"""The refined solve (rmd_ray.core.refinement, docs/design.md 1.14) and the one-call label ranking built on it
(rmd_ray.core.label_ranking.rank_label_issues): float64 accuracy from a float32 factor, and the float64
statistics path whenever the refined one cannot stand in for it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from rmd_ray.core import CovarianceConfig, DifficultyScorer
from rmd_ray.core.label_ranking import LABEL_SCORES, label_issue_scores, rank_label_issues
from rmd_ray.core.refinement import refined_scatter_solve, scatter_apply
from rmd_ray.core.validation import DegenerateClassWarning


def classes(seed: int, *, n: int, d: int, k: int, offset: float = 0.0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    centres = rng.normal(scale=2.0, size=(k, d))
    mixing = np.eye(d) + 0.4 * rng.normal(size=(d, d))
    return (centres[labels] + rng.normal(size=(n, d)) @ mixing + offset).astype(dtype), labels


def longdouble_solve(rows: np.ndarray, rhs: np.ndarray, ridge: float) -> np.ndarray:
    """(R^T R + ridge I)^-1 rhs in 80-bit extended precision: float64 refinement of a float64 solve whose
    residuals are computed in np.longdouble, the naive reference."""
    r = rows.astype(np.longdouble)
    a = r.T @ r + np.longdouble(ridge) * np.eye(rows.shape[1], dtype=np.longdouble)
    a64 = a.astype(np.float64)
    x = np.linalg.solve(a64, rhs).astype(np.longdouble)
    for _ in range(4):
        x = x + np.linalg.solve(a64, (rhs - a @ x).astype(np.float64))
    return x.astype(np.float64)


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    d=st.integers(2, 24),
    k=st.integers(1, 5),
    scale=st.sampled_from([1e-3, 1.0, 1e4]),
    ridge_eps=st.sampled_from([0.0, 1e-4, 0.1]),
)
@example(seed=465, d=15, k=1, scale=1e-3, ridge_eps=0.0)  # cond 1.4e6: refinement must give up, and say why
@example(seed=18, d=18, k=1, scale=1e-3, ridge_eps=0.0)  # cond 5.9e6: contracts, too slowly for 10 steps
def test_refined_solve_reaches_extended_precision_accuracy(seed, d, k, scale, ridge_eps):
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(8 * d + 5, d)) @ (np.eye(d) + 0.3 * rng.normal(size=(d, d))) * scale
    rhs = rng.normal(size=(d, k)) * scale
    ridge = ridge_eps * float((rows * rows).sum()) / d
    solved = refined_scatter_solve(rows, rhs, ridge=ridge)
    reference = longdouble_solve(rows, rhs, ridge)
    eigenvalues = np.linalg.eigvalsh(rows.T @ rows + ridge * np.eye(d))
    if not solved.converged:
        # Refinement contracts by ~ cond * eps_32 * d per step: it may only give up (and say so, so that the
        # caller takes the float64 path) on a scatter too ill-conditioned for a float32 factor.
        assert "too ill-conditioned for float32" in solved.reason
        assert eigenvalues[-1] / eigenvalues[0] > 1e4
        return
    assert solved.reason == "converged"
    if eigenvalues[-1] / eigenvalues[0] < 1e3:  # contraction ~ cond * eps_32 * d: < 1e-3 per step
        assert solved.steps <= 3
    float64_direct = np.linalg.solve(rows.T @ rows + ridge * np.eye(d), rhs)
    error = np.abs(solved.solution - reference).max() / np.abs(reference).max()
    # as accurate as a float64 solve of the float64 scatter (within a small factor), far beyond float32's 1e-7
    direct_error = np.abs(float64_direct - reference).max() / np.abs(reference).max()
    assert error <= max(8 * direct_error, 1e-14)


def test_scatter_apply_is_the_scatter_times_the_vectors_in_any_block_count():
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(300, 7))  # 300 rows: two full blocks of 128 and a partial one
    vectors = rng.normal(size=(7, 3))
    applied, products = scatter_apply(rows, vectors, ridge=0.5)
    np.testing.assert_allclose(applied, (rows.T @ rows + 0.5 * np.eye(7)) @ vectors, rtol=1e-13)
    np.testing.assert_allclose(products, rows @ vectors, rtol=1e-13)


@pytest.mark.parametrize("tol", [None, 1e-4])  # a tiny last correction (float32 product) and a large one (float64)
def test_refined_solve_returns_the_row_products_of_its_solution(tol):
    rows, _ = classes(8, n=500, d=12, k=2)
    rows -= rows.mean(axis=0)
    solved = refined_scatter_solve(rows, np.random.default_rng(8).normal(size=(12, 3)), ridge=1.0, tol=tol)
    assert solved.converged
    np.testing.assert_allclose(solved.row_products, rows @ solved.solution, rtol=0,
                               atol=1e-13 * np.abs(rows @ solved.solution).max())


def test_refined_solve_gives_up_on_a_singular_float32_factor():
    rows = np.random.default_rng(0).normal(size=(50, 4))
    rows[:, 2] = 0.0  # W has an exactly zero row and column: no Cholesky factor in any precision
    solved = refined_scatter_solve(rows, np.ones((4, 1)), ridge=0.0)
    assert not solved.converged and solved.solution is None and solved.steps == 0
    assert solved.reason == "the float32 scatter is not positive definite"


def test_refined_solve_gives_up_when_float32_cannot_precondition():
    rng = np.random.default_rng(1)
    d = 6
    basis, _ = np.linalg.qr(rng.normal(size=(d, d)))
    # eigenvalues of W from 1 to 1e10: float32's rounding of W (~1e-7 relative) swamps the smallest
    rows = rng.normal(size=(400, d))
    rows = np.linalg.qr(rows)[0] @ np.diag(np.logspace(0, 5, d)) @ basis.T
    solved = refined_scatter_solve(rows, rng.normal(size=(d, 2)), ridge=0.0)
    assert not solved.converged and solved.solution is None
    assert solved.reason in ("the float32 scatter is not positive definite", "refinement overflowed") or (
        "contracts by" in solved.reason or "not converged after" in solved.reason
    )


def test_refined_solve_stops_after_max_steps():
    rows, _ = classes(0, n=200, d=8, k=2)
    solved = refined_scatter_solve(rows, np.ones((8, 1)), ridge=0.0, max_steps=1, tol=1e-300)
    assert not solved.converged and solved.steps == 1
    assert solved.reason == "not converged after 1 refinement steps (too ill-conditioned for float32)"


def reference_scores(features, labels, k, covariance):
    return DifficultyScorer(n_classes=k, covariance=covariance).fit(features, labels).label_scores(features, labels)


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    k=st.integers(2, 6),
    extra=st.integers(0, 10),
    offset=st.sampled_from([0.0, 1e4]),
    dtype=st.sampled_from([np.float32, np.float64]),
    ridge_eps=st.sampled_from([1e-4, 1e-2]),
)
def test_rank_label_issues_equals_the_float64_statistics_path(seed, k, extra, offset, dtype, ridge_eps):
    d = 2 * k + extra
    features, labels = classes(seed, n=30 * d, d=d, k=k, offset=offset, dtype=dtype)
    covariance = CovarianceConfig(shrinkage="ridge", ridge_eps=ridge_eps)
    ranking = rank_label_issues(features, labels, n_classes=k, covariance=covariance, score="margin")
    expected = reference_scores(features, labels, k, covariance)
    assert ranking.solver == "refined" and ranking.solver_note == ""
    scale = np.abs(expected.rmd).max() + np.abs(expected.margin).max()
    np.testing.assert_allclose(ranking.rmd, expected.rmd, rtol=0, atol=1e-9 * scale)
    np.testing.assert_allclose(ranking.margin, expected.margin, rtol=0, atol=1e-9 * scale)
    clear = np.abs(expected.margin) > 1e-6 * scale  # the nearest class is decided unless two means tie
    np.testing.assert_array_equal(ranking.nearest_class[clear], expected.nearest_class[clear])
    np.testing.assert_array_equal(ranking.score, ranking.margin)


def test_rank_label_issues_scores_each_ranking_and_flags_the_flipped_label():
    features, labels = classes(5, n=600, d=10, k=3)
    flipped = labels.copy()
    flipped[0] = (labels[0] + 1) % 3
    by_name = {name: rank_label_issues(features, flipped, n_classes=3, score=name) for name in LABEL_SCORES.names()}
    for name, ranking in by_name.items():
        assert ranking.score_name == name
        np.testing.assert_array_equal(ranking.score, label_issue_scores(ranking.rmd, ranking.margin, score=name))
    # the flipped sample sits inside its true class: the margin ranks it first, and it is nearest its true class
    assert int(np.argmax(by_name["margin"].score)) == 0
    assert by_name["margin"].nearest_class[0] == labels[0]
    assert by_name["combined"].nearest_class.dtype == np.int64


@pytest.mark.parametrize(
    "covariance,k,d,note",
    [
        (CovarianceConfig(shrinkage="none"), 3, 10, "shrinkage 'none'"),
        (CovarianceConfig(shrinkage="oas"), 3, 10, "shrinkage 'oas'"),
        (CovarianceConfig(shrinkage="ledoit_wolf"), 3, 10, "shrinkage 'ledoit_wolf'"),
        (CovarianceConfig(shrinkage="ridge", ridge_eps=1e-12), 3, 10, "does not bound the condition number"),
        (CovarianceConfig(shrinkage="ridge"), 4, 6, "4 classes > d / 2 = 3"),
    ],
)
def test_rank_label_issues_takes_the_float64_path_where_refinement_cannot_stand_in(covariance, k, d, note):
    features, labels = classes(2, n=400, d=d, k=k)
    ranking = rank_label_issues(features, labels, n_classes=k, covariance=covariance, score="rmd")
    expected = reference_scores(features, labels, k, covariance)
    assert ranking.solver == "float64" and note in ranking.solver_note
    np.testing.assert_array_equal(ranking.rmd, expected.rmd)
    np.testing.assert_array_equal(ranking.margin, expected.margin)
    np.testing.assert_array_equal(ranking.nearest_class, expected.nearest_class)


def test_rank_label_issues_falls_back_when_refinement_does_not_converge():
    rng = np.random.default_rng(4)
    d, k = 8, 2
    labels = rng.integers(0, k, 500)
    # within-class spread over 10 decades: a ridge of 1e-9 (floor proved: 1e-9 > rcond 1e-10 * d / (1 - 1e-9))
    # still leaves a condition number ~1e10 that float32 cannot precondition; float64 Cholesky can
    rotation, _ = np.linalg.qr(rng.normal(size=(d, d)))  # not axis-aligned: float32 rounding then mixes scales
    spread = (rng.normal(size=(500, d)) * np.logspace(0, -5, d)) @ rotation.T
    features = np.eye(k, d)[labels] * 3.0 + spread
    covariance = CovarianceConfig(shrinkage="ridge", ridge_eps=1e-9, rcond=1e-11)
    ranking = rank_label_issues(features, labels, n_classes=k, covariance=covariance)
    expected = reference_scores(features, labels, k, covariance)
    assert ranking.solver == "float64" and ranking.solver_note.startswith("refined solve: ")
    np.testing.assert_array_equal(ranking.rmd, expected.rmd)


def test_rank_label_issues_warns_about_an_empty_class_and_matches_the_scorer():
    features, labels = classes(6, n=300, d=10, k=3)
    labels[labels == 1] = 0  # class 1 empty: its mean is mu_0, as in DifficultyScorer
    with pytest.warns(DegenerateClassWarning, match="no samples"):
        ranking = rank_label_issues(features, labels, n_classes=3)
    with pytest.warns(DegenerateClassWarning):
        expected = reference_scores(features, labels, 3, CovarianceConfig(shrinkage="ridge"))
    assert ranking.solver == "refined"
    np.testing.assert_allclose(ranking.rmd, expected.rmd, rtol=0, atol=1e-9 * np.abs(expected.rmd).max())
    np.testing.assert_allclose(ranking.margin, expected.margin, rtol=0, atol=1e-9 * np.abs(expected.margin).max())


def test_rank_label_issues_validates_its_inputs():
    features, labels = classes(7, n=60, d=4, k=2)
    with pytest.raises(ValueError, match="unknown label-issue score 'loss'"):
        rank_label_issues(features, labels, n_classes=2, score="loss")
    with pytest.raises(TypeError, match="covariance must be a CovarianceConfig"):
        rank_label_issues(features, labels, n_classes=2, covariance="ridge")
    with pytest.raises(ValueError, match="n_classes must be a positive integer"):
        rank_label_issues(features, labels, n_classes=0)
    bad = features.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="not finite|non-finite|NaN"):
        rank_label_issues(bad, labels, n_classes=2)
    with pytest.raises(ValueError, match="labels"):
        rank_label_issues(features, labels + 5, n_classes=2)
    with pytest.raises(ValueError, match="rank at most"):
        rank_label_issues(features[:4], labels[:4], n_classes=2, covariance=CovarianceConfig(shrinkage="none"))

"""Tests for rmd_ray.core.label_ranking: the Mahalanobis margin (hand values and a naive loop), the rank
combination (hand values, invariance), and the validation of label_issue_scores."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from rmd_ray.core import CovarianceConfig, DifficultyScorer
from rmd_ray.core.label_ranking import (
    DEFAULT_LABEL_SCORE,
    LABEL_SCORES,
    label_issue_scores,
    mahalanobis_margin,
    rank_average,
    rank_average_within,
)


def _naive_margin(d, y):
    out = []
    for row, label in zip(d, y):
        others = [row[k] for k in range(len(row)) if k != label]
        out.append(row[label] - min(others))
    return np.array(out)


def test_margin_hand_values():
    d = np.array([[1.0, 4.0, 9.0], [1.0, 4.0, 9.0], [5.0, 2.0, 2.0], [3.0, 3.0, 7.0]])
    y = np.array([0, 2, 1, 1])
    # row 0: own 1, best other 4 -> -3 (the given class is nearest)
    # row 1: own 9, best other 1 -> 8 (class 0 is nearer by 8)
    # row 2: own 2, best other 2 (class 2 ties) -> 0
    # row 3: own 3, best other 3 -> 0
    np.testing.assert_array_equal(mahalanobis_margin(d, y), [-3.0, 8.0, 0.0, 0.0])


def test_margin_two_classes_and_too_few():
    np.testing.assert_array_equal(mahalanobis_margin(np.array([[2.0, 5.0]]), np.array([1])), [3.0])
    with pytest.raises(ValueError, match="the margin needs at least 2 classes"):
        mahalanobis_margin(np.ones((3, 1)), np.zeros(3, int))


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(1, 12), st.integers(2, 6)), elements=st.floats(0, 1e3)),
    st.data(),
)
def test_margin_equals_naive_loop_and_sign_marks_a_nearer_class(d, data):
    y = np.array(data.draw(st.lists(st.integers(0, d.shape[1] - 1), min_size=d.shape[0], max_size=d.shape[0])))
    margin = mahalanobis_margin(d, y)
    np.testing.assert_array_equal(margin, _naive_margin(d, y))
    nearer = np.array([any(row[k] < row[label] for k in range(len(row)) if k != label) for row, label in zip(d, y)])
    np.testing.assert_array_equal(margin > 0, nearer)


def test_margin_from_a_fitted_scorer_flags_a_flipped_label():
    rng = np.random.default_rng(0)
    means = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    y = np.repeat(np.arange(3), 50)
    x = means[y] + rng.normal(size=(150, 2))
    scorer = DifficultyScorer(n_classes=3, covariance=CovarianceConfig()).fit(x, y)
    d = scorer.class_distances(x)
    true_margin = mahalanobis_margin(d, y)
    flipped = (y + 1) % 3
    flipped_margin = mahalanobis_margin(d, flipped)
    assert (flipped_margin > true_margin).all()
    assert (true_margin < 0).mean() > 0.95 and (flipped_margin > 0).mean() > 0.95


def test_rank_average_hand_values_and_ties():
    # ranks of [3, 1, 2] are [3, 1, 2]; of [10, 30, 20] are [1, 3, 2]: mean / 3 -> [2, 2, 2] / 3
    np.testing.assert_allclose(rank_average([3, 1, 2], [10, 30, 20]), [2 / 3, 2 / 3, 2 / 3])
    # ties share the average rank: [5, 5, 1] -> [2.5, 2.5, 1] / 3
    np.testing.assert_allclose(rank_average([5, 5, 1]), [2.5 / 3, 2.5 / 3, 1 / 3])
    with pytest.raises(ValueError, match="rank_average needs at least one score array"):
        rank_average()


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, st.integers(2, 30), elements=st.floats(-100, 100)),
       arrays(np.float64, st.integers(2, 30), elements=st.floats(-100, 100)))
def test_combined_is_invariant_to_monotone_transforms(r, m):
    n = min(len(r), len(m))
    r, m = r[:n], m[:n]
    base = label_issue_scores(r, m, score="combined")
    # scaling by powers of two is exact in floating point, so the order (ties included) is kept exactly
    np.testing.assert_allclose(label_issue_scores(2.0 * r, m / 4.0, score="combined"), base)
    assert ((base > 0) & (base <= 1)).all()


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, st.integers(2, 40), elements=st.sampled_from([-2.5, -1.0, 0.0, 0.5, 3.0, 7.25])),
       st.integers(1, 5), st.randoms(use_true_random=False))
def test_ranking_part_by_part_against_sorted_columns_equals_ranking_the_whole(r, cuts, random):
    # few distinct values: many ties, which must get rankdata's average rank exactly
    m = np.asarray(random.sample(list(r) * 2, len(r)))
    whole = rank_average(r, m)
    references = (np.sort(r), np.sort(m))
    bounds = sorted({0, len(r), *(random.randrange(len(r)) for _ in range(cuts))})
    parts = [rank_average_within(references, (r[a:b], m[a:b])) for a, b in zip(bounds, bounds[1:])]
    assert np.concatenate(parts).tobytes() == whole.tobytes()  # bit for bit, ties included


def test_rank_average_within_hand_values_and_errors():
    # the rows [5, 1] of all rows [5, 5, 1]: ranks 2.5 and 1, over J N = 3
    np.testing.assert_array_equal(rank_average_within((np.array([1.0, 5.0, 5.0]),), ([5.0, 1.0],)), [2.5 / 3, 1 / 3])
    with pytest.raises(ValueError, match="one sorted reference per score array"):
        rank_average_within((np.zeros(2),), ())
    with pytest.raises(ValueError, match="rmd and margin must be finite"):
        rank_average_within((np.zeros(2),), ([np.inf],))


def test_label_issue_scores_pick_the_named_ranking():
    r, m = np.array([1.0, 3.0, 2.0]), np.array([-1.0, -2.0, 5.0])
    np.testing.assert_array_equal(label_issue_scores(r, m, score="rmd"), r)
    np.testing.assert_array_equal(label_issue_scores(r, m, score="margin"), m)
    # ranks rmd [1, 3, 2], margin [2, 1, 3] -> means [1.5, 2, 2.5] / 3
    np.testing.assert_allclose(label_issue_scores(r, m, score="combined"), [0.5, 2 / 3, 2.5 / 3])
    assert LABEL_SCORES.names() == ["combined", "margin", "rmd"]
    assert DEFAULT_LABEL_SCORE in LABEL_SCORES


@pytest.mark.parametrize(
    "rmd, margin, score, match",
    [
        ([1.0], [1.0], "loss", "unknown label-issue score 'loss'; valid names: combined, margin, rmd"),
        ([1.0, 2.0], [1.0], "rmd", r"rmd and margin must be 1-D of one length, got shapes \(2,\) and \(1,\)"),
        ([[1.0]], [[1.0]], "rmd", "rmd and margin must be 1-D"),
        ([np.nan], [1.0], "combined", "rmd and margin must be finite; rescore with shrinkage='ridge'"),
    ],
)
def test_label_issue_scores_rejects(rmd, margin, score, match):
    with pytest.raises(ValueError, match=match):
        label_issue_scores(np.array(rmd), np.array(margin), score=score)

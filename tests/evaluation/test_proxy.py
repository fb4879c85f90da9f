"""rmd_ray.evaluation.proxy: group error rates on planted cases, the join by id, a full
DifficultyScorer pipeline with a known answer, validation."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from _eval_helpers import write_predictions

from rmd_ray.core import DifficultyScorer
from rmd_ray.evaluation.proxy import ProxyResult, difficulty_proxy_test, proxy_test_from_files
from rmd_ray.io.storage import write_parquet_atomic


def _naive_spearman(a, b):
    """Pearson correlation of the ranks (valid without ties)."""
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    ra -= ra.mean()
    rb -= rb.mean()
    return float(ra @ rb / math.sqrt((ra @ ra) * (rb @ rb)))


def _planted(wrong_by_rank, *, k=4, seed=0):
    """Samples whose difficulty rank (0 = hardest) and correctness are fixed by ``wrong_by_rank``."""
    rng = np.random.default_rng(seed)
    n = len(wrong_by_rank)
    ids = np.array([f"v{i:03d}" for i in rng.permutation(n)], dtype=object)
    rmd = np.sort(rng.normal(size=n) * 10)[::-1]  # strictly decreasing: rank r has the r-th largest
    labels = rng.integers(0, k, size=n)
    logits = rng.normal(size=(n, k))
    target = np.where(wrong_by_rank, (labels + 1) % k, labels)
    logits[np.arange(n), target] += 6.0
    return ids, rmd, labels, logits


def test_planted_error_rates_per_group():
    wrong = np.zeros(100, bool)
    wrong[:20] = True  # group 0: all wrong
    wrong[20:40:2] = True  # group 1: half
    wrong[40:60:4] = True  # group 2: a quarter
    wrong[99] = True  # group 4: one of 20
    ids, rmd, labels, logits = _planted(wrong)
    res = difficulty_proxy_test(ids, rmd, ids, labels, logits, n_groups=5)
    np.testing.assert_array_equal(res.error_rate, [1.0, 0.5, 0.25, 0.0, 0.05])
    assert res.group_size.tolist() == [20] * 5
    assert res.error_overall == pytest.approx(36 / 100)
    assert res.n_samples == 100 and res.n_groups == 5
    np.testing.assert_allclose(res.score_mean, [rmd[i : i + 20].mean() for i in range(0, 100, 20)])
    loss = -(logits[np.arange(100), labels] - np.log(np.exp(logits).sum(axis=1)))
    assert res.spearman == pytest.approx(_naive_spearman(rmd, loss), abs=1e-12)
    assert res.spearman > 0.3  # the planted errors sit at the hard end
    assert res.to_dict()["error_rate"] == [1.0, 0.5, 0.25, 0.0, 0.05]


def test_sides_are_joined_by_id_not_by_position():
    wrong = np.zeros(30, bool)
    wrong[:6] = True
    ids, rmd, labels, logits = _planted(wrong, seed=1)
    reference = difficulty_proxy_test(ids, rmd, ids, labels, logits, n_groups=5)
    perm = np.random.default_rng(2).permutation(30)
    shuffled = difficulty_proxy_test(ids, rmd, ids[perm], labels[perm], logits[perm], n_groups=5)
    np.testing.assert_array_equal(shuffled.error_rate, [1.0, 0, 0, 0, 0])
    np.testing.assert_array_equal(shuffled.error_rate, reference.error_rate)
    assert shuffled.spearman == pytest.approx(reference.spearman, abs=1e-12)
    # pairing by position instead would have scrambled the answer
    by_position = difficulty_proxy_test(ids, rmd, ids, labels[perm], logits[perm], n_groups=5)
    assert not np.array_equal(by_position.error_rate, reference.error_rate)


def test_dict_round_trip_through_json():
    import json

    wrong = np.zeros(60, bool)
    wrong[:15] = True
    ids, rmd, labels, logits = _planted(wrong)
    res = difficulty_proxy_test(ids, rmd, ids, labels, logits, n_groups=3)
    back = ProxyResult.from_dict(json.loads(json.dumps(res.to_dict())))
    for field in ("error_rate", "group_size", "score_mean"):
        np.testing.assert_array_equal(getattr(back, field), getattr(res, field))
    assert back.group_size.dtype == np.int64
    assert (back.spearman, back.error_overall, back.n_samples) == (res.spearman, res.error_overall, res.n_samples)
    nan_rho = ProxyResult.from_dict({**res.to_dict(), "spearman": None})
    assert math.isnan(nan_rho.spearman)


def test_from_dict_errors():
    good = {
        "error_rate": [0.5],
        "group_size": [2],
        "score_mean": [1.0],
        "spearman": 0.1,
        "error_overall": 0.5,
        "n_samples": 2,
    }
    with pytest.raises(ValueError, match=r"needs the keys .*'n_samples'.*got \['error_rate'\]"):
        ProxyResult.from_dict({"error_rate": [0.5]})
    with pytest.raises(ValueError, match="needs the keys.*got list"):
        ProxyResult.from_dict([0.5])
    with pytest.raises(ValueError, match=r"non-empty lists of one length, got lengths \[2, 1, 1\]"):
        ProxyResult.from_dict({**good, "error_rate": [0.5, 0.1]})
    with pytest.raises(ValueError, match=r"got lengths \[0, 0, 0\]"):
        ProxyResult.from_dict({**good, "error_rate": [], "group_size": [], "score_mean": []})


def test_unequal_groups_follow_array_split():
    wrong = np.array([1, 1, 0, 0, 1, 0, 0, 0, 0, 1], bool)
    ids, rmd, labels, logits = _planted(wrong, seed=3)
    res = difficulty_proxy_test(ids, rmd, ids, labels, logits, n_groups=3)
    assert res.group_size.tolist() == [4, 3, 3]
    np.testing.assert_allclose(res.error_rate, [2 / 4, 1 / 3, 1 / 3])


def test_ties_in_the_score_are_broken_by_id():
    ids = ["b", "a", "c", "d"]
    labels = np.array([0, 0, 0, 0])
    logits = np.array([[3.0, 0], [0, 3.0], [3.0, 0], [2.0, 0]])  # only "a" is wrong
    res = difficulty_proxy_test(ids, [1.0, 1.0, 0.0, -1.0], ids, labels, logits, n_groups=4)
    np.testing.assert_array_equal(res.error_rate, [1.0, 0.0, 0.0, 0.0])  # a before b


def test_full_pipeline_with_difficulty_scorer_finds_the_flipped_labels():
    # Three well separated Gaussian classes. 12 of 60 validation samples carry a wrong label; a
    # Gaussian classifier predicts their true class, so exactly these are misclassified, and RMD
    # (computed with the given label by a scorer fitted on train) puts exactly them in the hardest fifth.
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0, 0, 0], [8, 0, 0, 0], [0, 8, 0, 0]])
    train_y = np.repeat([0, 1, 2], 100)
    train_x = centres[train_y] + rng.normal(size=(300, 4))
    true_y = np.repeat([0, 1, 2], 20)
    val_x = centres[true_y] + rng.normal(size=(60, 4))
    flipped = np.zeros(60, bool)
    flipped[rng.choice(60, 12, replace=False)] = True
    given_y = np.where(flipped, (true_y + 1) % 3, true_y)

    scorer = DifficultyScorer(n_classes=3).fit(train_x, train_y)
    _, val_rmd = scorer.score(val_x, given_y)
    logits = -0.5 * scorer.class_distances(val_x)
    ids = np.array([f"val/{i:02d}" for i in range(60)], dtype=object)

    res = difficulty_proxy_test(ids, val_rmd, ids[::-1], given_y[::-1], logits[::-1], n_groups=5)
    np.testing.assert_array_equal(res.error_rate, [1.0, 0.0, 0.0, 0.0, 0.0])
    assert res.error_overall == pytest.approx(12 / 60)
    assert res.spearman > 0.5


def test_constant_loss_gives_nan_spearman_with_a_warning():
    # documented result: the groups are well defined, the rank correlation is not
    ids = ["a", "b", "c", "d"]
    logits = np.zeros((4, 3))
    with pytest.warns(RuntimeWarning, match=r"same loss.*reported as NaN"):
        res = difficulty_proxy_test(ids, [4.0, 3, 2, 1], ids, [0, 1, 2, 0], logits, n_groups=2)
    assert math.isnan(res.spearman)
    np.testing.assert_array_equal(res.error_rate, [0.5, 0.5])  # argmax ties -> class 0


# ---------------------------------------------------------------------------------------------- files


def test_from_files_equals_the_array_version(tmp_path):
    wrong = np.zeros(40, bool)
    wrong[:8] = True
    ids, rmd, labels, logits = _planted(wrong, seed=4)
    scores = pa.table({"id": ids.astype(str), "label": labels.astype(np.int64), "rmd": rmd, "md": -rmd})
    scores_path = write_parquet_atomic(scores, tmp_path / "scores.parquet")
    pred_path = write_predictions(tmp_path / "pred.parquet", ids[::-1], labels[::-1], logits[::-1])
    res = proxy_test_from_files(scores_path, pred_path, n_groups=4)
    ref = difficulty_proxy_test(ids, rmd, ids, labels, logits.astype(np.float32), n_groups=4)
    np.testing.assert_array_equal(res.error_rate, ref.error_rate)
    np.testing.assert_array_equal(res.error_rate, [0.8, 0, 0, 0])
    flipped = proxy_test_from_files(scores_path, pred_path, n_groups=4, score="md")
    np.testing.assert_array_equal(flipped.error_rate, [0, 0, 0, 0.8])
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['kmeans'\]"):
        proxy_test_from_files(scores_path, pred_path, score="kmeans")
    with pytest.raises(FileNotFoundError, match=r"scores file"):
        proxy_test_from_files(tmp_path / "nope.parquet", pred_path)

    relabelled = write_predictions(tmp_path / "relabelled.parquet", ids, (labels + 1) % 4, logits)
    with pytest.raises(ValueError, match=r"40 sample\(s\) were scored with a different label"):
        proxy_test_from_files(scores_path, relabelled)


def test_nan_scores_in_a_file_raise(tmp_path):
    scores = pa.table({"id": ["a", "b"], "label": [0, 1], "rmd": pa.array([1.0, None], pa.float64())})
    scores_path = write_parquet_atomic(scores, tmp_path / "scores.parquet")
    pred_path = write_predictions(tmp_path / "pred.parquet", ["a", "b"], [0, 1], [[1, 0], [0, 1]])
    with pytest.raises(ValueError, match=r"1 score\(s\) are NaN or inf \(e.g. id 'b'\)"):
        proxy_test_from_files(scores_path, pred_path, n_groups=2)


# ---------------------------------------------------------------------------------------------- validation

IDS = ["a", "b", "c", "d"]
LOGITS = np.array([[1.0, 0], [0, 1], [1, 0], [0, 1]])
LABELS = np.array([0, 1, 1, 0])
SCORES = np.array([3.0, 2, 1, 0])


def test_missing_ids_on_either_side_raise_with_both_counts():
    msg = r"2 scored id\(s\) have no prediction and 1 predicted id\(s\) have no score"
    with pytest.raises(ValueError, match=msg):
        difficulty_proxy_test(IDS, SCORES, ["a", "b", "e"], [0, 1, 1], LOGITS[:3])


def test_validation_errors():
    ok = dict(n_groups=2)
    with pytest.raises(ValueError, match=r"score_ids repeat 1 id\(s\), e.g. 'a'"):
        difficulty_proxy_test(["a", "a", "c", "d"], SCORES, IDS, LABELS, LOGITS, **ok)
    with pytest.raises(ValueError, match=r"pred_ids repeat 1 id\(s\), e.g. 'd'"):
        difficulty_proxy_test(IDS, SCORES, ["a", "b", "d", "d"], LABELS, LOGITS, **ok)
    with pytest.raises(ValueError, match=r"1 score\(s\) are NaN or inf \(e.g. id 'c'\)"):
        difficulty_proxy_test(IDS, [3.0, 2, np.nan, 0], IDS, LABELS, LOGITS, **ok)
    with pytest.raises(ValueError, match=r"all 4 scores equal 1"):
        difficulty_proxy_test(IDS, np.ones(4), IDS, LABELS, LOGITS, **ok)
    with pytest.raises(ValueError, match=r"one value per score id \(4\)"):
        difficulty_proxy_test(IDS, SCORES[:3], IDS, LABELS, LOGITS, **ok)
    with pytest.raises(ValueError, match=r"one value per score id"):
        difficulty_proxy_test(IDS, np.array(["x"] * 4), IDS, LABELS, LOGITS, **ok)
    with pytest.raises(ValueError, match=r"4 pred_ids, 3 labels and 4 logit rows"):
        difficulty_proxy_test(IDS, SCORES, IDS, LABELS[:3], LOGITS, **ok)
    with pytest.raises(ValueError, match=r"K >= 2"):
        difficulty_proxy_test(IDS, SCORES, IDS, [0, 0, 0, 0], np.zeros((4, 1)), **ok)
    with pytest.raises(ValueError, match=r"labels must be a 1-D integer array"):
        difficulty_proxy_test(IDS, SCORES, IDS, LABELS.astype(float), LOGITS, **ok)
    with pytest.raises(ValueError, match=r"labels must lie in 0..1"):
        difficulty_proxy_test(IDS, SCORES, IDS, [0, 1, 2, 0], LOGITS, **ok)
    bad_logits = LOGITS.copy()
    bad_logits[1, 0] = np.inf
    with pytest.raises(ValueError, match=r"logits for id 'b' hold NaN or inf"):
        difficulty_proxy_test(IDS, SCORES, IDS, LABELS, bad_logits, **ok)
    with pytest.raises(ValueError, match=r"1 sample\(s\) were scored with a different label.*id 'd'"):
        difficulty_proxy_test(IDS, SCORES, IDS, LABELS, LOGITS, score_labels=[0, 1, 1, 1], **ok)
    with pytest.raises(ValueError, match=r"score_labels must have shape \(4,\)"):
        difficulty_proxy_test(IDS, SCORES, IDS, LABELS, LOGITS, score_labels=[0, 1], **ok)
    for bad in (0, 5, True, 2.5):
        with pytest.raises(ValueError, match=r"n_groups must be an integer in 1..4"):
            difficulty_proxy_test(IDS, SCORES, IDS, LABELS, LOGITS, n_groups=bad)
    with pytest.raises(ValueError, match=r"score_ids must be 1-D"):
        difficulty_proxy_test(np.array([IDS]), SCORES, IDS, LABELS, LOGITS, **ok)


def test_a_single_class_is_a_valid_proxy_input():
    # all labels one class (K = 2 columns): well defined, nothing special
    res = difficulty_proxy_test(IDS, SCORES, IDS, [0, 0, 0, 0], LOGITS, n_groups=2)
    assert isinstance(res, ProxyResult)
    np.testing.assert_array_equal(res.error_rate, [0.5, 0.5])

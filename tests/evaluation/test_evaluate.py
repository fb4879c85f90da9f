"""rmd_ray.evaluation.evaluate: loading with id dedupe, hand-computed metrics of one run, comparison."""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _eval_helpers import synthetic_run, write_predictions

from rmd_ray.core.metrics import SingleClassWarning, evaluate_predictions
from rmd_ray.evaluation.evaluate import (
    DuplicatePredictionsWarning,
    compare_runs,
    dedupe_predictions,
    evaluate_run,
    load_predictions,
    metrics_table,
)

# Four 2-class samples, probabilities chosen by hand (see test_evaluate_run_hand_computed).
P = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
Y = np.array([0, 1, 1, 0])
IDS = ["a", "b", "c", "d"]


def _hand_file(tmp_path, *, dupes=()):
    rows = list(range(4)) + list(dupes)
    return write_predictions(
        tmp_path / "pred.parquet", [IDS[i] for i in rows], Y[rows], np.log(P[rows]).astype(np.float32)
    )


# ---------------------------------------------------------------------------------------------- loading


def test_load_round_trip_keeps_order_and_values(tmp_path):
    ids, labels, logits = synthetic_run(50, 4, seed=0)
    path = write_predictions(tmp_path / "p.parquet", ids, labels, logits)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no duplicates -> no warning
        got_ids, got_labels, got_logits = load_predictions(path)
    assert got_ids.tolist() == ids.tolist()
    assert got_labels.dtype == np.int64 and got_labels.tolist() == labels.tolist()
    assert got_logits.dtype == np.float64
    np.testing.assert_array_equal(got_logits, logits.astype(np.float64))


def test_identical_duplicates_are_dropped_with_their_count(tmp_path):
    ids, labels, logits = synthetic_run(10, 3, seed=1)
    # padded distributed eval: rank 1 repeats samples 0, 1 and 0 again to fill its last batch
    rows = list(range(10)) + [0, 1, 0]
    path = write_predictions(tmp_path / "p.parquet", ids[rows], labels[rows], logits[rows])
    with pytest.warns(DuplicatePredictionsWarning, match=r"dropped 3 duplicated row\(s\).*10 distinct ids"):
        got_ids, got_labels, got_logits = load_predictions(path)
    assert got_ids.tolist() == ids.tolist()
    np.testing.assert_array_equal(got_logits, logits.astype(np.float64))
    assert dedupe_predictions(ids[rows], labels[rows], logits[rows])[3] == 3


def test_dedupe_keeps_first_occurrence_order():
    ids = np.array(["z", "a", "z", "m", "a"], dtype=object)
    labels = np.array([1, 0, 1, 2, 0])
    logits = np.array([[0.0, 1, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]])
    out_ids, out_labels, out_logits, n = dedupe_predictions(ids, labels, logits)
    assert out_ids.tolist() == ["z", "a", "m"] and out_labels.tolist() == [1, 0, 2] and n == 2
    np.testing.assert_array_equal(out_logits, logits[[0, 1, 3]])


def test_float_noise_below_tolerance_counts_as_identical_but_not_when_bitwise_is_asked():
    ids = np.array(["x", "x"], dtype=object)
    logits = np.array([[2.0, -1.0], [2.0 + 1e-7, -1.0]])
    assert dedupe_predictions(ids, [0, 0], logits)[3] == 1
    with pytest.raises(ValueError, match=r"id 'x' appears more than once with different logits"):
        dedupe_predictions(ids, [0, 0], logits, rtol=0.0, atol=0.0)


def test_conflicting_logits_raise_naming_the_id_and_count(tmp_path):
    ids, labels, logits = synthetic_run(6, 3, seed=2)
    bad = logits.copy()
    bad[[2, 4]] += 0.5  # a second model's predictions for s0002 and s0004
    path = write_predictions(
        tmp_path / "p.parquet",
        np.r_[ids, ids[[2, 4]]],
        np.r_[labels, labels[[2, 4]]],
        np.r_[logits, bad[[2, 4]]],
    )
    msg = r"id 's0002' appears more than once with different logits.*2 id\(s\) conflict"
    with pytest.raises(ValueError, match=msg):
        load_predictions(path)


def test_conflicting_label_raises_naming_the_id(tmp_path):
    path = write_predictions(tmp_path / "p.parquet", ["u", "v", "u"], [0, 1, 1], [[1, 0], [0, 1], [1, 0]])
    msg = r"id 'u' appears more than once with different label \(rows 0 and 2\)"
    with pytest.raises(ValueError, match=msg):
        load_predictions(path)


def test_dedupe_rejects_mismatched_lengths_and_shapes():
    with pytest.raises(ValueError, match=r"3 ids, 2 labels and 3 logit rows"):
        dedupe_predictions(["a", "b", "c"], [0, 1], np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"ids and labels must be 1-D and logits 2-D"):
        dedupe_predictions(["a", "b"], [0, 1], np.zeros(2))


def test_load_validation_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"does not exist"):
        load_predictions(tmp_path / "missing.parquet")
    with pytest.raises(TypeError, match=r"must be a str or os.PathLike"):
        load_predictions(3)

    pq.write_table(pa.table({"id": ["a"], "label": [0]}), tmp_path / "nologits.parquet")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['logits'\]"):
        load_predictions(tmp_path / "nologits.parquet")

    empty = pa.table(
        {
            "id": pa.array([], pa.string()),
            "label": pa.array([], pa.int64()),
            "logits": pa.array([], pa.list_(pa.float32())),
        }
    )
    pq.write_table(empty, tmp_path / "empty.parquet")
    with pytest.raises(ValueError, match=r"has no rows"):
        load_predictions(tmp_path / "empty.parquet")

    ragged = pa.table({"id": ["a", "b"], "label": [0, 1], "logits": [[0.1, 0.2], [0.1, 0.2, 0.3]]})
    pq.write_table(ragged, tmp_path / "ragged.parquet")
    with pytest.raises(ValueError, match=r"2 entries in row 0 but 3 in row 1"):
        load_predictions(tmp_path / "ragged.parquet")

    nulls = pa.table({"id": ["a", "b"], "label": [0, 1], "logits": [[0.1, 0.2], None]})
    pq.write_table(nulls, tmp_path / "nulls.parquet")
    with pytest.raises(ValueError, match=r"1 row\(s\) have no logits"):
        load_predictions(tmp_path / "nulls.parquet")

    float_labels = pa.table({"id": ["a"], "label": [0.0], "logits": [[0.1, 0.2]]})
    pq.write_table(float_labels, tmp_path / "float_labels.parquet")
    with pytest.raises(ValueError, match=r"label must be an integer column"):
        load_predictions(tmp_path / "float_labels.parquet")

    scalar = pa.table({"id": ["a"], "label": [0], "logits": [0.5]})
    pq.write_table(scalar, tmp_path / "scalar.parquet")
    with pytest.raises(ValueError, match=r"must be a list of floats per row"):
        load_predictions(tmp_path / "scalar.parquet")


# ---------------------------------------------------------------------------------------------- one run


def test_evaluate_run_hand_computed(tmp_path):
    # conf = .9 (right), .8 (wrong), .7 (right), .6 (wrong); N = 4 < 15 so every sample is its own
    # equal-mass bin, and the four confidences also fall in four different equal-width bins.
    path = _hand_file(tmp_path)
    res = evaluate_run(path, rejection_rates=[0.0, 0.25, 0.5, 0.75])
    m = res["metrics"]
    assert m["n_samples"] == 4
    assert m["acc"] == 0.5
    assert m["ece_mass"] == pytest.approx((0.1 + 0.8 + 0.3 + 0.6) / 4, abs=1e-6)
    assert m["ece_width"] == pytest.approx(0.45, abs=1e-6)
    assert m["nll"] == pytest.approx(-np.mean(np.log([0.9, 0.2, 0.7, 0.4])), abs=1e-6)
    assert m["brier"] == pytest.approx((0.02 + 1.28 + 0.18 + 0.72) / 4, abs=1e-6)
    # risk of the k most confident: 0, 1/2, 1/3, 2/4
    assert m["aurc"] == pytest.approx((0 + 1 / 2 + 1 / 3 + 1 / 2) / 4, abs=1e-9)
    # correct {.9, .7} vs wrong {.8, .6}: 3 of 4 pairs ordered
    assert m["msp_auroc"] == pytest.approx(0.75)
    # reject 0, 1, 2, 3 least confident: acc of the rest
    np.testing.assert_allclose(res["accuracy_rejection"], [0.5, 2 / 3, 0.5, 1.0])
    assert res["n_duplicates_dropped"] == 0
    assert res["metadata"]["model"] == "tiny" and res["metadata"]["epochs"] == 3
    mass = res["reliability"]["mass"]
    assert mass.count.tolist() == [1, 1, 1, 1]
    np.testing.assert_allclose(np.sort(mass.confidence), [0.6, 0.7, 0.8, 0.9], atol=1e-6)
    width = res["reliability"]["width"]
    ece_from_width = np.sum(width.count / width.n_samples * np.abs(width.accuracy - width.confidence))
    assert ece_from_width == pytest.approx(m["ece_width"])


def test_evaluate_run_metrics_are_those_of_the_deduplicated_set(tmp_path):
    clean = evaluate_run(_hand_file(tmp_path))
    (tmp_path / "d").mkdir()
    with pytest.warns(DuplicatePredictionsWarning, match=r"dropped 3"):
        padded = evaluate_run(_hand_file(tmp_path / "d", dupes=(1, 1, 3)))
    assert padded["n_duplicates_dropped"] == 3
    assert padded["metrics"] == clean["metrics"]
    # counting the repeats would have changed the numbers: 2 right of 7
    with_dupes = evaluate_predictions(np.log(P[[0, 1, 2, 3, 1, 1, 3]]), Y[[0, 1, 2, 3, 1, 1, 3]])
    assert with_dupes["acc"] == pytest.approx(2 / 7) != clean["metrics"]["acc"]
    assert padded["ids_fingerprint"] == clean["ids_fingerprint"]


def test_default_rejection_rates_leave_at_least_one_sample(tmp_path):
    path = write_predictions(tmp_path / "p.parquet", ["a", "b", "c"], [0, 1, 1], [[2, 0], [0, 1], [1, 0]])
    res = evaluate_run(path)
    # N = 3: rates up to 0.9 reject rint(0.9 * 3) = 3 -> dropped; 0.8 rejects rint(2.4) = 2, kept
    assert res["rejection_rates"].max() == pytest.approx(0.8)
    assert res["accuracy_rejection"][0] == pytest.approx(2 / 3)


# ---------------------------------------------------------------------------------------------- bad input


def test_probabilities_given_as_logits_are_treated_as_logits(tmp_path):
    # A documented result, not an error: rows that happen to sum to 1 are still logits, so softmax is
    # applied again (flattening them). The accuracy is unchanged, the confidences are not.
    path = write_predictions(tmp_path / "p.parquet", IDS, Y, P)
    m = evaluate_run(path)["metrics"]
    softened = np.exp(P) / np.exp(P).sum(axis=1, keepdims=True)
    assert m["acc"] == 0.5
    assert m["nll"] == pytest.approx(-np.mean(np.log(softened[np.arange(4), Y])), abs=1e-6)


def test_label_outside_the_logit_columns_raises(tmp_path):
    path = write_predictions(tmp_path / "p.parquet", ["a", "b"], [0, 2], [[1, 0], [0, 1]])
    with pytest.raises(ValueError, match=r"label 2 outside 0..1"):
        evaluate_run(path)


def test_nan_logits_raise(tmp_path):
    path = write_predictions(tmp_path / "p.parquet", ["a", "b"], [0, 1], [[1, 0], [np.nan, 1]])
    with pytest.raises(ValueError, match=r"logits row 1 holds NaN or inf"):
        evaluate_run(path)


def test_single_class_all_correct_warns_and_leaves_detection_out(tmp_path):
    # every sample of class 1 and predicted so: accuracy 1, detection undefined -> keys absent, never NaN
    path = write_predictions(tmp_path / "p.parquet", ["a", "b", "c"], [1, 1, 1], [[0, 2], [0, 3], [1, 4]])
    with pytest.warns(SingleClassWarning, match=r"all 3 predictions are correct"):
        res = evaluate_run(path)
    assert res["metrics"]["acc"] == 1.0 and "msp_auroc" not in res["metrics"]
    table = metrics_table({"one-class": res})
    assert table.column("msp_auroc").to_pylist() == [None]
    assert table.column("acc").to_pylist() == [1.0]


# ---------------------------------------------------------------------------------------------- several runs


def test_compare_runs_tabulates_each_run_in_order(tmp_path):
    paths = {}
    for name, seed in (("ce", 3), ("proposed", 4)):
        paths[name] = write_predictions(tmp_path / f"{name}.parquet", *synthetic_run(80, 5, seed=seed))
    table = compare_runs(paths)
    assert table.column("run").to_pylist() == ["ce", "proposed"]
    assert table.column_names[:3] == ["run", "n_samples", "n_duplicates_dropped"]
    for i, name in enumerate(paths):
        expected = evaluate_predictions(*reversed(load_predictions(paths[name])[1:]))
        for key in ("acc", "ece_mass", "ece_width", "nll", "brier", "aurc", "msp_auroc", "msp_fpr_at_95_tpr"):
            assert table.column(key)[i].as_py() == pytest.approx(expected[key])
    assert table.column("n_samples").to_pylist() == [80, 80]


def test_compare_runs_warns_when_the_runs_saw_different_samples(tmp_path):
    ids, labels, logits = synthetic_run(30, 3, seed=5)
    a = write_predictions(tmp_path / "a.parquet", ids, labels, logits)
    b = write_predictions(tmp_path / "b.parquet", ids[:-1], labels[:-1], logits[:-1])
    with pytest.warns(UserWarning, match=r"different sets of samples"):
        compare_runs({"a": a, "b": b})


def test_compare_runs_validation():
    with pytest.raises(ValueError, match=r"non-empty dict"):
        compare_runs({})
    with pytest.raises(ValueError, match=r"non-empty dict"):
        compare_runs(["a.parquet"])
    with pytest.raises(ValueError, match=r"keys must be non-empty strings"):
        compare_runs({1: "a.parquet"})

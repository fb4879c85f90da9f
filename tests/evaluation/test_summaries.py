"""Evaluation streams: per-row summaries read batch by batch give the in-memory metrics (to 1e-9), and the
same validation, whatever the batching."""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _eval_helpers import synthetic_run, write_predictions
from hypothesis import given, settings
from hypothesis import strategies as st

from rmd_ray.core.metrics import (
    evaluate_predictions,
    metrics_from_summaries,
    reliability_diagram_data,
    row_summaries,
    softmax,
)
from rmd_ray.evaluation.evaluate import evaluate_run
from rmd_ray.evaluation.summaries import summarise_predictions
from rmd_ray.io.parts import write_manifest


def _assert_close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12), key


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 60), k=st.integers(2, 6), cut=st.integers(1, 59), seed=st.integers(0, 10**6))
def test_summaries_of_any_two_batches_give_the_metrics_of_all_rows(n, k, cut, seed):
    _, labels, logits = synthetic_run(n, k, seed=seed)
    cut = min(cut, n - 1)
    halves = [row_summaries(logits[:cut], labels[:cut]), row_summaries(logits[cut:], labels[cut:])]
    joined = {c: np.concatenate([h[c] for h in halves]) for c in halves[0]}
    with warnings.catch_warnings():  # an all-correct draw warns in both paths alike: the values are compared
        warnings.simplefilter("ignore")
        _assert_close(metrics_from_summaries(joined), evaluate_predictions(logits, labels))


def test_row_summaries_against_a_naive_reference():
    _, labels, logits = synthetic_run(30, 5, seed=3)
    s = row_summaries(logits, labels)
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    onehot = np.eye(5)[labels]
    np.testing.assert_allclose(s["confidence"], p.max(1), rtol=1e-12)
    np.testing.assert_allclose(s["nll"], -np.log(p[np.arange(30), labels]), rtol=1e-10)
    np.testing.assert_allclose(s["brier"], ((p - onehot) ** 2).sum(1), rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(s["entropy"], -(p * np.log(p)).sum(1), rtol=1e-10)
    np.testing.assert_array_equal(s["max_logit"], z.max(1))
    np.testing.assert_array_equal(s["correct"], p.argmax(1) == labels)


def _parts_dir(tmp_path, ids, labels, logits, sizes):
    folder = tmp_path / "pred.parquet"
    folder.mkdir()
    names, start = [], 0
    for i, size in enumerate(sizes):
        name = f"part-{i:05d}.parquet"
        table = pa.table({"id": pa.array(ids[start:start + size], pa.string()),
                          "label": pa.array(labels[start:start + size], pa.int64()),
                          "logits": pa.array(list(logits[start:start + size]), pa.list_(pa.float32())),
                          "error": pa.array([""] * size, pa.string())})
        pq.write_table(table, folder / name, row_group_size=7)  # several row groups per part
        names.append(name)
        start += size
    write_manifest(str(folder), names, rows=start, metadata={"loss": "ce"})
    return folder


def test_evaluate_run_streams_parts_and_row_groups_to_the_in_memory_numbers(tmp_path):
    ids, labels, logits = synthetic_run(120, 7, seed=4)
    folder = _parts_dir(tmp_path, ids, labels, logits, [50, 1, 69])
    res = evaluate_run(folder)
    _assert_close(res["metrics"], evaluate_predictions(logits.astype(np.float64), labels))
    for binning in ("mass", "width"):
        want = reliability_diagram_data(softmax(logits.astype(np.float64)), labels, binning=binning)
        got = res["reliability"][binning]
        for field in ("bin_index", "lower", "upper", "confidence", "accuracy", "count"):
            np.testing.assert_allclose(getattr(got, field), getattr(want, field), rtol=1e-12)
    small = summarise_predictions(str(folder), batch_rows=3)  # batches smaller than a row group
    assert small.n_classes == 7 and small.ids.tolist() == ids.tolist()


def test_repeats_across_batches_are_dropped_and_conflicts_named(tmp_path):
    ids, labels, logits = synthetic_run(20, 3, seed=5)
    rows = list(range(20)) + [3, 17]
    path = write_predictions(tmp_path / "p.parquet", ids[rows], labels[rows], logits[rows])
    got = summarise_predictions(str(path), batch_rows=8)
    assert got.n_dropped == 2 and got.ids.tolist() == ids.tolist()
    bad = logits.copy()
    bad[17] = bad[17][::-1]  # another model's prediction for s0017, in the last batch
    path = write_predictions(tmp_path / "q.parquet", ids[rows], labels[rows], np.r_[logits[:20], bad[[3, 17]]])
    with pytest.raises(ValueError, match=r"id 's0017' appears more than once with different logits \(rows 17 and 21\)"):
        summarise_predictions(str(path), batch_rows=8)


def test_ragged_logits_in_a_later_batch_name_the_row(tmp_path):
    table = pa.table({"id": [f"r{i}" for i in range(10)], "label": [0] * 10,
                      "logits": [[0.1, 0.2]] * 9 + [[0.1, 0.2, 0.3]]})
    pq.write_table(table, tmp_path / "ragged.parquet")
    with pytest.raises(ValueError, match=r"logits have 2 entries in row 0 but 3 in row 9"):
        summarise_predictions(str(tmp_path / "ragged.parquet"), batch_rows=4)


def _with_actor_summaries(folder, *, labels_override=None):
    """The summary columns prediction actors add (fixed-size logits, as the pipeline writes), in place."""
    from rmd_ray.distributed.inference.stages import feature_column, prediction_summaries

    for part in sorted(folder.glob("part-*.parquet")):
        table = pq.read_table(part, columns=["id", "label", "logits", "error"])
        logits = np.stack(table.column("logits").to_numpy(zero_copy_only=False)).astype(np.float32)
        labels = table.column("label").to_numpy() if labels_override is None else labels_override(table)
        ok = np.asarray([e == "" for e in table.column("error").to_pylist()])
        out = table.set_column(table.schema.get_field_index("logits"), "logits", feature_column(logits))
        out = out.set_column(out.schema.get_field_index("label"), "label", pa.array(labels, pa.int64()))
        for name, values in prediction_summaries(logits, labels, ok).items():
            out = out.append_column(name, pa.array(values))
        pq.write_table(out, part)


def test_summaries_the_prediction_actors_stored_equal_those_of_the_logits(tmp_path):
    ids, labels, logits = synthetic_run(90, 6, seed=8)
    folder = _parts_dir(tmp_path, ids, labels, logits, [40, 50])
    from_logits = summarise_predictions(str(folder))
    _with_actor_summaries(folder)
    stored = summarise_predictions(str(folder))
    assert stored.n_classes == 6 and stored.ids.tolist() == from_logits.ids.tolist()
    for name, values in from_logits.columns.items():
        np.testing.assert_array_equal(stored.columns[name], values, err_msg=name)
    _assert_close(evaluate_run(folder)["metrics"], evaluate_predictions(logits.astype(np.float64), labels))
    # a row whose label is not one of the model's classes: named, as the logits path names it
    _with_actor_summaries(folder, labels_override=lambda t: np.where(np.arange(t.num_rows) == 4, 9,
                                                                       t.column("label").to_numpy()))
    with pytest.raises(ValueError, match=r"row 4 \(id 's0004'\) has label 9, not one of the model's classes"):
        summarise_predictions(str(folder))

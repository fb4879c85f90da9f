"""The validation split as two lazy views of a planned source: a partition by id, read back in tasks.

The views of a Parquet source are built and read without Ray (planning reads footers, ``read_shard``
reads a file); the in-memory source and the task-driven :func:`split_source` need the ``ray_local``
instance and carry the ``ray`` marker.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rmd_ray.distributed.sources.holdout import VAL_SPLIT_FILE, split_source, split_views, write_val_split
from rmd_ray.distributed.sources.plan import limit_source, open_source, read_shard
from rmd_ray.io import storage

CLASSES = ("a", "b", "c")


def _parquet(path, *, labels, ids=None, row_group=7):
    ids = ids if ids is not None else [f"r{i:03d}" for i in range(len(labels))]
    table = pa.table({
        "id": ids,
        "label": pa.array(labels, pa.int64()),
        "image": [b"not decoded by a split"] * len(labels),
    }).replace_schema_metadata({b"classes": b'["a", "b", "c"]'})
    pq.write_table(table, path, row_group_size=row_group)
    return f"parquet:{path}"


def _ids_labels(source):
    return [read_shard(s, classes=source.classes, ids_only=True) for s in source.shards]


def _read_ids(source) -> list[str]:
    return [i for s in source.shards for i in read_shard(s, classes=source.classes).column("id").to_pylist()]


LABELS = [0] * 20 + [1] * 10 + [2] * 5 + [0, 1, 2] * 5  # class sizes 25, 15, 10; classes interleaved at the end


def test_parquet_views_partition_the_ids_and_count_their_rows(tmp_path):
    source = open_source(_parquet(tmp_path / "t.parquet", labels=LABELS), shard_rows=14)
    assert len(source.shards) == 4  # row groups of 7 grouped by two: the split must cross shards
    split = split_views(source, _ids_labels(source), fraction=0.2, seed=3)
    train_ids, val_ids = _read_ids(split.train), _read_ids(split.val)
    everything = [f"r{i:03d}" for i in range(50)]
    assert sorted(train_ids + val_ids) == everything
    assert not set(train_ids) & set(val_ids)
    # stratified: 0.2 * (25, 15, 10) = 5, 3, 2
    labels = dict(zip(everything, LABELS))
    assert np.bincount([labels[i] for i in val_ids]).tolist() == [5, 3, 2]
    # the plan counts what the tasks read, shard by shard (equal-shard training and offsets rely on it)
    for view in (split.train, split.val):
        assert [s.n_rows for s in view.shards] == [
            read_shard(s, classes=CLASSES).num_rows for s in view.shards
        ]
        assert [s.index for s in view.shards] == [s.index for s in source.shards]
    assert split.train.n_rows == 40 and split.val.n_rows == 10
    # the recorded ids are the validation view's, in plan order, with their labels
    assert split.val_ids.column("id").to_pylist() == val_ids
    assert split.val_ids.column("label").to_pylist() == [labels[i] for i in val_ids]
    # the read columns are the plain reader columns (no filter bookkeeping leaks into the rows)
    columns = read_shard(split.val.shards[0], classes=CLASSES).column_names
    assert columns == ["id", "label", "image", "shard", "shard_rows"]


def test_views_are_deterministic_and_differ_from_the_source_and_each_other(tmp_path):
    source = open_source(_parquet(tmp_path / "t.parquet", labels=LABELS), shard_rows=14)
    a = split_views(source, _ids_labels(source), fraction=0.2, seed=3)
    b = split_views(source, _ids_labels(source), fraction=0.2, seed=3)
    c = split_views(source, _ids_labels(source), fraction=0.2, seed=4)
    assert a.val_ids.equals(b.val_ids)
    assert a.val.plan_fingerprint() == b.val.plan_fingerprint()
    assert not a.val_ids.equals(c.val_ids)
    fingerprints = {source.plan_fingerprint(), a.train.plan_fingerprint(), a.val.plan_fingerprint(),
                    c.val.plan_fingerprint()}
    assert len(fingerprints) == 4  # resumable stages never mistake one view's records for another's
    assert "[val of 0.2 stratified, seed 3]" in a.val.spec and "validation part" in a.val.description


def test_a_limit_is_split_and_a_view_can_be_limited(tmp_path):
    source = open_source(_parquet(tmp_path / "t.parquet", labels=LABELS), limit=30, shard_rows=14)
    split = split_views(source, _ids_labels(source), fraction=0.2, seed=0)
    ids = sorted(_read_ids(split.train) + _read_ids(split.val))
    assert ids == [f"r{i:03d}" for i in range(30)]  # rows past the limit never enter either view
    first = limit_source(split.train, 9)
    assert _read_ids(first) == _read_ids(split.train)[:9]


def test_write_val_split_records_ids_fraction_and_seed(tmp_path):
    source = open_source(_parquet(tmp_path / "t.parquet", labels=LABELS), shard_rows=14)
    split = split_views(source, _ids_labels(source), fraction=0.2, seed=3)
    path = write_val_split(split, tmp_path / "out" / "run")
    assert path.endswith(f"run/{VAL_SPLIT_FILE}")
    written = pq.read_table(path)
    assert written.select(["id", "label"]).equals(split.val_ids)
    meta = storage.read_parquet_metadata(path)
    assert meta["fraction"] == 0.2 and meta["seed"] == 3
    assert meta["n_train"] == 40 and meta["n_val"] == 10
    assert meta["source"] == f"parquet:{tmp_path / 't.parquet'}"


def test_singleton_class_stays_in_training(tmp_path):
    source = open_source(_parquet(tmp_path / "t.parquet", labels=[0, 0, 0, 0, 1, 2, 2]), shard_rows=14)
    split = split_views(source, _ids_labels(source), fraction=0.5, seed=0)
    assert sorted(split.val_ids.column("label").to_pylist()) == [0, 0, 2]
    assert "r004" in _read_ids(split.train)


def test_duplicate_ids_are_refused(tmp_path):
    spec = _parquet(tmp_path / "t.parquet", labels=[0, 0, 1, 1], ids=["x", "y", "x", "z"])
    source = open_source(spec)
    with pytest.raises(ValueError, match="ids of .* must be unique and not null"):
        split_views(source, _ids_labels(source), fraction=0.5, seed=0)


def test_missing_label_names_the_row(tmp_path):
    source = open_source(_parquet(tmp_path / "t.parquet", labels=[0, 0, 1, 1]))
    tables = _ids_labels(source)
    tables[0] = tables[0].set_column(1, "label", pa.array([0, None, 1, 1], pa.int64()))
    with pytest.raises(ValueError, match=r"row id 'r001' .* has no label \(1 such rows\)"):
        split_views(source, tables, fraction=0.5, seed=0)


def test_rows_read_must_match_the_plan(tmp_path):
    source = open_source(_parquet(tmp_path / "t.parquet", labels=[0, 0, 1, 1]))
    tables = [t.slice(0, 3) for t in _ids_labels(source)]
    with pytest.raises(ValueError, match="planned with 4 rows but 3 were read.*plan the source again"):
        split_views(source, tables, fraction=0.5, seed=0)


def test_one_table_per_shard(tmp_path):
    source = open_source(_parquet(tmp_path / "t.parquet", labels=[0, 0, 1, 1]))
    with pytest.raises(ValueError, match="0 id tables for 1 shards"):
        split_views(source, [], fraction=0.5, seed=0)


def test_all_singletons_leave_nothing_to_validate(tmp_path):
    source = open_source(_parquet(tmp_path / "t.parquet", labels=[0, 1, 2]))
    with pytest.raises(ValueError, match="no class .* has 2 samples.*--val-source"):
        split_views(source, _ids_labels(source), fraction=0.5, seed=0)


def test_a_view_is_not_split_again(tmp_path):
    source = open_source(_parquet(tmp_path / "t.parquet", labels=LABELS), shard_rows=14)
    split = split_views(source, _ids_labels(source), fraction=0.2, seed=0)
    with pytest.raises(ValueError, match="already a split view; split the planned source itself"):
        split_views(split.train, _ids_labels(split.train), fraction=0.2, seed=0)


@pytest.mark.parametrize(("fraction", "error", "match"), [
    (1.0, ValueError, r"fraction must be in \(0, 1\)"),
    (0.0, ValueError, r"fraction must be in \(0, 1\)"),
    ("0.1", TypeError, "fraction must be a float"),
])
def test_split_source_checks_fraction_before_reading(tmp_path, fraction, error, match):
    source = open_source(_parquet(tmp_path / "t.parquet", labels=[0, 0, 1, 1]))
    with pytest.raises(error, match=match):  # no Ray: it fails before any task is submitted
        split_source(source, fraction=fraction, seed=0)


def test_split_source_checks_seed_before_reading(tmp_path):
    source = open_source(_parquet(tmp_path / "t.parquet", labels=[0, 0, 1, 1]))
    with pytest.raises(TypeError, match="seed must be an int"):
        split_source(source, fraction=0.5, seed=0.5)


# ------------------------------------------------------------------------------------------ with Ray
@pytest.mark.ray
@pytest.mark.timeout(120)
def test_in_memory_source_split_in_tasks_partitions_its_ids(ray_local):
    from rmd_ray.data.readers import from_arrays
    from rmd_ray.distributed.sources.plan import source_from_table

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], [30, 20, 10])[rng.permutation(60)]
    images = rng.integers(0, 255, (60, 4, 4), dtype=np.uint8)
    table = from_arrays(images, labels, ids=[f"s{i:02d}" for i in range(60)], classes=CLASSES)
    source = source_from_table(table, shard_rows=16)
    split = split_source(source, fraction=0.1, seed=5)
    train_ids, val_ids = _read_ids(split.train), _read_ids(split.val)
    assert sorted(train_ids + val_ids) == [f"s{i:02d}" for i in range(60)]
    assert not set(train_ids) & set(val_ids)
    assert np.bincount(labels[[int(i[1:]) for i in val_ids]]).tolist() == [3, 2, 1]
    assert split.val.n_rows == 6 and split.train.n_rows == 54
    # the pixels travel with the rows: a view of an in-memory table reads each validation row's own image
    for shard in split.val.shards:
        for row in read_shard(shard, classes=CLASSES).to_pylist():
            assert row["pixels"] == images[int(row["id"][1:])].tobytes()
    # same seed in a second call: the same split (the tasks' order of completion does not matter)
    assert split_source(source, fraction=0.1, seed=5).val_ids.equals(split.val_ids)

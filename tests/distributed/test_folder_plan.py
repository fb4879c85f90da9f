"""Image folders planned in balanced file ranges cut across class directories (no Ray: a local folder is
listed in threads and read in-process)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from rmd_ray.data.readers import read_image_folder
from rmd_ray.distributed.sources.census import label_census
from rmd_ray.distributed.sources.folder import folder_ranges
from rmd_ray.distributed.sources.plan import open_source, read_shard


def _folder(root, counts: dict[str, int]):
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            # tiny files are enough: planning and reading never decode
            (root / name / f"{name}_{i:03d}.JPEG").write_bytes(b"\xff\xd8" + bytes([i % 256]) * (10 + i))
    return root


def _ids(source):
    return [read_shard(s, classes=source.classes).column("id").to_pylist() for s in source.shards]


def test_shards_hold_shard_rows_files_across_classes(tmp_path):
    root = _folder(tmp_path / "train", {"ant": 50, "bee": 7, "cow": 13})
    source = open_source(f"folder:{root}", shard_rows=16)
    assert [s.n_rows for s in source.shards] == [16, 16, 16, 16, 6]
    assert source.shards[3].dirs == (
        (str(root / "ant"), 0, "ant", 48, 50), (str(root / "bee"), 1, "bee", 0, 7), (str(root / "cow"), 2, "cow", 0, 7),
    )
    ids = _ids(source)
    assert [len(i) for i in ids] == [16, 16, 16, 16, 6]
    # the ids of the whole-folder reader, in class then name order, each exactly once
    reference = read_image_folder(root)
    assert [i for shard in ids for i in shard] == reference.column("id").to_pylist()
    assert ids[3][:3] == ["ant/ant_048.JPEG", "ant/ant_049.JPEG", "bee/bee_000.JPEG"]
    assert ids[4] == [f"cow/cow_{i:03d}.JPEG" for i in range(7, 13)]
    labels = [read_shard(s, classes=source.classes).column("label").to_pylist() for s in source.shards]
    assert labels[3] == [0, 0] + [1] * 7 + [2] * 7
    np.testing.assert_array_equal(label_census(source), [50, 7, 13, 0])


def test_a_limit_keeps_the_first_rows_and_the_census_follows(tmp_path):
    root = _folder(tmp_path / "train", {"ant": 50, "bee": 7, "cow": 13})
    source = open_source(f"folder:{root}", shard_rows=16, limit=55)
    assert [s.n_rows for s in source.shards] == [16, 16, 16, 7]
    assert [i for shard in _ids(source) for i in shard][-6:] == ["ant/ant_049.JPEG"] + [
        f"bee/bee_{i:03d}.JPEG" for i in range(5)]
    np.testing.assert_array_equal(label_census(source), [50, 5, 0, 0])


def test_an_empty_class_keeps_its_label_and_appears_in_no_shard(tmp_path):
    root = _folder(tmp_path / "train", {"a": 3, "b": 0, "c": 4})
    with pytest.warns(UserWarning, match="1 class directories .* hold no images"):
        source = open_source(f"folder:{root}", shard_rows=5)
    assert source.classes == ("a", "b", "c")
    assert [[(d[2], d[3], d[4]) for d in s.dirs] for s in source.shards] == [[("a", 0, 3), ("c", 0, 2)], [("c", 2, 4)]]
    labels = [read_shard(s, classes=source.classes).column("label").to_pylist() for s in source.shards]
    assert labels == [[0, 0, 0, 2, 2], [2, 2]]


def test_content_changes_only_in_the_shard_holding_a_changed_file(tmp_path):
    root = _folder(tmp_path / "train", {"ant": 50, "bee": 7, "cow": 13})
    before = [s.content for s in open_source(f"folder:{root}", shard_rows=16).shards]
    assert len(set(before)) == 5 and all(len(c) == 24 for c in before)
    target = root / "bee" / "bee_003.JPEG"  # in shard 3
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    after = [s.content for s in open_source(f"folder:{root}", shard_rows=16).shards]
    assert [a != b for a, b in zip(before, after)] == [False, False, False, True, False]
    # the plan is the same (the same ranges), only the content digest moved
    assert open_source(f"folder:{root}", shard_rows=16).plan_fingerprint() == open_source(
        f"folder:{root}", shard_rows=16).plan_fingerprint()


@pytest.mark.parametrize(
    ("counts", "rows", "expected"),
    [
        ([50, 7, 13], 16, [16, 16, 16, 16, 6]),
        ([5], 5, [5]),
        ([1, 1, 1], 2, [2, 1]),
        ([0, 0, 3], 10, [3]),
        ([1300] * 3, 2048, [2048, 1852]),
    ],
)
def test_folder_ranges_sizes(counts, rows, expected):
    shards = folder_ranges(counts, rows)
    assert [sum(stop - start for _, start, stop in s) for s in shards] == expected
    # every image of every class exactly once, in order
    flat = [(k, i) for s in shards for k, start, stop in s for i in range(start, stop)]
    assert flat == [(k, i) for k, n in enumerate(counts) for i in range(n)]


def test_folder_ranges_rejects_a_bad_shard_size():
    with pytest.raises(ValueError, match="shard_rows must be an int >= 1, got 0"):
        folder_ranges([3], 0)

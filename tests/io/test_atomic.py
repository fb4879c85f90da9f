"""atomic_path: the target appears whole or not at all, with a normal file mode."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from rmd_ray.io.atomic import atomic_path
from rmd_ray.io.storage import write_json_atomic


def test_success_replaces_and_sets_umask_mode(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_text("new")
    assert target.read_text() == "new"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_failure_keeps_previous_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_write_json_atomic_round_trips_numpy_scalars_and_keeps_the_old_file_on_bad_values(tmp_path):
    import json

    import numpy as np

    path = Path(write_json_atomic(tmp_path / "sub" / "r.json", {"acc": np.float64(0.5), "rows": [1, 2]}))
    assert json.loads(path.read_text()) == {"acc": 0.5, "rows": [1, 2]}
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"acc": 0.5, "rows": [1, 2]}
    assert sorted(p.name for p in path.parent.iterdir()) == ["r.json"]

"""A scoring run killed between staging and publishing leaves ``_staging-*``; the next run clears it."""

from __future__ import annotations

import uuid

import pyarrow as pa
import pytest

from rmd_ray.io import storage


@pytest.fixture(params=["local", "s3"])
def output_dir(request, tmp_path) -> str:
    if request.param == "local":
        return str(tmp_path / "out")
    server = request.getfixturevalue("s3_server")
    return storage.join(server.bucket(f"rmd-{uuid.uuid4().hex[:16]}"), "out")


def test_clear_staging_deletes_only_the_staging_folders(output_dir):
    from rmd_ray.distributed.scoring.run import clear_staging

    table = pa.table({"id": ["a"], "rmd": [0.5]})
    for folder in ("_staging-0123456789ab", "_staging-ba9876543210", "scores.parquet", "_features"):
        storage.write_parquet_atomic(table, storage.join(output_dir, folder, "scores-000000.parquet"))
    storage.write_json_atomic(storage.join(output_dir, "_staging-note.json"), {})  # a file, not a staging folder
    cleared = clear_staging(output_dir)
    assert sorted(storage.basename(d) for d in cleared) == ["_staging-0123456789ab", "_staging-ba9876543210"]
    assert [storage.basename(d) for d in storage.list_dirs(output_dir)] == ["_features", "scores.parquet"]
    assert storage.is_file(storage.join(output_dir, "_staging-note.json"))
    assert clear_staging(output_dir) == []
    assert clear_staging(storage.join(output_dir, "missing")) == []


def test_run_scoring_clears_staging_before_it_scores():
    import inspect

    from rmd_ray.distributed.scoring import run

    source = inspect.getsource(run.run_scoring)
    assert source.index("clear_staging(output_dir)") < source.index('f"_staging-{attempt}"')

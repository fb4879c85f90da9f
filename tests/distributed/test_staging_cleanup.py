"""A scoring run killed between staging and publishing leaves ``_staging-*``; the next run clears it."""

from __future__ import annotations

import pyarrow as pa
import pytest

from rmd_ray.io import storage


@pytest.fixture
def output_dir(base) -> str:
    return storage.join(base, "out")


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

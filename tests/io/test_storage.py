"""rmd_ray.io.storage against a local folder and a real S3-compatible server (moto in server mode).

Every behavioural test runs twice through the ``base`` fixture: once under ``tmp_path``, once under a
fresh bucket of the session's ``s3_server``, so the two backends are held to the same contract.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from rmd_ray.io import storage
from rmd_ray.io.parts import read_table_metadata


def raw_names(uri: str) -> list[str]:
    """Every file below ``uri``, hidden and temporary ones included, relative to it (bypasses list_files)."""
    fs, root = storage.resolve(uri)
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    return sorted(info.path[len(root) + 1 :] for info in infos if info.type == pafs.FileType.File)


def sample_table(n: int = 6) -> pa.Table:
    rng = np.random.default_rng(0)
    return pa.table(
        {
            "id": [f"s{i}" for i in range(n)],
            "label": pa.array(np.arange(n) % 3, type=pa.int64()),
            "rmd": rng.normal(size=n),
        }
    )


# --- round trips -----------------------------------------------------------------------------------------


def test_bytes_round_trip_and_overwrite(base):
    uri = storage.join(base, "nested", "blob.bin")
    assert storage.write_bytes_atomic(uri, b"\x00first\xff") == uri
    assert storage.read_bytes(uri) == b"\x00first\xff"
    storage.write_bytes_atomic(uri, b"second")
    assert storage.read_bytes(uri) == b"second"
    assert raw_names(base) == ["nested/blob.bin"]


def test_json_round_trip_turns_numpy_scalars_into_floats(base):
    uri = storage.join(base, "summary.json")
    value = {"auroc": np.float64(0.875), "n": 12, "tags": ["a", "b"], "nested": {"x": np.float32(0.5)}}
    assert storage.write_json_atomic(uri, value) == uri
    assert storage.read_json(uri) == {"auroc": 0.875, "n": 12, "tags": ["a", "b"], "nested": {"x": 0.5}}
    assert storage.read_bytes(uri).decode().startswith('{\n  "auroc": 0.875')


def test_parquet_round_trip_with_metadata_and_projection(base):
    table = sample_table()
    uri = storage.join(base, "scores", "scores.parquet")
    meta = {"model": "resnet", "seed": 3, "source": Path("/data/train.parquet")}
    assert storage.write_parquet_atomic(table, uri, metadata=meta) == uri

    back = storage.read_parquet(uri)
    assert back.equals(table)
    # default=str: a Path in the provenance comes back as its string.
    assert storage.read_parquet_metadata(uri) == {"model": "resnet", "seed": 3, "source": "/data/train.parquet"}

    projected = storage.read_parquet(uri, columns=["rmd", "id"])
    assert projected.column_names == ["rmd", "id"]
    assert projected.column("id").to_pylist() == table.column("id").to_pylist()
    np.testing.assert_array_equal(projected.column("rmd").to_numpy(), table.column("rmd").to_numpy())

    with storage.open_input(uri) as source:
        assert source.seekable()
        parquet = pq.ParquetFile(source)
        assert parquet.metadata.num_rows == 6
        assert parquet.metadata.row_group(0).column(0).compression == "ZSTD"

    plain = storage.join(base, "plain.parquet")
    storage.write_parquet_atomic(table, plain)
    assert storage.read_parquet_metadata(plain) == {}


def test_reading_a_missing_file_raises_file_not_found(base):
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(storage.join(base, "absent.bin"))


# --- atomicity -------------------------------------------------------------------------------------------


def test_unserialisable_json_leaves_no_file_and_keeps_the_previous(base):
    uri = storage.join(base, "state.json")
    storage.write_json_atomic(uri, {"epoch": 1})
    with pytest.raises(TypeError):
        storage.write_json_atomic(uri, {"epoch": 2, "model": object()})
    assert storage.read_json(uri) == {"epoch": 1}

    fresh = storage.join(base, "fresh.json")
    with pytest.raises(TypeError):
        storage.write_json_atomic(fresh, {"bad": object()})
    assert not storage.exists(fresh)
    assert raw_names(base) == ["state.json"]  # no temporary file left behind either


def test_parquet_writer_failing_midway_keeps_the_previous_file(base, monkeypatch):
    uri = storage.join(base, "scores.parquet")
    original = sample_table(4)
    storage.write_parquet_atomic(original, uri, metadata={"version": 1})

    real_write_table = pq.write_table

    def write_then_crash(table, where, **kwargs):
        # Every byte of the new file goes out before the failure: the worst case for a reader.
        real_write_table(table, where, **kwargs)
        raise OSError("disk vanished after the last row group")

    monkeypatch.setattr(pq, "write_table", write_then_crash)
    with pytest.raises(OSError, match="disk vanished"):
        storage.write_parquet_atomic(sample_table(9), uri, metadata={"version": 2})
    with pytest.raises(OSError, match="disk vanished"):
        storage.write_parquet_atomic(sample_table(9), storage.join(base, "new.parquet"))
    monkeypatch.undo()

    assert storage.read_parquet(uri).equals(original)
    assert storage.read_parquet_metadata(uri) == {"version": 1}
    assert raw_names(base) == ["scores.parquet"]


def test_failed_s3_write_leaves_no_object_and_no_pending_upload(s3_server, monkeypatch):
    import boto3

    bucket = f"rmd-{uuid.uuid4().hex[:16]}"
    uri = storage.join(s3_server.bucket(bucket), "out", "scores.parquet")

    def crash(table, where, **kwargs):
        where.write(b"PAR1 half a file")
        raise RuntimeError("worker killed")

    monkeypatch.setattr(pq, "write_table", crash)
    with pytest.raises(RuntimeError, match="worker killed"):
        storage.write_parquet_atomic(sample_table(), uri)
    monkeypatch.undo()

    client = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1")
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_an_object_larger_than_several_parts_goes_multipart_and_reads_back_whole(s3_server):
    """23 MiB with pyarrow's default 5 MiB parts: a real CreateMultipartUpload / UploadPart x N /
    CompleteMultipartUpload against the loopback server, and nothing left pending."""
    import boto3

    bucket = f"rmd-{uuid.uuid4().hex[:16]}"
    uri = storage.join(s3_server.bucket(bucket), "features", "part-0.parquet")
    payload = np.random.default_rng(0).bytes(23 * 2**20)
    storage.write_bytes_atomic(uri, payload)
    assert storage.read_bytes(uri) == payload
    client = boto3.client("s3", endpoint_url=s3_server.endpoint, region_name="us-east-1")
    head = client.head_object(Bucket=bucket, Key="features/part-0.parquet")
    assert head["ContentLength"] == len(payload)
    assert head["ETag"].strip('"').endswith(tuple(f"-{n}" for n in range(2, 10)))  # a multipart ETag: md5-<parts>
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


# --- listing ---------------------------------------------------------------------------------------------


def _populate(base: str, names: list[str]) -> None:
    for name in names:
        storage.write_bytes_atomic(storage.join(base, *name.split("/")), name.encode())


def test_list_files_sorts_filters_and_skips_hidden_names(base):
    _populate(
        base,
        ["b10.parquet", "b2.parquet", "a.parquet", "c.json", ".a.parquet.tmp.parquet", "sub/d.parquet",
         "sub/.cache/e.parquet", "sub/deeper/f.parquet"],
    )
    j = lambda *p: storage.join(base, *p)  # noqa: E731

    assert storage.list_files(base) == [j("a.parquet"), j("b10.parquet"), j("b2.parquet"), j("c.json")]
    assert storage.list_files(base, suffix=".parquet") == [j("a.parquet"), j("b10.parquet"), j("b2.parquet")]
    assert storage.list_files(base, suffix=".parquet", recursive=True) == [
        j("a.parquet"), j("b10.parquet"), j("b2.parquet"), j("sub", "d.parquet"), j("sub", "deeper", "f.parquet"),
    ]
    assert storage.list_files(j("sub")) == [j("sub", "d.parquet")]
    assert storage.list_files(j("missing")) == []
    # The returned locations are usable as they are (for S3: the ?endpoint_override query came along).
    assert storage.read_bytes(storage.list_files(j("sub"))[0]) == b"sub/d.parquet"


def test_glob_matches_per_component_and_sorts(base):
    _populate(
        base,
        ["train-2.parquet", "train-10.parquet", "train-1.parquet", "test-1.parquet", "train-x.json",
         ".train-9.parquet", "shards/train-3.parquet", "shards/deep/train-4.parquet"],
    )
    j = lambda *p: storage.join(base, *p)  # noqa: E731

    assert storage.glob(j("train-*.parquet")) == [j("train-1.parquet"), j("train-10.parquet"), j("train-2.parquet")]
    assert storage.glob(j("train-[12].parquet")) == [j("train-1.parquet"), j("train-2.parquet")]
    assert storage.glob(j("*", "train-*.parquet")) == [j("shards", "train-3.parquet")]
    assert storage.glob(j("*-1.*")) == [j("test-1.parquet"), j("train-1.parquet")]
    assert storage.glob(j(".train-*.parquet")) == [j(".train-9.parquet")]
    assert storage.glob(j("nothing-*.parquet")) == []
    assert storage.glob(j("missing-dir", "*.parquet")) == []
    assert storage.glob(j("test-1.parquet")) == [j("test-1.parquet")]
    assert storage.glob(j("test-2.parquet")) == []


def test_glob_keeps_a_relative_local_pattern_relative(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _populate("data", ["x-1.parquet", "x-2.parquet"])
    assert storage.glob("data/x-?.parquet") == ["data/x-1.parquet", "data/x-2.parquet"]
    monkeypatch.chdir(tmp_path / "data")
    assert storage.glob("*.parquet") == ["x-1.parquet", "x-2.parquet"]


# --- existence, directories, deletion --------------------------------------------------------------------


def test_exists_is_dir_is_file(base):
    folder, file = storage.join(base, "run"), storage.join(base, "run", "model.bin")
    missing = storage.join(base, "nope")
    assert not storage.exists(base)
    storage.write_bytes_atomic(file, b"w")

    assert (storage.exists(folder), storage.is_dir(folder), storage.is_file(folder)) == (True, True, False)
    assert (storage.exists(file), storage.is_dir(file), storage.is_file(file)) == (True, False, True)
    assert (storage.exists(missing), storage.is_dir(missing), storage.is_file(missing)) == (False, False, False)


def test_makedirs_creates_local_folders_and_is_a_no_op_on_s3(base):
    target = storage.join(base, "a", "b")
    storage.makedirs(target)
    storage.makedirs(target)  # idempotent
    if storage.is_remote(base):
        # S3 has no directories: an empty prefix does not exist, and no marker object was written.
        assert not storage.exists(target)
        assert raw_names(base) == []
    else:
        assert storage.is_dir(target)


def test_delete_removes_a_prefix_recursively(base):
    _populate(base, ["run/a.parquet", "run/b.json", "run/sub/c.parquet", "keep/x.parquet", "run-2/y.parquet"])
    storage.delete(storage.join(base, "run"))

    assert not storage.exists(storage.join(base, "run"))
    # "run-2" shares the characters "run" but not the prefix "run/": it stays.
    assert raw_names(base) == ["keep/x.parquet", "run-2/y.parquet"]
    storage.delete(storage.join(base, "run"))  # missing is fine
    storage.delete(storage.join(base, "keep", "x.parquet"))
    assert raw_names(base) == ["run-2/y.parquet"]


def test_deleting_a_bucket_uri_empties_it_but_keeps_the_bucket(s3_server):
    bucket_uri = s3_server.bucket(f"rmd-{uuid.uuid4().hex[:16]}")
    _populate(bucket_uri, ["a.bin", "d/b.bin"])
    storage.delete(bucket_uri)
    assert storage.list_files(bucket_uri, recursive=True) == []
    assert storage.is_dir(bucket_uri)


# --- URIs ------------------------------------------------------------------------------------------------


def test_join_keeps_the_query_at_the_end():
    assert storage.join("s3://b/x?endpoint_override=E", "scores", "a.parquet") == (
        "s3://b/x/scores/a.parquet?endpoint_override=E"
    )
    assert storage.join("s3://b?endpoint_override=http://h:1&region=r", "a") == (
        "s3://b/a?endpoint_override=http://h:1&region=r"
    )
    assert storage.join("s3://b/x/", "/y/", "z") == "s3://b/x/y/z"
    assert storage.join("gs://b/x", "y") == "gs://b/x/y"
    assert storage.join("file:///tmp/x", "y") == "file:///tmp/x/y"
    assert storage.join("/tmp/x", "y", "z.parquet") == os.path.join("/tmp/x", "y", "z.parquet")
    assert storage.join(Path("rel"), "a") == os.path.join("rel", "a")


def test_resolve_local_forms(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fs, path = storage.resolve("runs/demo")
    assert isinstance(fs, pafs.LocalFileSystem)
    assert path == str(tmp_path / "runs" / "demo")
    assert storage.resolve(tmp_path / "x")[1] == str(tmp_path / "x")
    fs, path = storage.resolve("file:///tmp/a%20b/c")
    assert isinstance(fs, pafs.LocalFileSystem) and path == "/tmp/a b/c"
    assert not storage.is_remote("runs/demo") and not storage.is_remote("file:///tmp/x")
    assert storage.is_remote("s3://b/k") and storage.is_remote("gs://b/k")


def test_resolve_s3_caches_the_filesystem_per_options():
    query = "endpoint_override=http://127.0.0.1:9&region=us-east-1"
    fs, path = storage.resolve(f"s3://bucket-a/x/y/?{query}")
    assert isinstance(fs, pafs.S3FileSystem)
    assert path == "bucket-a/x/y"
    assert storage.resolve(f"s3://bucket-a/other?{query}")[0] is fs
    assert storage.resolve(f"s3://bucket-b/z?{query}")[0] is fs  # options, not bucket, key the cache
    assert storage.resolve("s3://bucket-a/x?endpoint_override=http://127.0.0.1:10&region=us-east-1")[0] is not fs


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("foo://bucket/key", "unknown scheme 'foo'"),
        ("hdfs://namenode/path", "unknown scheme 'hdfs'"),
        ("s3://", "missing bucket name"),
        ("s3:bucket/key", r"expected s3://bucket/key"),
        ("s3://bucket/key?no_such_option=1", "no_such_option"),
        ("file://otherhost/tmp/x", "names no host"),
        ("", "empty location"),
    ],
)
def test_resolve_rejects_bad_locations_with_the_accepted_forms(uri, why):
    with pytest.raises(ValueError, match=why) as info:
        storage.resolve(uri)
    assert "Accepted forms: a local path, file:///absolute/path, s3://bucket/key" in str(info.value)


def test_resolve_error_masks_credentials():
    with pytest.raises(ValueError, match=r"s3://\*\*\*@") as info:
        storage.resolve("s3://AKIDEXAMPLE:sup3rs3cret@bucket/key?no_such_option=1")
    assert "sup3rs3cret" not in str(info.value)


# --- Parquet with provenance, read back through parts ------------------------------------------------


def test_write_parquet_atomic_accepts_an_s3_uri_and_its_metadata_reads_back(s3_server):
    run_dir = storage.join(s3_server.bucket(f"rmd-{uuid.uuid4().hex[:16]}"), "runs", "r1")
    uri = storage.join(run_dir, "scores.parquet")
    table = sample_table()
    written = storage.write_parquet_atomic(table, uri, metadata={"split": "train", "k": 2})
    assert written == uri and isinstance(written, str)
    assert read_table_metadata(uri) == {"split": "train", "k": 2}
    assert storage.read_parquet(uri).equals(table)
    assert storage.list_files(run_dir) == [uri]
    assert uri.endswith("?" + s3_server.query)


def test_write_parquet_atomic_local_path_relative_path_and_file_uri(tmp_path, monkeypatch):
    table = sample_table(3)
    out = storage.write_parquet_atomic(table, tmp_path / "a.parquet", metadata={"v": 1})
    assert out == str(tmp_path / "a.parquet")
    assert read_table_metadata(out) == {"v": 1}
    monkeypatch.chdir(tmp_path)
    assert storage.write_parquet_atomic(table, "b.parquet") == "b.parquet"
    assert pq.read_table(tmp_path / "b.parquet").equals(table)
    storage.write_parquet_atomic(table, f"file://{tmp_path}/c.parquet")
    assert pq.read_table(tmp_path / "c.parquet").equals(table)
    assert storage.METADATA_KEY == b"rmd_ray"

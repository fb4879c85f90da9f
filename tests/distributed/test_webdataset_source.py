"""``webdataset:``: WebDataset tar shards planned one tar per shard (counts from member headers or an index),
ids the sample keys, labels from ``.cls``/``.json``; scores equal those of a ``parquet:`` copy, and bad
samples become reported rows."""

from __future__ import annotations

import io
import json
import os
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from rmd_ray.distributed.scoring.run import EncoderSpec, ExtractConfig, run_scoring
from rmd_ray.distributed.sources.plan import check_source_spec, open_source
from rmd_ray.distributed.sources.read import read_shard
from rmd_ray.distributed.sources.webdataset import expand_braces, sample_label
from rmd_ray.io import storage
from rmd_ray.io.parts import read_table

CLASSES = ["tench", "goldfish", "shark"]


def _image(rng, label: int, fmt: str) -> bytes:
    pixels = np.clip(rng.integers(0, 80, (16, 16, 3)) + 150 * np.eye(3)[label], 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def _tar_bytes(samples) -> bytes:
    """A tar of ``samples``: (key, {extension: bytes}) written as KEY.EXTENSION members, in order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for key, members in samples:
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _samples(n: int, *, seed: int, start: int = 0, fmt: str = "PNG", label_ext: str = "cls"):
    """``n`` samples keyed ``img/s{start + i:04d}`` (a directory prefix), labels cycling 0, 1, 2."""
    rng = np.random.default_rng(seed)
    ext = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}[fmt]
    out = []
    for i in range(start, start + n):
        label = i % 3
        tag = str(label).encode() if label_ext == "cls" else json.dumps({"label": label, "x": 1}).encode()
        out.append((f"img/s{i:04d}", {ext: _image(rng, label, fmt), label_ext: tag}))
    return out


def _write_shards(folder, sizes, *, seed: int = 0, formats=("PNG",)) -> list:
    """``train-000.tar``, ``train-001.tar``, ... of ``sizes`` samples; returns every sample in order."""
    storage.makedirs(str(folder))
    every, start = [], 0
    for k, n in enumerate(sizes):
        samples = _samples(n, seed=seed + k, start=start, fmt=formats[k % len(formats)])
        storage.write_bytes_atomic(storage.join(str(folder), f"train-{k:03d}.tar"), _tar_bytes(samples))
        every += samples
        start += n
    return every


def test_brace_expansion_pads_ranges_keeps_lists_and_multiplies_groups():
    assert expand_braces("train-{000000..000002}.tar") == [f"train-00000{i}.tar" for i in range(3)]
    assert expand_braces("s{8..11}") == ["s8", "s9", "s10", "s11"]
    assert expand_braces("s{08..11}") == ["s08", "s09", "s10", "s11"]
    assert expand_braces("s{2..0}") == ["s2", "s1", "s0"]
    assert expand_braces("{a,b}-{0..1}.tar") == ["a-0.tar", "a-1.tar", "b-0.tar", "b-1.tar"]
    assert expand_braces("x-{a,{b,c}}") == ["x-a", "x-b", "x-c"]
    assert expand_braces("plain.tar") == ["plain.tar"]


def test_labels_come_from_cls_text_or_a_json_label():
    assert sample_label({"cls": b" 7\n"}) == 7
    assert sample_label({"json": b'{"label": 2, "caption": "x"}'}) == 2
    assert sample_label({"cls": b"3", "json": b'{"label": 1}'}) == 3  # .cls first
    assert [sample_label(m) for m in ({}, {"cls": b"cat"}, {"json": b'{"label": "2"}'}, {"json": b"[1]"},
                                        {"json": b"{bad"}, {"json": b'{"label": true}'})] == [None] * 6


def test_unknown_forms_are_refused_with_the_fix(tmp_path):
    with pytest.raises(ValueError, match=r"unknown data source 'webdatset'"):
        check_source_spec("webdatset:/x.tar")
    with pytest.raises(ValueError, match=r"needs an argument: 'webdataset:/path/to/data'"):
        check_source_spec("webdataset:")
    with pytest.raises(ValueError, match=r"not found \(a tar, a brace pattern such as train-\{000000..000012\}"):
        open_source(f"webdataset:{tmp_path / 'missing.tar'}")
    (tmp_path / "index.json").write_text(json.dumps({"shards": []}))
    with pytest.raises(ValueError, match=r"has no non-empty 'shardlist'; expected \{\"shardlist\""):
        open_source(f"webdataset:{tmp_path / 'index.json'}")
    (tmp_path / "index.json").write_text(json.dumps({"shardlist": [{"url": "a.tar", "nsamples": -1}]}))
    with pytest.raises(ValueError, match=r"entry 0 is .*needs a 'url' string and an 'nsamples' int >= 0"):
        open_source(f"webdataset:{tmp_path / 'index.json'}")
    _write_shards(tmp_path / "s", [2])
    with pytest.raises(ValueError, match=r"1 of the names .* expands to match no file \(e.g. .*train-001.tar'\)"):
        open_source(f"webdataset:{tmp_path / 's'}/train-{{000..001}}.tar")


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_plan_counts_samples_per_tar_and_reads_keys_labels_and_images(ray_local, tmp_path):
    every = _write_shards(tmp_path / "shards", [5, 7, 4], formats=("PNG", "JPEG", "WEBP"))
    source = open_source(f"webdataset:{tmp_path / 'shards'}/train-{{000..002}}.tar")
    assert [s.n_rows for s in source.shards] == [5, 7, 4] and source.n_rows == 16
    assert [storage.basename(s.uri) for s in source.shards] == ["train-000.tar", "train-001.tar", "train-002.tar"]
    assert source.classes == ("0", "1", "2") and source.classes_inferred  # no classes.txt: K = max label + 1
    assert all(len(s.content) == 24 for s in source.shards)
    table = read_shard(source.shards[1], classes=source.classes)
    assert table.column("id").to_pylist() == [f"img/s{i:04d}" for i in range(5, 12)]
    assert table.column("label").to_pylist() == [i % 3 for i in range(5, 12)]
    assert table.column("image").to_pylist() == [m["jpg"] for _, m in every[5:12]]
    assert table.column("shard_rows").to_pylist() == [7] * 7
    ids = read_shard(source.shards[2], classes=source.classes, ids_only=True)
    assert ids.column_names == ["id", "label", "shard", "shard_rows"] and ids.num_rows == 4
    # the glob and the directory name the same tars; --limit cuts the plan
    for form in (f"{tmp_path / 'shards'}/train-*.tar", str(tmp_path / "shards")):
        assert [s.n_rows for s in open_source(f"webdataset:{form}").shards] == [5, 7, 4]
    limited = open_source(f"webdataset:{tmp_path / 'shards'}", limit=8)
    assert [s.n_rows for s in limited.shards] == [5, 3]
    assert read_shard(limited.shards[1], classes=limited.classes).column("id").to_pylist() == [
        "img/s0005", "img/s0006", "img/s0007"]
    # a tar rewritten in place gets another content digest (its completion record is not reused)
    before = source.shards[0].content
    storage.write_bytes_atomic(str(tmp_path / "shards" / "train-000.tar"), _tar_bytes(_samples(5, seed=9)))
    assert open_source(f"webdataset:{tmp_path / 'shards'}").shards[0].content != before


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_an_index_gives_the_counts_and_classes_txt_the_names(ray_local, tmp_path):
    _write_shards(tmp_path / "d", [5, 4])
    (tmp_path / "d" / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    absolute = str(tmp_path / "d" / "train-001.tar")
    # 6 is wrong on purpose: with classes.txt present the plan takes the index's count, reading no tar
    (tmp_path / "d" / "index.json").write_text(json.dumps(
        {"shardlist": [{"url": "train-000.tar", "nsamples": 6}, {"url": absolute, "nsamples": 4}]}))
    source = open_source(f"webdataset:{tmp_path / 'd' / 'index.json'}")
    assert source.classes == tuple(CLASSES) and not source.classes_inferred
    assert [s.n_rows for s in source.shards] == [6, 4]
    assert [s.uri for s in source.shards] == [str(tmp_path / "d" / "train-000.tar"), absolute]
    assert read_shard(source.shards[1], classes=source.classes).column("label").to_pylist() == [2, 0, 1, 2]
    with pytest.raises(ValueError, match=r"holds 5 samples, the plan counted 6: .*rebuild the index"):
        read_shard(source.shards[0], classes=source.classes)
    # without classes.txt the labels are read from the tars, and the counts checked against the index
    os.remove(tmp_path / "d" / "classes.txt")
    with pytest.raises(ValueError, match=r"says .*train-000.tar' holds 6 samples, it holds 5 \(1 tars differ\)"):
        open_source(f"webdataset:{tmp_path / 'd' / 'index.json'}")


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_json_labels_and_a_corrupt_tar(ray_local, tmp_path):
    rng = np.random.default_rng(3)
    samples = [(f"j{i}", {"jpeg": _image(rng, i % 3, "JPEG"), "json": json.dumps({"label": i % 3}).encode()})
               for i in range(6)]
    (tmp_path / "json.tar").write_bytes(_tar_bytes(samples))
    source = open_source(f"webdataset:{tmp_path / 'json.tar'}")
    table = read_shard(source.shards[0], classes=source.classes)
    assert table.column("id").to_pylist() == [f"j{i}" for i in range(6)]
    assert table.column("label").to_pylist() == [0, 1, 2, 0, 1, 2]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.tar").write_bytes(_tar_bytes(samples)[:700])  # cut inside the first member
    with pytest.raises(ValueError, match=r"x.tar' is not a readable tar file .*write the shard again"):
        open_source(f"webdataset:{tmp_path / 'bad' / 'x.tar'}")


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_plan_and_read_from_an_object_store(ray_local, s3_server, tmp_path):
    base = storage.join(s3_server.bucket("rmd-wds"), "wds")
    every = _write_shards(base, [3, 4])
    source = open_source(f"webdataset:{storage.join(base, 'train-{000..001}.tar')}")
    assert [s.n_rows for s in source.shards] == [3, 4]
    assert source.shards[1].uri == storage.join(base, "train-001.tar")
    table = read_shard(source.shards[1], classes=source.classes)
    assert table.column("id").to_pylist() == [k for k, _ in every[3:]]
    assert table.column("image").to_pylist() == [m["png"] for _, m in every[3:]]
    storage.write_bytes_atomic(storage.join(base, "classes.txt"), "\n".join(CLASSES).encode())
    storage.write_json_atomic(storage.join(base, "index.json"), {"shardlist": [
        {"url": "train-000.tar", "nsamples": 3}, {"url": "train-001.tar", "nsamples": 4}]})
    indexed = open_source(f"webdataset:{storage.join(base, 'index.json')}")
    assert indexed.classes == tuple(CLASSES) and [s.n_rows for s in indexed.shards] == [3, 4]
    assert [s.content for s in indexed.shards] == [s.content for s in source.shards]  # the same stamps


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_scores_equal_those_of_a_parquet_copy_and_bad_samples_are_reported(ray_local, tmp_path):
    every = _write_shards(tmp_path / "wds", [32, 32, 32], seed=2, formats=("PNG", "JPEG", "WEBP"))
    rng = np.random.default_rng(5)
    bad = [("bad/corrupt", {"jpg": b"\xff\xd8 not a jpeg", "cls": b"1"}),
           ("bad/unlabelled", {"png": _image(rng, 0, "PNG")}),
           ("bad/no-image", {"cls": b"2", "txt": b"caption"})]
    (tmp_path / "wds" / "train-003.tar").write_bytes(_tar_bytes(bad))
    (tmp_path / "wds" / "classes.txt").write_text("\n".join(CLASSES))
    ours = pa.table({"id": [k for k, _ in every], "label": pa.array([int(m["cls"]) for _, m in every], pa.int16()),
                     "image": pa.array([next(m[e] for e in ("png", "jpg", "webp") if e in m) for _, m in every],
                                       pa.binary())})
    pq.write_table(ours.replace_schema_metadata({"classes": json.dumps(CLASSES)}), tmp_path / "ours.parquet",
                   row_group_size=32)
    runs, results = {}, {}
    for name, spec in (("wds", f"webdataset:{tmp_path / 'wds'}/train-{{000..003}}.tar"),
                       ("pq", f"parquet:{tmp_path / 'ours.parquet'}")):
        results[name] = run_scoring(spec, output_dir=str(tmp_path / name), encoder=EncoderSpec("tiny_cnn"),
                                    extract=ExtractConfig(batch_size=32, num_actors=1), shard_rows=32)
        runs[name] = read_table(results[name].scores_path, columns=["id", "label", "rmd"]).sort_by("id")
    assert (results["wds"].rows_in, results["wds"].rows_scored, results["wds"].rows_error) == (99, 96, 3)
    assert runs["wds"].column("id").equals(runs["pq"].column("id"))
    assert runs["wds"].column("label").to_pylist() == runs["pq"].column("label").to_pylist()
    np.testing.assert_allclose(runs["wds"].column("rmd").to_numpy(), runs["pq"].column("rmd").to_numpy(), atol=1e-6)
    assert np.ptp(runs["wds"].column("rmd").to_numpy()) > 0  # real scores, not a constant
    errors = {e["id"]: e for e in read_table(results["wds"].errors_path).to_pylist()}
    assert set(errors) == {"bad/corrupt", "bad/unlabelled", "bad/no-image"}
    assert errors["bad/corrupt"]["stage"] == "decode" and errors["bad/corrupt"]["label"] == 1
    assert (errors["bad/unlabelled"]["stage"], errors["bad/unlabelled"]["reason"]) == ("label", "label missing")
    assert errors["bad/no-image"]["stage"] == "decode" and "found none" in errors["bad/no-image"]["reason"]


@pytest.mark.ray
@pytest.mark.slow  # one Ray Train fit of one epoch
@pytest.mark.timeout(300)
def test_train_reads_hf_parquet_and_webdataset_sources_on_object_storage(ray_local, s3_server, tmp_path):
    """Training rows from ``hf-parquet:`` shards and validation rows from ``webdataset:`` tars, both on S3."""
    from test_hf_parquet import write_hf

    from rmd_ray.cli import main

    bucket = s3_server.bucket("rmd-train-sources")
    samples = _write_shards(tmp_path / "wds", [6, 6], seed=7, formats=("PNG", "JPEG"))
    for name in ("train-000.tar", "train-001.tar"):
        storage.write_bytes_atomic(storage.join(bucket, "wds", name), (tmp_path / "wds" / name).read_bytes())
    storage.write_bytes_atomic(storage.join(bucket, "wds", "classes.txt"), "\n".join(CLASSES).encode())
    rng = np.random.default_rng(8)
    labels = np.arange(48) % 3
    write_hf(tmp_path / "hf.parquet", labels, [_image(rng, int(k), "PNG") for k in labels])
    storage.write_bytes_atomic(storage.join(bucket, "hf", "train.parquet"), (tmp_path / "hf.parquet").read_bytes())
    out = tmp_path / "out"
    assert main(["train", "--train-source", f"hf-parquet:{storage.join(bucket, 'hf')}",
                 "--val-source", f"webdataset:{storage.join(bucket, 'wds', 'train-{000..001}.tar')}",
                 "--loss", "ce", "--epochs", "1", "--width", "0.0625", "--train-batch-size", "8",
                 "--cpus-per-worker", "0.5", "--run-name", "r", "--output", str(out)]) == 0
    val_pred = read_table(str(out / "r" / "predictions_val.parquet"), columns=["id", "label"])
    assert sorted(val_pred.column("id").to_pylist()) == sorted(key for key, _ in samples)
    assert sorted(zip(val_pred.column("id").to_pylist(), val_pred.column("label").to_pylist())) == sorted(
        (key, int(members["cls"])) for key, members in samples)


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_fetch_rows_finds_sample_keys_across_tars(ray_local, tmp_path):
    from rmd_ray.distributed.sources.fetch import fetch_rows

    samples = dict(_write_shards(tmp_path, [4, 4, 4], seed=3))
    rows = fetch_rows(f"webdataset:{tmp_path}/train-{{000..002}}.tar", ["img/s0009", "img/s0001", "nope"])
    assert sorted(rows.column("id").to_pylist()) == ["img/s0001", "img/s0009"]
    by_id = {r["id"]: r for r in rows.to_pylist()}
    assert by_id["img/s0009"]["image"] == samples["img/s0009"]["png"] and by_id["img/s0009"]["label"] == 0
    assert by_id["img/s0001"]["image"] == samples["img/s0001"]["png"] and by_id["img/s0001"]["label"] == 1
    assert fetch_rows(f"webdataset:{tmp_path}", []).num_rows == 0

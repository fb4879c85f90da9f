"""``hf-parquet:``: Hugging Face ``datasets`` image shards score exactly as a ``parquet:`` copy of the same
images, with class names from the ``huggingface`` metadata and ids from ``image.path`` (or file:row)."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from rmd_ray.distributed.scoring.run import EncoderSpec, ExtractConfig, run_scoring
from rmd_ray.distributed.sources.fetch import fetch_rows, pieces_holding
from rmd_ray.distributed.sources.plan import open_source
from rmd_ray.distributed.sources.read import read_shard
from rmd_ray.io.parts import read_table

CLASSES = ["tench", "goldfish", "shark"]


def _images(n: int, seed: int) -> tuple[np.ndarray, list[bytes]]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    out = []
    for label in labels:
        pixels = np.clip(rng.integers(0, 80, (16, 16, 3)) + 150 * np.eye(3)[label], 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return labels, out


def write_hf(path, labels, images, *, paths=True, row_group_size=32) -> None:
    """The layout ``datasets`` writes for an Image + ClassLabel dataset (struct image, names in metadata)."""
    image = pa.array([{"bytes": b, "path": f"img_{i:03d}.png" if paths else None} for i, b in enumerate(images)],
                     pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    features = {"image": {"_type": "Image"}, "label": {"names": CLASSES, "_type": "ClassLabel"}}
    table = pa.table({"image": image, "label": pa.array(labels, pa.int64())})
    table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    pq.write_table(table, path, row_group_size=row_group_size)


def test_plan_and_read_take_names_from_the_metadata_and_ids_from_paths(tmp_path):
    labels, images = _images(70, 0)
    write_hf(tmp_path / "train-00000-of-00001.parquet", labels, images)
    source = open_source(f"hf-parquet:{tmp_path}", shard_rows=32)
    assert source.classes == tuple(CLASSES) and not source.classes_inferred
    assert [s.n_rows for s in source.shards] == [32, 32, 6]
    table = read_shard(source.shards[1], classes=source.classes)
    assert table.column("id").to_pylist() == [f"img_{i:03d}.png" for i in range(32, 64)]
    assert table.column("label").to_pylist() == labels[32:64].tolist()
    assert table.column("image").to_pylist()[0] == images[32]


def test_rows_without_a_path_are_named_by_file_and_row(tmp_path):
    labels, images = _images(40, 1)
    write_hf(tmp_path / "part.parquet", labels, images, paths=False)
    source = open_source(f"hf-parquet:{tmp_path / 'part.parquet'}", shard_rows=32)
    ids = read_shard(source.shards[1], classes=source.classes, ids_only=True).column("id").to_pylist()
    assert ids == [f"part.parquet:{i}" for i in range(32, 40)]


def test_a_table_that_is_not_a_datasets_image_table_says_what_to_use(tmp_path):
    pq.write_table(pa.table({"id": ["a"], "label": [0], "image": [b"x"]}), tmp_path / "ours.parquet")
    pq.write_table(pa.table({"img": [b"x"], "label": [0]}), tmp_path / "other.parquet")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['image'\].*for a table with an id column use parquet:"):
        open_source(f"hf-parquet:{tmp_path / 'other.parquet'}")


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_scores_equal_those_of_a_parquet_copy_read_from_object_storage(ray_local, s3_server, tmp_path):
    from rmd_ray.io import storage

    labels, images = _images(96, 2)
    images[5] = b"not an image"  # a corrupt member: a reported row, not a crash
    write_hf(tmp_path / "hf.parquet", labels, images)
    remote = storage.join(s3_server.bucket("rmd-hf"), "data", "train-00000-of-00001.parquet")
    storage.write_bytes_atomic(remote, (tmp_path / "hf.parquet").read_bytes())
    ours = pa.table({"id": [f"img_{i:03d}.png" for i in range(96)], "label": pa.array(labels, pa.int16()),
                     "image": pa.array(images, pa.binary())})
    pq.write_table(ours.replace_schema_metadata({"classes": json.dumps(CLASSES)}), tmp_path / "ours.parquet",
                   row_group_size=32)
    runs = {}
    for name, spec in (("hf", f"hf-parquet:{remote}"), ("pq", f"parquet:{tmp_path / 'ours.parquet'}")):
        result = run_scoring(spec, output_dir=str(tmp_path / name), encoder=EncoderSpec("tiny_cnn"),
                             extract=ExtractConfig(batch_size=32, num_actors=1), shard_rows=32)
        assert (result.rows_scored, result.rows_error) == (95, 1)
        assert read_table(result.errors_path, columns=["id"]).column("id").to_pylist() == ["img_005.png"]
        runs[name] = read_table(result.scores_path, columns=["id", "label", "rmd"]).sort_by("id")
    assert runs["hf"].column("id").equals(runs["pq"].column("id"))
    assert runs["hf"].column("label").to_pylist() == runs["pq"].column("label").to_pylist()
    np.testing.assert_allclose(runs["hf"].column("rmd").to_numpy(), runs["pq"].column("rmd").to_numpy(), atol=1e-6)


def test_files_with_the_same_name_in_two_folders_give_distinct_ids(tmp_path):
    labels, images = _images(6, 3)
    for split in ("a", "b"):
        (tmp_path / split).mkdir()
        write_hf(tmp_path / split / "part.parquet", labels, images, paths=False)
    source = open_source(f"hf-parquet:{tmp_path}/*/part.parquet")
    tables = [read_shard(s, classes=source.classes, ids_only=True) for s in source.shards]
    ids = [i for t in tables for i in t.column("id").to_pylist()]
    assert ids == [f"{split}/part.parquet:{i}" for split in ("a", "b") for i in range(6)]


def _spoil_image_bytes(path, *, keep) -> int:
    """Overwrite the ``image.bytes`` column chunk of every row group not in ``keep`` with 0xFF: reading one
    of them then fails, so a fetch that succeeds never read them. Returns how many were spoiled."""
    meta = pq.ParquetFile(path).metadata
    leaf = [meta.schema.column(i).path for i in range(meta.num_columns)].index("image.bytes")
    spoiled = 0
    with open(path, "r+b") as fh:
        for g in range(meta.num_row_groups):
            if g in keep:
                continue
            chunk = meta.row_group(g).column(leaf)
            fh.seek(chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset)
            fh.write(b"\xff" * chunk.total_compressed_size)
            spoiled += 1
    return spoiled


def test_a_shard_is_read_only_in_the_row_groups_holding_a_wanted_row(tmp_path):
    labels, images = _images(40, 4)
    write_hf(tmp_path / "hf.parquet", labels, images, row_group_size=8)
    (shard,) = open_source(f"hf-parquet:{tmp_path}", shard_rows=64).shards
    assert shard.row_groups == (0, 1, 2, 3, 4)
    hit = np.zeros(40, bool)
    hit[[9, 12, 33]] = True  # rows of groups 1, 1 and 4
    pieces = pieces_holding(shard, hit)
    assert [(p.row_groups, p.n_rows) for p in pieces] == [((1,), 8), ((4,), 8)]
    ids = [i for p in pieces for i in read_shard(p, classes=tuple(CLASSES)).column("id").to_pylist()]
    assert ids == [f"img_{i:03d}.png" for i in [*range(8, 16), *range(32, 40)]]
    limited = open_source(f"hf-parquet:{tmp_path}", shard_rows=64, limit=35).shards[0]
    assert [(p.row_groups, p.n_rows) for p in pieces_holding(limited, hit[:35])] == [((1,), 8), ((4,), 3)]


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_fetch_reads_image_bytes_only_in_row_groups_holding_a_wanted_id(ray_local, tmp_path):
    labels, images = _images(200, 5)
    path = tmp_path / "train-00000-of-00001.parquet"
    write_hf(path, labels, images, row_group_size=8)  # 25 row groups, one shard of all of them
    wanted = [5, 90, 93, 199]  # in row groups 0, 11, 11 and 24
    assert _spoil_image_bytes(path, keep={0, 11, 24}) == 22
    with pytest.raises((OSError, pa.ArrowInvalid)):
        pq.read_table(path)  # a spoiled chunk cannot be read: the fetch below never touched one
    rows = fetch_rows(f"hf-parquet:{path}", [f"img_{i:03d}.png" for i in wanted] + ["img_999.png"]).sort_by("id")
    assert rows.column("id").to_pylist() == [f"img_{i:03d}.png" for i in wanted]
    assert rows.column("label").to_pylist() == labels[wanted].tolist()
    assert rows.column("image").to_pylist() == [images[i] for i in wanted]

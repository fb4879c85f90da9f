"""Tests for rmd_ray.data.readers on the real shared data and on small real-format fakes."""

from __future__ import annotations

import gzip
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from real_data import CIFAR10_TRAIN, IMAGENET_SAMPLE

from rmd_ray.data.decode import decode_image
from rmd_ray.data.readers import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_ROOT,
    from_arrays,
    read_cifar_pickle,
    read_fashion_mnist,
    read_image_folder,
    read_parquet_images,
    read_source,
    table_classes,
    validate_labels,
)

FMNIST = Path(FASHION_MNIST_ROOT)

needs_cifar = pytest.mark.skipif(not CIFAR10_TRAIN.is_file(), reason=f"shared data not found at {CIFAR10_TRAIN}")
needs_imagenet = pytest.mark.skipif(
    not IMAGENET_SAMPLE.is_dir(), reason=f"shared data not found at {IMAGENET_SAMPLE}"
)
needs_fmnist = pytest.mark.skipif(
    not FMNIST.is_dir(), reason="Fashion-MNIST missing: apt-get install -y dataset-fashion-mnist"
)

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _first_row(table: pa.Table) -> dict:
    return table.slice(0, 1).to_pylist()[0]


def _meta(table: pa.Table, key: str) -> str:
    return table.schema.metadata[key.encode()].decode()


# ---------------------------------------------------------------------------------------------
# parquet


@needs_cifar
def test_read_real_cifar10_parquet_with_limit():
    table = read_parquet_images(CIFAR10_TRAIN, limit=12)
    raw = pq.ParquetFile(CIFAR10_TRAIN).read_row_group(0).slice(0, 12)
    assert table.num_rows == 12
    assert table.schema.field("id").type == pa.string()
    assert table.schema.field("label").type == pa.int64()
    assert table.schema.field("image").type == pa.binary()
    assert table.column("id").to_pylist() == raw.column("id").to_pylist()
    assert table.column("label").to_pylist() == raw.column("label").to_pylist()
    assert table.column("image").to_pylist() == raw.column("image").to_pylist()
    assert table_classes(table) == CIFAR10_CLASSES
    assert "CIFAR-10" in _meta(table, "source")
    # ids spell the class: train/<class>/<n>.jpg
    for row in table.to_pylist():
        assert row["id"].split("/")[1] == CIFAR10_CLASSES[row["label"]]
    img = decode_image(_first_row(table))
    assert img.mode == "RGB" and img.size == (32, 32)


def test_parquet_custom_columns_and_json_classes(tmp_path):
    png = _png(np.full((3, 4, 3), 9, np.uint8))
    src = pa.table({"key": ["u", "v", "w"], "y": pa.array([2, 0, 1], pa.int16()), "img": [png, png, png]})
    path = tmp_path / "x.parquet"
    pq.write_table(src.replace_schema_metadata({b"classes": json.dumps(["a", "b", "c"]).encode()}), path)
    table = read_parquet_images(path, image_column="img", label_column="y", id_column="key")
    assert table.column_names == ["id", "label", "image"]
    assert table.column("id").to_pylist() == ["u", "v", "w"]
    assert table.column("label").to_pylist() == [2, 0, 1]
    assert table_classes(table) == ["a", "b", "c"]
    # no classes metadata -> "0" .. str(max label)
    pq.write_table(src, tmp_path / "y.parquet")
    plain = read_parquet_images(tmp_path / "y.parquet", image_column="img", label_column="y", id_column="key")
    assert table_classes(plain) == ["0", "1", "2"]
    assert np.asarray(decode_image(_first_row(plain))).shape == (3, 4, 3)


def test_parquet_errors(tmp_path):
    with pytest.raises(ValueError, match=r"parquet path not found"):
        read_parquet_images(tmp_path / "none.parquet")
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"id": ["a"], "label": [0.5], "image": [b"x"]}), path)
    with pytest.raises(
        ValueError, match=r"lacks column\(s\) \['pic'\]; its columns are \['id', 'label', 'image'\]"
    ):
        read_parquet_images(path, image_column="pic")
    with pytest.raises(ValueError, match=r"label column 'label' must be integer, got double"):
        read_parquet_images(path)
    pq.write_table(pa.table({"id": ["a"], "label": [1], "image": ["text"]}), path)
    with pytest.raises(ValueError, match=r"must hold encoded bytes \(binary\), got string"):
        read_parquet_images(path)
    with pytest.raises(ValueError, match=r"limit must be None or an int >= 0"):
        read_parquet_images(path, limit=-1)


# ---------------------------------------------------------------------------------------------
# fashion-mnist


@needs_fmnist
def test_read_real_fashion_mnist():
    table = read_fashion_mnist()
    assert table.num_rows == 60000
    with gzip.open(FMNIST / "train-labels-idx1-ubyte.gz") as fh:
        raw_labels = fh.read()
    with gzip.open(FMNIST / "train-images-idx3-ubyte.gz") as fh:
        raw_images = fh.read(16 + 2 * 784)
    labels = table.column("label").to_numpy()
    assert labels[0] == raw_labels[8]  # first label byte after the 8-byte IDX header
    np.testing.assert_array_equal(labels, np.frombuffer(raw_labels, np.uint8, offset=8))
    assert np.bincount(labels).tolist() == [6000] * 10
    first = _first_row(table)
    assert first["id"] == "train/00000" and first["shape"] == [28, 28]
    assert first["pixels"] == raw_images[16 : 16 + 784]
    assert table_classes(table) == list(FASHION_MNIST_CLASSES)
    img = np.asarray(decode_image(first))
    assert img.shape == (28, 28, 3)
    np.testing.assert_array_equal(img[:, :, 0], np.frombuffer(raw_images, np.uint8, 784, 16).reshape(28, 28))
    test = read_fashion_mnist(split="test", limit=5)
    assert test.num_rows == 5 and test.column("id").to_pylist()[-1] == "test/00004"


def _fake_fmnist(root: Path, n: int = 3) -> None:
    root.mkdir()
    for prefix in ("train", "t10k"):
        images = np.arange(n * 28 * 28, dtype=np.uint32).astype(np.uint8).tobytes()
        head = (2051).to_bytes(4, "big") + n.to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
        (root / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(head + images))
        lab = (2049).to_bytes(4, "big") + n.to_bytes(4, "big") + bytes(range(n))
        (root / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(lab))


def test_fashion_mnist_errors(tmp_path):
    with pytest.raises(ValueError, match=r"apt-get install -y dataset-fashion-mnist"):
        read_fashion_mnist(tmp_path / "nowhere")
    root = tmp_path / "fm"
    _fake_fmnist(root)
    table = read_fashion_mnist(root, split="test")
    assert table.column("label").to_pylist() == [0, 1, 2]
    # a label file where the image file should be: wrong magic, named
    shutil.copy(root / "train-labels-idx1-ubyte.gz", root / "train-images-idx3-ubyte.gz")
    with pytest.raises(
        ValueError, match=r"train-images-idx3-ubyte\.gz' is not an IDX image file: magic 0x00000801"
    ):
        read_fashion_mnist(root)
    (root / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(ValueError, match=r"cannot read IDX file .*train-images-idx3-ubyte\.gz"):
        read_fashion_mnist(root)
    (root / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(ValueError, match=r"file train-images-idx3-ubyte\.gz missing"):
        read_fashion_mnist(root)
    head = (2051).to_bytes(4, "big") + (3).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(head + b"\0" * 100))
    with pytest.raises(ValueError, match=r"header says \[3, 28, 28\] \(2352 bytes\) but the file has 100"):
        read_fashion_mnist(root, split="test")
    with pytest.raises(ValueError, match=r"split must be 'train' or 'test', got 'val'"):
        read_fashion_mnist(root, split="val")


# ---------------------------------------------------------------------------------------------
# image folder


@needs_imagenet
def test_read_real_imagenet_sample_folder():
    table = read_image_folder(IMAGENET_SAMPLE)
    classes = table_classes(table)
    dirs = sorted(p.name for p in IMAGENET_SAMPLE.iterdir() if p.is_dir())
    assert classes == dirs and len(classes) == 100
    assert table.num_rows == 100
    assert sorted(table.column("label").to_pylist()) == list(range(100))
    for row in table.to_pylist():
        wnid = row["id"].split("/")[0]
        assert classes[row["label"]] == wnid
        assert row["path"] == str((IMAGENET_SAMPLE / row["id"]).resolve())
    assert _meta(table, "skipped_non_image") == "0"  # the root-level .txt is not inside a class
    img = decode_image(_first_row(table))
    assert img.mode == "RGB" and img.size == Image.open(_first_row(table)["path"]).size
    # with the full 1000-class list the label is the line index of the wnid
    wnids = (IMAGENET_SAMPLE / "wnids_all_1000_sorted.txt").read_text().split()
    with pytest.warns(UserWarning, match=r"900 of 1000 classes have no directory"):
        full = read_image_folder(IMAGENET_SAMPLE, classes=wnids)
    for row in full.to_pylist():
        assert row["label"] == wnids.index(row["id"].split("/")[0])


def _png(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def _fake_folder(root: Path) -> None:
    (root / "ant").mkdir(parents=True)
    (root / "bee").mkdir()  # empty class
    (root / "cat" / "sub").mkdir(parents=True)
    (root / ".hidden").mkdir()
    (root / "ant" / "1.png").write_bytes(_png(np.zeros((5, 6, 3), np.uint8)))
    (root / "ant" / "2.JPG").write_bytes(_png(np.zeros((5, 6, 3), np.uint8)))  # case-insensitive extension
    (root / "ant" / "notes.txt").write_text("not an image")
    (root / "cat" / "sub" / "3.jpeg").write_bytes(_png(np.full((7, 2, 3), 200, np.uint8)))
    (root / "README.md").write_text("outside any class")


def test_image_folder_empty_class_kept_and_non_images_counted(tmp_path):
    _fake_folder(tmp_path)
    with pytest.warns(UserWarning, match=r"class directory 'bee' \(index 1\) .* has no images"):
        table = read_image_folder(tmp_path)
    assert table_classes(table) == ["ant", "bee", "cat"]
    assert table.column("id").to_pylist() == ["ant/1.png", "ant/2.JPG", "cat/sub/3.jpeg"]
    assert table.column("label").to_pylist() == [0, 0, 2]
    assert _meta(table, "skipped_non_image") == "1"
    assert json.loads(_meta(table, "empty_classes")) == ["bee"]
    last = table.slice(2, 1).to_pylist()[0]
    assert decode_image(last).size == (2, 7)


def test_image_folder_given_classes_and_errors(tmp_path):
    _fake_folder(tmp_path)
    with pytest.warns(UserWarning) as record:
        table = read_image_folder(tmp_path, classes=["cat", "bee", "ant", "dog"])
    messages = [str(w.message) for w in record]
    assert any("1 of 4 classes have no directory" in m and "(e.g. 'dog')" in m for m in messages)
    assert any("class directory 'bee' (index 1)" in m for m in messages)
    # rows come in class-list order; labels are positions in the given list
    assert table.column("id").to_pylist() == ["cat/sub/3.jpeg", "ant/1.png", "ant/2.JPG"]
    assert table.column("label").to_pylist() == [0, 2, 2]
    with pytest.raises(ValueError, match=r"1 directories under .* are not in classes \(e\.g\. 'cat'\)"):
        read_image_folder(tmp_path, classes=["ant", "bee"])
    with pytest.raises(ValueError, match=r"classes has duplicate name 'ant'"):
        read_image_folder(tmp_path, classes=["ant", "ant", "bee", "cat"])
    with pytest.raises(ValueError, match=r"image folder root is not a directory"):
        read_image_folder(tmp_path / "ant" / "1.png")
    (tmp_path / "flat").mkdir()
    with pytest.raises(ValueError, match=r"has no class sub-directories"):
        read_image_folder(tmp_path / "flat")
    (tmp_path / "flat" / "only").mkdir()
    (tmp_path / "flat" / "only" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match=r"no image files under"), pytest.warns(UserWarning):
        read_image_folder(tmp_path / "flat")


# ---------------------------------------------------------------------------------------------
# CIFAR pickles (fakes in the real format: Python-2 style byte-string keys, (N, 3072) CHW planes)


def _cifar_data(n: int, offset: int) -> np.ndarray:
    rng = np.random.default_rng(offset)
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)


def _fake_cifar10(root: Path) -> dict[str, np.ndarray]:
    root.mkdir(parents=True)
    datas = {}
    for i in range(1, 6):
        data = _cifar_data(2, i)
        datas[f"data_batch_{i}"] = data
        _dump(
            root / f"data_batch_{i}",
            {b"batch_label": b"x", b"data": data, b"labels": [i, 9 - i], b"filenames": [b"a.png", b"b.png"]},
        )
    datas["test_batch"] = _cifar_data(3, 0)
    _dump(root / "test_batch", {b"data": datas["test_batch"], b"labels": [7, 8, 9]})
    _dump(root / "batches.meta", {b"label_names": [name.encode() for name in CIFAR10_CLASSES]})
    return datas


def test_read_cifar10_pickles(tmp_path):
    datas = _fake_cifar10(tmp_path / "cifar-10-batches-py")
    table = read_cifar_pickle(tmp_path)  # the parent folder also works
    assert table.num_rows == 10
    assert table.column("label").to_pylist() == [1, 8, 2, 7, 3, 6, 4, 5, 5, 4]
    assert table.column("id").to_pylist()[:2] == ["train/00000", "train/00001"]
    assert table_classes(table) == CIFAR10_CLASSES
    # row 3 = second image of data_batch_2; pixel (r, c, ch) is data[ch * 1024 + r * 32 + c]
    row = table.slice(3, 1).to_pylist()[0]
    assert row["shape"] == [32, 32, 3]
    img = np.asarray(decode_image(row))
    data = datas["data_batch_2"][1]
    for r, c, ch in [(0, 0, 0), (5, 17, 1), (31, 31, 2), (10, 3, 2)]:
        assert img[r, c, ch] == data[ch * 1024 + r * 32 + c]
    test = read_source(f"cifar-pickle:{tmp_path / 'cifar-10-batches-py'}:test")
    assert test.column("label").to_pylist() == [7, 8, 9]
    assert test.column("id").to_pylist()[0] == "test/00000"


def test_read_cifar100_fine_labels(tmp_path):
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    names = [f"c{i}" for i in range(100)]
    _dump(
        root / "train",
        {b"data": _cifar_data(4, 1), b"fine_labels": [99, 0, 5, 5], b"coarse_labels": [1, 2, 3, 4]},
    )
    _dump(root / "test", {b"data": _cifar_data(1, 2), b"fine_labels": [42], b"coarse_labels": [0]})
    _dump(root / "meta", {b"fine_label_names": [n.encode() for n in names], b"coarse_label_names": []})
    table = read_cifar_pickle(root, split="train")
    assert table.column("label").to_pylist() == [99, 0, 5, 5]
    assert table_classes(table) == names
    assert "CIFAR-100" in _meta(table, "source")
    assert read_cifar_pickle(root, split="test").column("label").to_pylist() == [42]


def test_cifar_pickle_errors(tmp_path):
    with pytest.raises(ValueError, match=r"CIFAR root is not a directory"):
        read_cifar_pickle(tmp_path / "nope")
    with pytest.raises(ValueError, match=r"holds neither CIFAR-10 .* nor CIFAR-100"):
        read_cifar_pickle(tmp_path)
    root = tmp_path / "c10"
    _fake_cifar10(root)
    (root / "data_batch_3").unlink()
    with pytest.raises(ValueError, match=r"CIFAR-10 file 'data_batch_3' missing"):
        read_cifar_pickle(root)
    _dump(root / "data_batch_3", {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]})
    with pytest.raises(
        ValueError, match=r"data_batch_3': data must be \(N, 3072\) with N labels, got \(2, 100\)"
    ):
        read_cifar_pickle(root)
    (root / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"cannot read CIFAR file .*data_batch_3"):
        read_cifar_pickle(root)
    with pytest.raises(ValueError, match=r"split must be 'train' or 'test'"):
        read_cifar_pickle(root, split="valid")


# ---------------------------------------------------------------------------------------------
# from_arrays and read_source


def test_from_arrays_round_trips_pixels():
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (3, 5, 4), dtype=np.uint8)
    table = from_arrays(gray, [0, 2, 1])
    assert table.column("id").to_pylist() == ["0", "1", "2"]
    assert table_classes(table) == ["0", "1", "2"]
    for i, row in enumerate(table.to_pylist()):
        assert row["shape"] == [5, 4]
        np.testing.assert_array_equal(np.asarray(decode_image(row))[:, :, 1], gray[i])
    rgb = rng.integers(0, 256, (2, 6, 7, 3), dtype=np.uint8)
    table = from_arrays(rgb, np.array([1, 1]), ids=["p", "q"], classes=["no", "yes"])
    assert table.column("id").to_pylist() == ["p", "q"] and table_classes(table) == ["no", "yes"]
    np.testing.assert_array_equal(np.asarray(decode_image(table.to_pylist()[1])), rgb[1])


def test_from_arrays_validation():
    imgs = np.zeros((2, 4, 4), np.uint8)
    with pytest.raises(TypeError, match=r"images must be uint8"):
        from_arrays(imgs.astype(np.float32), [0, 1])
    with pytest.raises(TypeError, match=r"images must be a numpy array"):
        from_arrays(imgs.tolist(), [0, 1])
    with pytest.raises(ValueError, match=r"with C in 1, 3, 4; got \(2, 4, 4, 2\)"):
        from_arrays(np.zeros((2, 4, 4, 2), np.uint8), [0, 1])
    with pytest.raises(ValueError, match=r"2 images but 3 labels"):
        from_arrays(imgs, [0, 1, 1])
    with pytest.raises(ValueError, match=r"labels must be a 1-D integer array"):
        from_arrays(imgs, [0.0, 1.0])
    with pytest.raises(ValueError, match=r"2 images but 1 ids"):
        from_arrays(imgs, [0, 1], ids=["a"])
    with pytest.raises(ValueError, match=r"ids must be unique; e.g. 'a' repeats"):
        from_arrays(imgs, [0, 1], ids=["a", "a"])


@needs_cifar
@needs_fmnist
def test_read_source_dispatch(tmp_path):
    a = read_source(f"parquet:{CIFAR10_TRAIN}", limit=3)
    assert a.equals(read_parquet_images(CIFAR10_TRAIN, limit=3))
    b = read_source("fashion-mnist:test", limit=4)
    assert b.equals(read_fashion_mnist(split="test", limit=4))
    c = read_source(f"fashion-mnist:{FMNIST}:train", limit=2)
    assert c.column("id").to_pylist() == ["train/00000", "train/00001"]
    _fake_folder(tmp_path / "f")
    with pytest.warns(UserWarning):
        d = read_source(f"folder:{tmp_path / 'f'}", limit=2)
    assert d.column("id").to_pylist() == ["ant/1.png", "ant/2.JPG"]
    with pytest.raises(
        ValueError, match=r"unknown data source 'hdf5'; valid names: cifar-pickle, fashion-mnist"
    ):
        read_source("hdf5:/x")
    with pytest.raises(ValueError, match=r"source 'parquet' needs a path"):
        read_source("parquet:")
    with pytest.raises(TypeError, match=r"source spec must be a str"):
        read_source(None)


# ---------------------------------------------------------------------------------------------
# label validation


def test_validate_labels_splits_without_losing_rows():
    table = from_arrays(np.zeros((5, 2, 2), np.uint8), [0, 12, -1, 9, 3], ids=list("abcde"))
    good, errors = validate_labels(table, n_classes=10)
    assert good.column("id").to_pylist() == ["a", "d", "e"]
    assert good.schema.metadata == table.schema.metadata and good.column_names == table.column_names
    assert errors.to_pylist() == [
        {"id": "b", "label": 12, "reason": "label 12 outside 0..9"},
        {"id": "c", "label": -1, "reason": "label -1 outside 0..9"},
    ]
    nulls = pa.table({"id": ["x", "y"], "label": pa.array([None, 1], pa.int64())})
    good, errors = validate_labels(nulls, n_classes=2)
    assert good.column("id").to_pylist() == ["y"]
    assert errors.to_pylist() == [{"id": "x", "label": None, "reason": "label missing"}]


def test_validate_labels_errors():
    table = pa.table({"id": ["a", "b", "a"], "label": [0, 1, 0]})
    with pytest.raises(ValueError, match=r"duplicate ids in table \(e\.g\. 'a'\)"):
        validate_labels(table, n_classes=2)
    with pytest.raises(ValueError, match=r"n_classes must be an int >= 1, got 0"):
        validate_labels(table, n_classes=0)
    with pytest.raises(ValueError, match=r"table lacks column 'label'"):
        validate_labels(pa.table({"id": ["a"]}), n_classes=2)
    with pytest.raises(ValueError, match=r"label column must be integer, got string"):
        validate_labels(pa.table({"id": ["a"], "label": ["0"]}), n_classes=2)
    with pytest.raises(TypeError, match=r"table must be a pyarrow.Table"):
        validate_labels({"id": ["a"]}, n_classes=2)


@settings(max_examples=40, deadline=None)
@given(labels=st.lists(st.integers(-3, 12), max_size=30), n_classes=st.integers(1, 10))
def test_validate_labels_partition_property(labels, n_classes):
    table = pa.table({"id": [f"r{i}" for i in range(len(labels))], "label": pa.array(labels, pa.int64())})
    good, errors = validate_labels(table, n_classes=n_classes)
    assert good.num_rows + errors.num_rows == len(labels)
    assert sorted(good.column("id").to_pylist() + errors.column("id").to_pylist()) == sorted(
        table.column("id").to_pylist()
    )
    assert all(0 <= v < n_classes for v in good.column("label").to_pylist())
    expected_bad = [f"r{i}" for i, v in enumerate(labels) if not 0 <= v < n_classes]
    assert errors.column("id").to_pylist() == expected_bad


def test_image_extensions_are_torchvisions():
    from torchvision.datasets.folder import IMG_EXTENSIONS

    from rmd_ray.data.readers import IMAGE_EXTENSIONS

    assert IMAGE_EXTENSIONS == tuple(e.lower() for e in IMG_EXTENSIONS)


# --------------------------------------------------------------------------------------------
# published ImageNet-C / CIFAR-10-C directories (imagenet-c:ROOT), on generated layouts


def _cifar_c_layout(root: Path, names=("fog", "contrast"), per=4):
    """The CIFAR-10-C layout: <name>.npy (5 * per, 32, 32, 3), labels.npy (5 * per,)."""
    root.mkdir(parents=True, exist_ok=True)
    labels = np.tile(np.arange(per) % 3, 5).astype(np.uint8)  # the published file is uint8
    np.save(root / "labels.npy", labels)
    stacks = {}
    for j, name in enumerate(names):
        stack = np.zeros((5 * per, 32, 32, 3), np.uint8)
        for row in range(5 * per):
            stack[row] = 10 * j + row  # every image is flat at a value that names its row
        np.save(root / f"{name}.npy", stack)
        stacks[name] = stack
    return labels, stacks


def test_read_published_cifar_c_splits_severities_and_keeps_labels(tmp_path):
    from rmd_ray.data.readers import read_published_corruptions

    labels, stacks = _cifar_c_layout(tmp_path / "CIFAR-10-C")
    table = read_source(f"imagenet-c:{tmp_path / 'CIFAR-10-C'}")
    assert table.num_rows == 2 * 5 * 4
    assert table.column("corruption").to_pylist()[:20] == ["contrast"] * 20  # sorted by name
    assert table.column("severity").to_pylist()[:8] == [1, 1, 1, 1, 2, 2, 2, 2]
    assert table.column("id").to_pylist()[4:6] == ["contrast/2/00000", "contrast/2/00001"]
    np.testing.assert_array_equal(table.column("label").to_numpy()[:20], labels)
    # row "fog/3/00001" is stack row (3 - 1) * 4 + 1 = 9: flat at 10 * 0 + 9 (fog was the first written)
    row = table.filter(pa.compute.equal(table.column("id"), "fog/3/00001")).to_pylist()[0]
    np.testing.assert_array_equal(np.asarray(decode_image(row)), stacks["fog"][9])
    assert table_classes(table) == ["0", "1", "2"]
    # limit: the first N of each (corruption, severity)
    limited = read_published_corruptions(tmp_path / "CIFAR-10-C", limit=2)
    assert limited.num_rows == 2 * 5 * 2
    assert limited.column("id").to_pylist()[:4] == ["contrast/1/00000", "contrast/1/00001", "contrast/2/00000",
                                                    "contrast/2/00001"]


def test_read_published_imagenet_c_tree(tmp_path):
    root = tmp_path / "ImageNet-C"
    pixels = {}
    for i, rel in enumerate(["snow/2/n02/b.JPEG", "snow/2/n01/a.JPEG", "snow/1/n01/c.JPEG", "frost/5/n02/d.png"]):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        image = np.full((6, 5, 3), 40 * i, np.uint8)
        Image.fromarray(image).save(path, format="PNG")  # PNG bytes: decoded exactly whatever the name
        pixels[rel] = image
    table = read_source(f"imagenet-c:{root}")
    assert table.column("id").to_pylist() == ["frost/5/n02/d.png", "snow/1/n01/c.JPEG", "snow/2/n01/a.JPEG",
                                              "snow/2/n02/b.JPEG"]
    assert table.column("label").to_pylist() == [1, 0, 0, 1]  # sorted wnid folders: n01 -> 0, n02 -> 1
    assert table.column("corruption").to_pylist() == ["frost", "snow", "snow", "snow"]
    assert table.column("severity").to_pylist() == [5, 1, 2, 2]
    assert table_classes(table) == ["n01", "n02"]
    for row in table.to_pylist():
        np.testing.assert_array_equal(np.asarray(decode_image(row)), pixels[row["id"]])
    assert read_source(f"imagenet-c:{root}", limit=1).column("id").to_pylist() == [
        "frost/5/n02/d.png", "snow/1/n01/c.JPEG", "snow/2/n01/a.JPEG"]


def test_read_published_corruptions_validation(tmp_path):
    from rmd_ray.data.readers import read_published_corruptions

    with pytest.raises(ValueError, match="is not a directory"):
        read_published_corruptions(tmp_path / "missing")
    with pytest.raises(ValueError, match="source 'imagenet-c' needs a path"):
        read_source("imagenet-c:")
    root = tmp_path / "c"
    root.mkdir()
    np.save(root / "labels.npy", np.zeros(10, np.uint8))
    with pytest.raises(ValueError, match=r"no <corruption>.npy next to"):
        read_published_corruptions(root)
    np.save(root / "fog.npy", np.zeros((12, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match=r"has shape \(12, 32, 32, 3\); CIFAR-10-C needs \(5 n, H, W, 3\)"):
        read_published_corruptions(root)

"""Tests for rmd_ray.data.decode: real bad-image files built with PIL, batching, augmentation."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pyarrow as pa
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile
from torchvision import transforms as T

from rmd_ray.data.decode import DecodeError, _crop_box, augment, decode_batch, decode_image, view_seed

torch.set_num_threads(1)

PREPROCESS = T.Compose([T.Resize((16, 16)), T.ToTensor()])


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _pattern(h=24, w=32) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 7 % 256, yy * 9 % 256, (xx + yy) * 5 % 256], axis=-1).astype(np.uint8)


def _row(**kw):
    return {"id": "x", "label": 0, **kw}


# ---------------------------------------------------------------------------------------------
# bad images, built for real


def test_random_bytes_are_not_an_image():
    data = np.random.default_rng(0).bytes(500)
    with pytest.raises(DecodeError, match=r"not a recognised image: PIL cannot identify the 500 bytes"):
        decode_image(_row(image=data))


def test_jpeg_header_followed_by_garbage_is_an_error():
    # What PIL says depends on where the garbage breaks the marker structure; each is a DecodeError
    # with one of three reasons, never a silently decoded image.
    jpg = _encode(Image.fromarray(_pattern()), "JPEG")
    reasons = set()
    for seed in range(8):
        data = jpg[:20] + np.random.default_rng(seed).bytes(400)
        with pytest.raises(DecodeError) as info:
            decode_image(_row(image=data))
        reasons.add(str(info.value).split(":")[0])
    assert reasons <= {"not a recognised image", "truncated image file", "corrupt image data"}


def test_truncated_jpeg_file_is_an_error_not_grey(tmp_path):
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    jpg = _encode(Image.fromarray(_pattern(64, 64)), "JPEG", quality=95)
    path = tmp_path / "cut.jpg"
    path.write_bytes(jpg[: len(jpg) // 2])
    with pytest.raises(DecodeError, match=rf"truncated image file: image file is truncated.*\({path}\)"):
        decode_image(_row(path=str(path)))


def test_truncated_png_is_an_error():
    png = _encode(Image.fromarray(_pattern(64, 64)), "PNG")
    with pytest.raises(DecodeError, match=r"truncated image file"):
        decode_image(_row(image=png[: len(png) // 2]))


def test_load_truncated_images_switched_on_elsewhere_is_refused(monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    png = _encode(Image.fromarray(_pattern()), "PNG")
    with pytest.raises(RuntimeError, match=r"LOAD_TRUNCATED_IMAGES is True"):
        decode_image(_row(image=png))


def test_empty_bytes_and_missing_file(tmp_path):
    with pytest.raises(DecodeError, match=r"empty image data \(0 bytes\)"):
        decode_image(_row(image=b""))
    with pytest.raises(DecodeError, match=r"file not found: .*nope\.jpg"):
        decode_image(_row(path=str(tmp_path / "nope.jpg")))
    with pytest.raises(DecodeError, match=r"cannot read file"):
        decode_image(_row(path=str(tmp_path)))  # a directory


def test_grayscale_becomes_rgb_with_equal_channels(tmp_path):
    gray = (_pattern()[:, :, 0]).copy()
    path = tmp_path / "g.png"
    Image.fromarray(gray, mode="L").save(path)
    img = decode_image(_row(path=str(path)))
    arr = np.asarray(img)
    assert img.mode == "RGB" and arr.shape == (24, 32, 3)
    for c in range(3):
        np.testing.assert_array_equal(arr[:, :, c], gray)


def test_cmyk_jpeg_becomes_rgb_close_to_the_original():
    rgb = (200, 50, 100)
    cmyk = Image.new("RGB", (32, 32), rgb).convert("CMYK")
    data = _encode(cmyk, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    img = decode_image(_row(image=data))
    assert img.mode == "RGB"
    np.testing.assert_allclose(np.asarray(img).reshape(-1, 3).mean(axis=0), rgb, atol=3)


def test_png_content_under_jpeg_name_decodes_by_content(tmp_path):
    arr = _pattern()
    path = tmp_path / "really_png.JPEG"
    path.write_bytes(_encode(Image.fromarray(arr), "PNG"))
    np.testing.assert_array_equal(np.asarray(decode_image(_row(path=str(path)))), arr)  # lossless


def test_one_pixel_image_decodes_and_preprocesses():
    data = _encode(Image.new("RGB", (1, 1), (10, 20, 30)), "PNG")
    img = decode_image(_row(image=data))
    assert img.size == (1, 1) and img.getpixel((0, 0)) == (10, 20, 30)
    x, ok, errors = decode_batch([_row(image=data)], preprocess=PREPROCESS)
    assert x.shape == (1, 3, 16, 16) and ok == ["x"] and errors == []
    np.testing.assert_allclose(x[0, :, 0, 0].numpy(), np.array([10, 20, 30]) / 255, atol=1e-6)


def test_palette_with_transparency_becomes_rgb_without_warning():
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    pal.putpixel((1, 1), 1)
    data = _encode(pal, "PNG", transparency=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        img = decode_image(_row(image=data))
    assert img.mode == "RGB"
    assert img.getpixel((0, 0)) == (255, 0, 0)
    assert img.getpixel((1, 1)) == (0, 255, 0)  # transparent pixel keeps its colour, alpha dropped


def test_rgba_drops_alpha_and_16bit_is_rescaled():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = (1, 2, 3)
    rgba[..., 3] = 0  # fully transparent: torchvision's pil_loader keeps the colour too
    img = decode_image(_row(image=_encode(Image.fromarray(rgba, "RGBA"), "PNG")))
    assert img.getpixel((0, 0)) == (1, 2, 3)
    deep = np.array([[257 * 100, 65535], [0, 257]], np.uint16)
    img16 = decode_image(_row(image=_encode(Image.fromarray(deep), "PNG")))
    np.testing.assert_array_equal(np.asarray(img16)[:, :, 0], [[100, 255], [0, 1]])


def test_raw_pixels_all_layouts():
    arr = _pattern(5, 7)
    got = decode_image(_row(pixels=arr.tobytes(), shape=[5, 7, 3]))
    np.testing.assert_array_equal(np.asarray(got), arr)
    gray = arr[:, :, 1].copy()
    for shape in ([5, 7], [5, 7, 1]):
        got = np.asarray(decode_image(_row(pixels=gray.tobytes(), shape=shape)))
        assert got.shape == (5, 7, 3)
        np.testing.assert_array_equal(got[:, :, 2], gray)
    rgba = np.concatenate([arr, np.full((5, 7, 1), 7, np.uint8)], axis=-1)
    np.testing.assert_array_equal(np.asarray(decode_image(_row(pixels=rgba, shape=(5, 7, 4)))), arr)


def test_raw_pixels_errors():
    with pytest.raises(DecodeError, match=r"pixels has 10 bytes but shape \[5, 7\] needs 35"):
        decode_image(_row(pixels=b"\0" * 10, shape=[5, 7]))
    with pytest.raises(
        DecodeError, match=r"shape must be \[H, W\] or \[H, W, C\] with C in 1, 3, 4; got \[5, 7, 2\]"
    ):
        decode_image(_row(pixels=b"\0" * 70, shape=[5, 7, 2]))
    with pytest.raises(DecodeError, match=r"pixels given without shape"):
        decode_image(_row(pixels=b"\0" * 70))
    with pytest.raises(DecodeError, match=r"empty image \(shape \[0, 7\]\)"):
        decode_image(_row(pixels=b"", shape=[0, 7]))
    with pytest.raises(DecodeError, match=r"pixels must be uint8"):
        decode_image(_row(pixels=np.zeros(35, np.float32), shape=[5, 7]))
    with pytest.raises(DecodeError, match=r"shape must be a list of ints"):
        decode_image(_row(pixels=b"\0" * 35, shape=["a", 7]))


def test_row_needs_exactly_one_source():
    with pytest.raises(DecodeError, match=r"exactly one of image / path / pixels, found none"):
        decode_image(_row(image=None, path=None))
    with pytest.raises(DecodeError, match=r"found image, path"):
        decode_image(_row(image=b"abc", path="/x.jpg"))
    with pytest.raises(DecodeError, match=r"image must be encoded bytes, got str"):
        decode_image(_row(image="abc"))


# ---------------------------------------------------------------------------------------------
# batches


def _mixed_rows(tmp_path):
    good = _encode(Image.fromarray(_pattern()), "PNG")
    cut = tmp_path / "cut.png"
    cut.write_bytes(good[: len(good) // 2])
    return [
        {"id": "a", "label": 1, "image": good, "path": None},
        {"id": "b", "label": 2, "image": b"garbage", "path": None},
        {"id": "c", "label": 3, "image": None, "path": str(cut)},
        {"id": "d", "label": 4, "image": None, "path": str(tmp_path / "missing.png")},
        {"id": "e", "label": 5, "image": good, "path": None},
    ]


def test_decode_batch_keeps_good_rows_and_reports_bad_ones(tmp_path):
    rows = _mixed_rows(tmp_path)
    x, ok, errors = decode_batch(rows, preprocess=PREPROCESS)
    assert ok == ["a", "e"] and x.shape == (2, 3, 16, 16)
    expected = PREPROCESS(Image.fromarray(_pattern()))
    torch.testing.assert_close(x[0], expected)
    torch.testing.assert_close(x[1], expected)
    assert [(i, lab) for i, lab, _ in errors] == [("b", 2), ("c", 3), ("d", 4)]
    assert "not a recognised image" in errors[0][2]
    assert "truncated" in errors[1][2]
    assert "file not found" in errors[2][2]


def test_decode_batch_accepts_arrow_tables_and_column_batches(tmp_path):
    rows = _mixed_rows(tmp_path)
    ref = decode_batch(rows, preprocess=PREPROCESS)
    table = pa.Table.from_pylist(rows)
    columns = {k: np.array([r[k] for r in rows], dtype=object) for k in rows[0]}
    for batch in (table, columns):
        x, ok, errors = decode_batch(batch, preprocess=PREPROCESS)
        torch.testing.assert_close(x, ref[0])
        assert ok == ref[1] and errors == ref[2]


def test_decode_batch_all_bad_gives_empty_batch_of_the_right_shape():
    x, ok, errors = decode_batch(
        [_row(image=b"zz"), {"id": "y", "label": 1, "image": b""}], preprocess=PREPROCESS
    )
    assert x.shape == (0, 3, 16, 16) and ok == [] and len(errors) == 2
    x, ok, errors = decode_batch([], preprocess=PREPROCESS)
    assert x.shape == (0, 3, 16, 16) and ok == [] and errors == []


def test_decode_batch_validation():
    good = _encode(Image.fromarray(_pattern()), "PNG")
    with pytest.raises(ValueError, match=r"row 0 lacks 'id' or 'label'"):
        decode_batch([{"image": good}], preprocess=PREPROCESS)
    sizes = iter([(8, 8), (9, 9)])
    with pytest.raises(ValueError, match=r"preprocess gave shape \(3, 9, 9\) for id 'q' but \(3, 8, 8\)"):
        decode_batch(
            [{"id": "p", "label": 0, "image": good}, {"id": "q", "label": 0, "image": good}],
            preprocess=lambda im: T.ToTensor()(im.resize(next(sizes))),
        )
    with pytest.raises(ValueError, match=r"view must be None or a non-negative int"):
        decode_batch([], preprocess=PREPROCESS, view=-1)
    with pytest.raises(TypeError, match=r"preprocess must be a callable"):
        decode_batch([], preprocess=None)
    with pytest.raises(ValueError, match=r"columns of different lengths"):
        decode_batch({"id": ["a"], "label": [1, 2]}, preprocess=PREPROCESS)
    with pytest.raises(TypeError, match=r"rows must be a sequence"):
        decode_batch(42, preprocess=PREPROCESS)


def test_decode_batch_views_are_augment_then_preprocess():
    img = Image.fromarray(_pattern(40, 40))
    rows = [{"id": "img-7", "label": 0, "pixels": np.asarray(img).tobytes(), "shape": [40, 40, 3]}]
    for view in range(3):
        x, _, _ = decode_batch(rows, preprocess=PREPROCESS, view=view, seed=5)
        expected = PREPROCESS(augment(img, seed=view_seed("img-7", view, seed=5)))
        torch.testing.assert_close(x[0], expected)
    x0, _, _ = decode_batch(rows, preprocess=PREPROCESS, view=0)
    x1, _, _ = decode_batch(rows, preprocess=PREPROCESS, view=1)
    assert not torch.equal(x0, x1)


# ---------------------------------------------------------------------------------------------
# augmentation


def test_view_seed_is_stable_and_distinct():
    s = view_seed("train/cat/0042.jpg", 3)
    assert s == view_seed("train/cat/0042.jpg", 3)
    assert 0 <= s < 2**63
    others = {view_seed("train/cat/0042.jpg", v) for v in range(50)} | {
        view_seed(f"id{i}", 3) for i in range(50)
    }
    assert len(others) == 100
    assert view_seed("a", 1, seed=1) != view_seed("a", 1, seed=2)


def test_augment_is_deterministic_and_keeps_size():
    img = Image.fromarray(_pattern(30, 50))
    a, b = augment(img, seed=11), augment(img, seed=11)
    assert a.size == img.size and a.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    different = sum(
        not np.array_equal(np.asarray(augment(img, seed=s)), np.asarray(a)) for s in range(12, 22)
    )
    assert different == 10


def test_augment_full_crop_is_identity_or_mirror_half_the_time():
    arr = _pattern(20, 20)
    img = Image.fromarray(arr)
    flips = 0
    for seed in range(200):
        out = np.asarray(augment(img, seed=seed, scale=(1.0, 1.0), ratio=(1.0, 1.0)))
        if np.array_equal(out, arr[:, ::-1]):
            flips += 1
        else:
            np.testing.assert_array_equal(out, arr)
    assert 70 <= flips <= 130  # Binomial(200, 1/2): mean 100, sd 7
    out = np.asarray(augment(img, seed=3, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False))
    np.testing.assert_array_equal(out, arr)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    width=st.integers(1, 300),
    height=st.integers(1, 300),
    lo=st.floats(0.05, 1.0),
)
def test_crop_box_inside_image_with_area_in_scale(seed, width, height, lo):
    scale, ratio = (lo, 1.0), (3 / 4, 4 / 3)
    top, left, h, w = _crop_box(np.random.default_rng(seed), width, height, scale, ratio)
    assert 0 <= top and 0 <= left and 1 <= h and 1 <= w
    assert top + h <= height and left + w <= width
    frac = h * w / (width * height)
    fallback = (top, left) == ((height - h) // 2, (width - w) // 2)
    if not fallback and min(width, height) >= 20:
        # rounding of w and h moves the area by at most ~ (w + h + 1) pixels
        slack = (w + h + 1) / (width * height)
        assert lo - slack <= frac <= 1.0 + 1e-12


def test_augment_validation():
    img = Image.new("RGB", (8, 8))
    with pytest.raises(ValueError, match=r"seed must be a non-negative int"):
        augment(img, seed=-1)
    with pytest.raises(ValueError, match=r"scale must satisfy 0 < lo <= hi <= 1"):
        augment(img, seed=0, scale=(0.5, 1.5))
    with pytest.raises(ValueError, match=r"ratio must satisfy 0 < lo <= hi"):
        augment(img, seed=0, ratio=(2.0, 1.0))
    with pytest.raises(TypeError, match=r"image must be a PIL.Image"):
        augment(np.zeros((8, 8, 3)), seed=0)


# ---------------------------------------------------------------------------------------------
# reduced-size JPEG decoding (min_side)


def _photo(w: int, h: int) -> bytes:
    yy, xx = np.mgrid[0:h, 0:w]
    pixels = np.stack([xx % 256, yy % 256, (xx // 3 + yy // 5) % 256], axis=-1).astype(np.uint8)
    return _encode(Image.fromarray(pixels), "JPEG", quality=90)


@pytest.mark.parametrize(
    ("min_side", "size"),
    [(None, (1000, 800)), (500, (1000, 800)), (400, (500, 400)), (224, (500, 400)), (200, (250, 200)),
     (100, (125, 100)), (50, (125, 100)), (1, (125, 100))],
)
def test_a_large_jpeg_is_decoded_at_the_largest_scale_that_keeps_min_side(min_side, size):
    # 1/2, 1/4, 1/8 only (libjpeg's DCT scaling through PIL's draft); never below min_side
    image = decode_image(_row(image=_photo(1000, 800)), min_side=min_side)
    assert image.mode == "RGB" and image.size == size
    assert min_side is None or min(image.size) >= min_side


def test_reduced_decoding_averages_what_full_decoding_has():
    # scale 1/2 decoding is close to a 2x2 box average of the full decode (a resampling, not a crop)
    full = np.asarray(decode_image(_row(image=_photo(640, 480))), dtype=np.float64)
    half = np.asarray(decode_image(_row(image=_photo(640, 480)), min_side=240), dtype=np.float64)
    assert half.shape == (240, 320, 3)
    boxed = full.reshape(240, 2, 320, 2, 3).mean(axis=(1, 3))
    assert np.abs(half - boxed).mean() < 3.0


def test_min_side_leaves_png_and_pixels_at_full_size(tmp_path):
    png = _encode(Image.fromarray(np.zeros((400, 600, 3), np.uint8)), "PNG")
    assert decode_image(_row(image=png), min_side=50).size == (600, 400)
    path = tmp_path / "big.JPEG"
    path.write_bytes(_photo(1000, 800))
    assert decode_image(_row(path=str(path)), min_side=100).size == (125, 100)  # a path as well as bytes
    pixels = np.zeros((300, 300, 3), np.uint8)
    assert decode_image(_row(pixels=pixels.tobytes(), shape=[300, 300, 3]), min_side=10).size == (300, 300)


def test_reduced_decoding_still_reports_a_truncated_jpeg():
    data = _photo(1000, 800)
    with pytest.raises(DecodeError, match="truncated"):
        decode_image(_row(image=data[: len(data) // 2]), min_side=100)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "224"])
def test_min_side_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match="min_side must be None or an int >= 1"):
        decode_image(_row(image=_photo(64, 64)), min_side=bad)

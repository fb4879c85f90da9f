"""Tests for rmd_ray.data.corruptions: shapes and dtypes, hand formulas, determinism, severity
monotonicity on a real ImageNet image, validation, and the ImageNet-C folder reader."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from real_data import IMAGENET_SAMPLE
from scipy import ndimage

from rmd_ray.data import corruptions as C

NAMES = [
    "brightness", "contrast", "defocus_blur", "elastic_transform", "fog", "frost", "gaussian_blur",
    "gaussian_noise", "glass_blur", "impulse_noise", "jpeg_compression", "motion_blur", "pixelate", "saturate",
    "shot_noise", "snow", "spatter", "speckle_noise", "zoom_blur",
]
RANDOM = {
    "gaussian_noise", "shot_noise", "impulse_noise", "elastic_transform", "speckle_noise", "glass_blur",
    "motion_blur", "snow", "frost", "fog", "spatter",
}
HAS_FROST = importlib.util.find_spec("imagecorruptions") is not None
needs_frost = pytest.mark.skipif(not HAS_FROST, reason="frost textures need: pip install --no-deps imagecorruptions")
SEVERITY = r"severity must be an integer in 1..5"
SAMPLE = IMAGENET_SAMPLE


def _random_image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def real_image():
    """One real ImageNet photo, resized and centre-cropped to 224 px as ImageNet-C was made."""
    path = SAMPLE / "n01440764" / "n01440764_tench.JPEG"
    if not path.is_file():
        pytest.skip(f"real image {path} is absent (shared data not mounted)")
    with Image.open(path) as im:
        im = im.convert("RGB")
        scale = 256 / min(im.size)
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.BILINEAR)
        left, top = (im.width - 224) // 2, (im.height - 224) // 2
        return np.asarray(im.crop((left, top, left + 224, top + 224)))


def test_registry_lists_the_nineteen_imagenet_c_corruptions():
    assert C.CORRUPTIONS.names() == NAMES
    assert {n for n in NAMES if C.CORRUPTIONS.get(n).random} == RANDOM
    assert C.PRESETS.names() == ["cifar", "imagenet"]


def test_severity_parameters_are_the_reference_values():
    # spot checks against make_imagenet_c.py / make_cifar_c.py
    p = {n: C.CORRUPTIONS.get(n).params for n in NAMES}
    assert p["gaussian_noise"]["imagenet"] == (0.08, 0.12, 0.18, 0.26, 0.38)
    assert p["gaussian_noise"]["cifar"] == (0.04, 0.06, 0.08, 0.09, 0.10)
    assert p["shot_noise"]["imagenet"] == (60, 25, 12, 5, 3)
    assert p["impulse_noise"]["imagenet"] == (0.03, 0.06, 0.09, 0.17, 0.27)
    assert p["defocus_blur"]["imagenet"][4] == (10, 0.5)
    assert p["gaussian_blur"]["imagenet"] == (1, 2, 3, 4, 6)
    assert p["contrast"]["imagenet"] == (0.4, 0.3, 0.2, 0.1, 0.05)
    assert p["brightness"]["cifar"] == (0.05, 0.1, 0.15, 0.2, 0.3)
    assert p["saturate"]["imagenet"][4] == (20, 0.2)
    assert p["jpeg_compression"]["imagenet"] == (25, 18, 15, 10, 7)
    assert p["pixelate"]["cifar"] == (0.95, 0.9, 0.85, 0.75, 0.65)
    assert p["elastic_transform"]["imagenet"][0] == pytest.approx((488, 170.8, 24.4))
    # the seven added with the full set: every severity pinned (make_imagenet_c.py / make_cifar_c.py)
    assert p["speckle_noise"]["imagenet"] == (0.15, 0.2, 0.35, 0.45, 0.6)
    assert p["speckle_noise"]["cifar"] == (0.06, 0.1, 0.12, 0.16, 0.2)
    assert p["glass_blur"]["imagenet"] == ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))
    assert p["glass_blur"]["cifar"] == ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2))
    assert p["motion_blur"]["imagenet"] == ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))
    assert p["motion_blur"]["cifar"] == ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5))
    assert p["zoom_blur"]["imagenet"] == ((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03))
    assert p["zoom_blur"]["cifar"] == ((1.06, 0.01), (1.11, 0.01), (1.16, 0.01), (1.21, 0.01), (1.26, 0.01))
    # np.arange(1, stop, step) as the reference, float quirk included: (1.11 - 1) / 0.01 rounds up, so
    # severity 1 zooms by 12 factors, 1.00 .. 1.11 (ceil((stop - 1) / step) in floating point)
    assert [len(np.arange(1, a, b)) for a, b in p["zoom_blur"]["imagenet"]] == [12, 16, 11, 13, 11]
    assert p["snow"]["imagenet"] == ((0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
                                     (0.55, 0.3, 4, 0.9, 12, 8, 0.7), (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
                                     (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55))
    assert p["snow"]["cifar"] == ((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
                                  (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
                                  (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8))
    assert p["frost"]["imagenet"] == ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))
    assert p["frost"]["cifar"] == ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45))
    assert p["fog"]["imagenet"] == ((1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4))
    assert p["fog"]["cifar"] == ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75))
    assert p["spatter"]["imagenet"] == ((0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0),
                                        (0.65, 0.3, 2, 0.68, 0.5, 0), (0.65, 0.3, 1, 0.65, 1.5, 1),
                                        (0.67, 0.4, 1, 0.65, 1.5, 1))
    assert p["spatter"]["cifar"] == ((0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0),
                                     (0.65, 0.3, 1, 0.69, 0.5, 0), (0.65, 0.1, 0.7, 0.69, 0.6, 1),
                                     (0.65, 0.1, 0.5, 0.68, 0.6, 1))


@pytest.mark.parametrize("name", [n if n != "frost" else pytest.param(n, marks=needs_frost) for n in NAMES])
@pytest.mark.parametrize("preset", ["imagenet", "cifar"])
def test_dtype_and_shape_preserved_for_any_size(name, preset):
    for h, w in ((17, 23), (32, 32), (2, 5), (1, 1)):
        image = _random_image(h, w)
        before = image.copy()
        for severity in (1, 5):
            out = C.corrupt(image, name, severity=severity, rng=3, preset=preset)
            assert out.dtype == np.uint8 and out.shape == (h, w, 3)
            assert out.flags.writeable  # a fresh array, not a read-only view of a PIL buffer
        np.testing.assert_array_equal(image, before)  # input untouched


@pytest.mark.parametrize("name", [n if n != "frost" else pytest.param(n, marks=needs_frost) for n in NAMES])
def test_determinism_with_the_same_seed(name):
    image = _random_image(24, 20, seed=1)
    a = C.corrupt(image, name, severity=3, rng=np.random.default_rng(42))
    b = C.corrupt(image, name, severity=3, rng=42)  # an int seed is default_rng(seed)
    np.testing.assert_array_equal(a, b)
    c = C.corrupt(image, name, severity=3, rng=43)
    if name in RANDOM:
        assert not np.array_equal(a, c)
    else:
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize(
    "name",
    ["gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "gaussian_blur", "motion_blur",
     "contrast", "brightness", "jpeg_compression", "pixelate", "speckle_noise", "zoom_blur"],
)
def test_mean_abs_difference_grows_with_severity_on_a_real_image(real_image, name):
    diffs = [
        np.abs(C.corrupt(real_image, name, severity=s, rng=0).astype(float) - real_image).mean()
        for s in range(1, 6)
    ]
    assert all(b > a for a, b in zip(diffs, diffs[1:], strict=False)), diffs
    assert diffs[0] > 1.0  # even severity 1 visibly changes the image


def test_gaussian_and_shot_noise_match_their_formulas():
    image = _random_image(5, 4, seed=2)
    x = image / 255.0
    expected = np.rint(np.clip(x + np.random.default_rng(9).normal(scale=0.18, size=x.shape), 0, 1) * 255)
    np.testing.assert_array_equal(C.corrupt(image, "gaussian_noise", severity=3, rng=9), expected)
    expected = np.rint(np.clip(np.random.default_rng(9).poisson(x * 5) / 5, 0, 1) * 255)
    np.testing.assert_array_equal(C.corrupt(image, "shot_noise", severity=4, rng=9), expected)


def test_impulse_noise_replaces_about_amount_of_values_by_0_or_255():
    image = np.full((100, 100, 3), 128, np.uint8)
    out = C.corrupt(image, "impulse_noise", severity=5, rng=0)  # amount 0.27
    changed = out != 128
    assert set(np.unique(out[changed]).tolist()) == {0, 255}
    assert changed.mean() == pytest.approx(0.27, abs=0.01)
    assert (out[changed] == 255).mean() == pytest.approx(0.5, abs=0.03)


def test_contrast_matches_hand_formula():
    image = np.array([[[0, 100, 255], [50, 100, 55]]], dtype=np.uint8)  # 1 x 2 pixels
    x = image / 255.0
    mean = x.mean(axis=(0, 1))  # per channel: 25, 100, 155 (/255)
    expected = np.rint(np.clip((x - mean) * 0.2 + mean, 0, 1) * 255)
    np.testing.assert_array_equal(C.corrupt(image, "contrast", severity=3, rng=0), expected)
    # by hand: red 0 -> 25 - 25 * .2 = 20, 50 -> 30; blue 255 -> 155 + 100 * .2 = 175, 55 -> 135
    np.testing.assert_array_equal(expected, [[[20, 100, 175], [30, 100, 135]]])


def test_brightness_matches_hand_formula():
    # In HSV only V = max(R, G, B) changes, so RGB scales by min(V + c, 1) / V; black becomes grey c.
    image = np.array([[[200, 100, 50], [0, 0, 0], [255, 255, 255], [30, 60, 90]]], dtype=np.uint8)
    x = image / 255.0
    v = x.max(axis=-1, keepdims=True)
    c = 0.3  # imagenet severity 3
    scaled = np.where(v > 0, x * np.minimum(v + c, 1) / np.where(v > 0, v, 1), c)
    expected = np.rint(np.clip(scaled, 0, 1) * 255)
    np.testing.assert_array_equal(C.corrupt(image, "brightness", severity=3, rng=0), expected)
    np.testing.assert_array_equal(expected[0, 1], [76, 76, 76])  # 0.3 * 255 = 76.5 -> 76 (half to even)
    np.testing.assert_array_equal(expected[0, 2], [255, 255, 255])


def test_hsv_conversion_matches_scikit_image_conventions():
    rgb = np.array([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0.5], [0, 0, 0], [0.8, 0.4, 0.4]])
    hsv = C.rgb_to_hsv(rgb)
    expected = [[0, 1, 1], [1 / 3, 1, 1], [2 / 3, 1, 1], [0, 0, 0.5], [0, 0, 0], [0, 0.5, 0.8]]
    np.testing.assert_allclose(hsv, expected)
    x = np.random.default_rng(0).random((50, 3))
    np.testing.assert_allclose(C.hsv_to_rgb(C.rgb_to_hsv(x)), x, atol=1e-12)


def test_saturate_matches_hand_values():
    image = np.array([[[204, 102, 102], [100, 100, 100]]], dtype=np.uint8)
    # severity 1, (a, b) = (0.3, 0): (.8, .4, .4) has S = .5 -> .15: (.8, .68, .68)
    out = C.corrupt(image, "saturate", severity=1, rng=0)
    np.testing.assert_array_equal(out, [[[204, 173, 173], [100, 100, 100]]])
    # severity 4, (5, 0.1): S = min(.5 * 5 + .1, 1) = 1 -> (.8, 0, 0); grey gets S = .1 at hue 0 (red)
    out = C.corrupt(image, "saturate", severity=4, rng=0)
    np.testing.assert_array_equal(out, [[[204, 0, 0], [100, 90, 90]]])


@pytest.mark.parametrize("name", ["defocus_blur", "gaussian_blur", "zoom_blur", "pixelate", "contrast"])
@pytest.mark.parametrize("preset", ["imagenet", "cifar"])
def test_constant_image_is_a_fixed_point(name, preset):
    image = np.full((40, 30, 3), (17, 140, 230), dtype=np.uint8)
    for severity in range(1, 6):
        expected = image
        if name == "defocus_blur":  # the reference kernel's sum (see disk) scales a flat image
            gain = C.disk(*C.CORRUPTIONS.get(name).params[preset][severity - 1]).sum()
            expected = np.rint(np.clip(image / 255.0 * gain, 0, 1) * 255)
        out = C.corrupt(image, name, severity=severity, rng=0, preset=preset)
        np.testing.assert_array_equal(out, expected)


def test_blur_kernels_are_normalised_and_symmetric():
    for radius, alias in ((3, 0.1), (6, 0.5), (0.3, 0.4), (1.5, 0.1), (8, 0.5), (10, 0.5)):
        k = C.disk(radius, alias)
        np.testing.assert_allclose(k, k[::-1, ::-1])
        np.testing.assert_allclose(k, k.T)
        if radius <= 6:
            assert k.sum() == pytest.approx(1.0)
    # reference quirk kept: the disk touches the kernel edge and the mirrored border adds mass
    assert C.disk(8, 0.5).sum() == pytest.approx(1.013, abs=1e-3)
    assert C.disk(10, 0.5).sum() == pytest.approx(1.011, abs=1e-3)
    # radius 3: 29 lattice points with x^2 + y^2 <= 9, alias blur .1 is nearly the identity
    assert C.disk(3, 0.1).max() == pytest.approx(1 / 29, rel=1e-6)
    assert C.disk(10, 0.5).shape == (21, 21) and C.disk(3, 0.1).shape == (17, 17)


def test_pixelate_averages_blocks():
    image = np.zeros((4, 4, 3), np.uint8)
    image[:2, :2] = 10
    image[:2, 2:] = 20
    image[2:, :2] = 30
    image[2:, 2:] = 40
    image[0, 0] = 14  # block mean (14 + 10 * 3) / 4 = 11
    out = C.corrupt(image, "pixelate", severity=2, rng=0)  # factor .5 -> 2 x 2 -> back
    np.testing.assert_array_equal(out[..., 0], [[11, 11, 20, 20], [11, 11, 20, 20], [30, 30, 40, 40],
                                                [30, 30, 40, 40]])


class _ShiftRng:
    """Stands in for a Generator: the affine control points move by (+2, 0) in (x, y); no field."""

    def uniform(self, low, high, size):
        if size == (3, 2):
            return np.tile([2.0, 0.0], (3, 1))
        return np.zeros(size)


def test_elastic_affine_moves_content_the_way_warp_affine_does():
    image = _random_image(30, 36, seed=5)
    out = C.elastic_transform(image, (0.0, 1.0, 5.0), _ShiftRng())
    # a control-point translation by +2 in x moves every pixel 2 columns to the right
    np.testing.assert_allclose(out[:, 2:], image[:, :-2] / 255.0, atol=1e-12)


def test_elastic_identity_when_field_and_jitter_vanish():
    image = _random_image(9, 12, seed=6)
    out = C.elastic_transform(image, (0.0, 0.0, 0.0), np.random.default_rng(0))
    np.testing.assert_allclose(out, image / 255.0, atol=1e-12)


def test_cifar_preset_is_milder_on_small_images():
    image = _random_image(32, 32, seed=7)
    for name in ("gaussian_noise", "gaussian_blur", "jpeg_compression"):
        imnet = np.abs(C.corrupt(image, name, severity=5, rng=0).astype(float) - image).mean()
        cifar = np.abs(C.corrupt(image, name, severity=5, rng=0, preset="cifar").astype(float) - image).mean()
        assert cifar < imnet, name


@pytest.mark.parametrize(
    "image, kwargs, exc, match",
    [
        ([[[0, 0, 0]]], {}, TypeError, "must be a numpy array"),
        (np.zeros((4, 4, 3), np.float32), {}, TypeError, "dtype float32; pass uint8"),
        (np.zeros((4, 4), np.uint8), {}, ValueError, r"shape \(H, W, 3\)"),
        (np.zeros((4, 4, 4), np.uint8), {}, ValueError, r"shape \(H, W, 3\)"),
        (np.zeros((0, 4, 3), np.uint8), {}, ValueError, "image is empty"),
        (np.zeros((4, 4, 3), np.uint8), {"name": "barrel"}, ValueError,
         "unknown corruption 'barrel'; valid names: brightness, contrast, defocus_blur"),
        (np.zeros((4, 4, 3), np.uint8), {"name": 3}, TypeError, "must be given by name"),
        (np.zeros((4, 4, 3), np.uint8), {"preset": "tiny"}, ValueError,
         "unknown corruption preset 'tiny'; valid names: cifar, imagenet"),
        (np.zeros((4, 4, 3), np.uint8), {"severity": 0}, ValueError, SEVERITY),
        (np.zeros((4, 4, 3), np.uint8), {"severity": 6}, ValueError, SEVERITY),
        (np.zeros((4, 4, 3), np.uint8), {"severity": 2.0}, ValueError, SEVERITY),
        (np.zeros((4, 4, 3), np.uint8), {"severity": True}, ValueError, SEVERITY),
        (np.zeros((4, 4, 3), np.uint8), {"rng": None}, TypeError, "rng must be a numpy Generator"),
        (np.zeros((4, 4, 3), np.uint8), {"rng": -1}, TypeError, "rng must be a numpy Generator"),
        (np.zeros((4, 4, 3), np.uint8), {"rng": np.random.RandomState(0)}, TypeError, "rng must be a numpy"),
    ],
)
def test_corrupt_validation(image, kwargs, exc, match):
    args = {"name": "gaussian_noise", "severity": 1, "rng": 0} | kwargs
    name = args.pop("name")
    with pytest.raises(exc, match=match):
        C.corrupt(image, name, **args)


# -------------------------------------------------------------------------------------------
# read_imagenet_c
# -------------------------------------------------------------------------------------------


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


@pytest.fixture
def imagenet_c_tree(tmp_path):
    for rel in (
        "gaussian_noise/1/n02000000/b.JPEG",
        "gaussian_noise/1/n02000000/a.JPEG",
        "gaussian_noise/1/n01000000/c.png",
        "gaussian_noise/1/n01000000/notes.txt",
        "gaussian_noise/3/n01000000/d.jpg",
        "contrast/5/n03000000/e.JPEG",
    ):
        _touch(tmp_path / rel)
    (tmp_path / "README.txt").write_text("ignored")
    return tmp_path


def test_read_imagenet_c_lists_samples_in_order_with_sorted_wnid_labels(imagenet_c_tree):
    got = list(C.read_imagenet_c(imagenet_c_tree))
    assert [(s.id, s.label, s.corruption, s.severity) for s in got] == [
        ("contrast/5/n03000000/e.JPEG", 2, "contrast", 5),
        ("gaussian_noise/1/n01000000/c.png", 0, "gaussian_noise", 1),
        ("gaussian_noise/1/n02000000/a.JPEG", 1, "gaussian_noise", 1),
        ("gaussian_noise/1/n02000000/b.JPEG", 1, "gaussian_noise", 1),
        ("gaussian_noise/3/n01000000/d.jpg", 0, "gaussian_noise", 3),
    ]
    assert all(s.path == imagenet_c_tree / s.id and s.path.is_file() for s in got)
    sample_id, label, corruption, severity, path = got[0]  # a plain 5-tuple too
    assert (label, severity) == (2, 5)


def test_read_imagenet_c_with_given_wnids_and_filter(imagenet_c_tree, tmp_path_factory):
    wnids = ["n09999999", "n03000000", "n02000000", "n01000000"]
    got = list(C.read_imagenet_c(imagenet_c_tree, wnids=wnids, corruptions=["gaussian_noise"]))
    assert [(s.label, s.severity) for s in got] == [(3, 1), (2, 1), (2, 1), (3, 3)]
    wnid_file = tmp_path_factory.mktemp("w") / "wnids.txt"
    wnid_file.write_text("\n".join(wnids) + "\n")
    from_file = list(C.read_imagenet_c(imagenet_c_tree, wnids=wnid_file, corruptions=["gaussian_noise"]))
    assert from_file == got


def test_read_imagenet_c_validation(imagenet_c_tree, tmp_path_factory):
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        C.read_imagenet_c(imagenet_c_tree / "missing")
    with pytest.raises(ValueError, match=r"\['n01000000'\] are not in wnids"):
        C.read_imagenet_c(imagenet_c_tree, wnids=["n02000000", "n03000000"])
    with pytest.raises(ValueError, match="'n01000000' appears twice"):
        C.read_imagenet_c(imagenet_c_tree, wnids=["n01000000", "n01000000"])
    with pytest.raises(ValueError, match="wnids is empty"):
        C.read_imagenet_c(imagenet_c_tree, wnids=[])
    with pytest.raises(TypeError, match="wnids must be strings"):
        C.read_imagenet_c(imagenet_c_tree, wnids=[1, 2])
    with pytest.raises(FileNotFoundError, match="wnid list"):
        C.read_imagenet_c(imagenet_c_tree, wnids=imagenet_c_tree / "nope.txt")
    with pytest.raises(ValueError, match=r"\['fog'\] not under"):
        C.read_imagenet_c(imagenet_c_tree, corruptions=["fog", "contrast"])
    with pytest.raises(TypeError, match="not a string"):
        C.read_imagenet_c(imagenet_c_tree, corruptions="contrast")
    _touch(imagenet_c_tree / "contrast" / "high" / "n03000000" / "x.JPEG")
    with pytest.raises(ValueError, match="not a severity folder"):
        C.read_imagenet_c(imagenet_c_tree)
    with pytest.raises(ValueError, match="no <corruption>/<severity>/<wnid> folders"):
        C.read_imagenet_c(tmp_path_factory.mktemp("empty"))


# -------------------------------------------------------------------------------------------
# the corruptions added for the full ImageNet-C set: each pinned by hand or by a naive reference
# -------------------------------------------------------------------------------------------


def test_speckle_noise_matches_its_formula():
    image = _random_image(5, 4, seed=3)
    x = image / 255.0
    expected = np.rint(np.clip(x + x * np.random.default_rng(4).normal(scale=0.35, size=x.shape), 0, 1) * 255)
    np.testing.assert_array_equal(C.corrupt(image, "speckle_noise", severity=3, rng=4), expected)
    # black stays black: the noise is multiplicative
    np.testing.assert_array_equal(C.corrupt(np.zeros((3, 3, 3), np.uint8), "speckle_noise", severity=5, rng=0), 0)


def test_motion_taps_hand_values():
    # radius 1: width 3, weights exp(0), exp(-1/2), exp(-2) for sigma 1, normalised by their sum 1.7419
    np.testing.assert_allclose(C.motion_taps(1, 1), np.array([1, math.exp(-0.5), math.exp(-2)]) / 1.741865, rtol=1e-6)
    taps = C.motion_taps(10, 3)  # ImageNet-C severity 1: 21 taps, one-sided, decreasing
    assert taps.size == 21 and taps.sum() == pytest.approx(1.0) and (np.diff(taps) < 0).all()


def test_motion_blur_smears_a_point_along_the_angle_by_hand():
    x = np.zeros((5, 7))
    x[2, 3] = 1.0
    w = C.motion_taps(1, 1)
    # angle 0: tap i reads column c + i, so the point leaves a trail to its left
    out = C.motion_blur_angle(x, 1, 1, 0.0)
    expected = np.zeros((5, 7))
    expected[2, 3], expected[2, 2], expected[2, 1] = w
    np.testing.assert_allclose(out, expected, atol=1e-15)
    # angle 90: tap i reads row r + i: the trail goes up
    out = C.motion_blur_angle(x, 1, 1, 90.0)
    expected = np.zeros((5, 7))
    expected[2, 3], expected[1, 3], expected[0, 3] = w
    np.testing.assert_allclose(out, expected, atol=1e-15)


def _reference_motion_blur(x, radius, sigma, angle):
    # imagecorruptions' _motion_blur (Apache-2.0), np.roll shifts with the edge copied back, verbatim in logic
    width = radius * 2 + 1
    k = np.exp(-np.arange(width) ** 2 / (2 * sigma**2)) / (np.sqrt(2 * np.pi) * sigma)
    k = k / k.sum()
    point = (width * np.sin(np.deg2rad(angle)), width * np.cos(np.deg2rad(angle)))
    hypot = math.hypot(*point)
    blurred = np.zeros_like(x, dtype=np.float64)
    for i in range(width):
        dy = -math.ceil(((i * point[0]) / hypot) - 0.5)
        dx = -math.ceil(((i * point[1]) / hypot) - 0.5)
        if abs(dy) >= x.shape[0] or abs(dx) >= x.shape[1]:
            break
        shifted = x
        if dx < 0:
            shifted = np.roll(shifted, shift=x.shape[1] + dx, axis=1)
            shifted[:, dx:] = shifted[:, dx - 1:dx]
        elif dx > 0:
            shifted = np.roll(shifted, shift=dx, axis=1)
            shifted[:, :dx] = shifted[:, dx:dx + 1]
        if dy < 0:
            shifted = np.roll(shifted, shift=x.shape[0] + dy, axis=0)
            shifted[dy:, :] = shifted[dy - 1:dy, :]
        elif dy > 0:
            shifted = np.roll(shifted, shift=dy, axis=0)
            shifted[:dy, :] = shifted[dy:dy + 1, :]
        blurred = blurred + k[i] * shifted
    return blurred


@pytest.mark.parametrize("angle", [-45.0, -13.7, 30.0, 44.0, -120.0])
def test_motion_blur_equals_the_reference_shift_and_add(angle):
    x = _random_image(40, 36, seed=8) / 255.0
    np.testing.assert_allclose(C.motion_blur_angle(x, 15, 5, angle), _reference_motion_blur(x, 15, 5, angle),
                               atol=1e-12)
    # through corrupt: the angle is the generator's first draw, U(-45, 45)
    image = _random_image(40, 36, seed=8)
    a = np.random.default_rng(11).uniform(-45, 45)
    expected = np.rint(np.clip(_reference_motion_blur(image / 255.0, 15, 5, a), 0, 1) * 255)
    np.testing.assert_array_equal(C.corrupt(image, "motion_blur", severity=2, rng=11), expected)


def test_zoom_blur_equals_the_reference_on_a_square_image():
    from scipy.ndimage import zoom as scizoom

    image = _random_image(32, 32, seed=9)
    x = (image / 255.0).astype(np.float32)
    out = np.zeros_like(x)
    factors = np.arange(1, 1.16, 0.01)  # cifar severity 3
    for z in factors:  # the reference's clipped_zoom for square images
        ch = int(np.ceil(32 / z))
        top = (32 - ch) // 2
        zoomed = scizoom(x[top:top + ch, top:top + ch], (z, z, 1), order=1)
        trim = (zoomed.shape[0] - 32) // 2
        out += zoomed[trim:trim + 32, trim:trim + 32]
    expected = np.rint(np.clip((x + out) / (len(factors) + 1), 0, 1) * 255)
    np.testing.assert_array_equal(C.corrupt(image, "zoom_blur", severity=3, rng=0, preset="cifar"), expected)


def test_glass_blur_equals_the_reference_loop_with_its_view_quirk():
    image = _random_image(12, 10, seed=10)
    sigma, delta, iterations = 0.9, 2, 1  # imagenet severity 2
    rng = np.random.default_rng(5)
    x = (ndimage.gaussian_filter(image / 255.0, (sigma, sigma, 0), mode="nearest", truncate=4.0) * 255)
    x = x.astype(np.uint8)
    visits = [(h, w) for h in range(12 - delta, delta, -1) for w in range(10 - delta, delta, -1)]
    for _ in range(iterations):
        offsets = rng.integers(-delta, delta, size=(len(visits), 2))
        for (h, w), (dx, dy) in zip(visits, offsets):
            hp, wp = h + dy, w + dx
            x[h, w], x[hp, wp] = x[hp, wp], x[h, w]  # the reference's statement, views and all
    expected = ndimage.gaussian_filter(x / 255.0, (sigma, sigma, 0), mode="nearest", truncate=4.0)
    expected = np.rint(np.clip(expected, 0, 1) * 255)
    np.testing.assert_array_equal(C.corrupt(image, "glass_blur", severity=2, rng=5), expected)


def test_plasma_fractal_two_by_two_by_hand():
    # mapsize 2: one level. Centre = 0/4 + 100 u1; the two edge points = (2 centre + 0 + 0)/4 + 100 u_i
    u = np.random.default_rng(3).uniform(-100, 100, 3)
    centre = 100 * u[0]
    grid = np.array([[0.0, centre / 2 + 100 * u[1]], [centre / 2 + 100 * u[2], centre]])
    grid -= grid.min()
    np.testing.assert_allclose(C.plasma_fractal(2, 2.0, np.random.default_rng(3)), grid / grid.max())
    big = C.plasma_fractal(64, 1.5, np.random.default_rng(0))
    assert big.shape == (64, 64) and big.min() == 0.0 and big.max() == 1.0


def test_fog_matches_its_formula():
    image = np.full((20, 30, 3), 100, np.uint8)
    image[0, 0] = 200  # max 200/255
    a, decay = 1.0, 2.0  # cifar severity 4
    plasma = C.plasma_fractal(32, decay, np.random.default_rng(6))[:20, :30, None]
    m = 200 / 255
    expected = np.rint(np.clip((image / 255.0 + a * plasma) * m / (m + a), 0, 1) * 255)
    np.testing.assert_array_equal(C.corrupt(image, "fog", severity=4, rng=6, preset="cifar"), expected)
    # a black image stays black: the output is scaled by max(x) = 0
    np.testing.assert_array_equal(C.corrupt(np.zeros((8, 8, 3), np.uint8), "fog", severity=5, rng=0), 0)


@needs_frost
def test_frost_blends_a_crop_of_the_original_texture():
    spec = importlib.util.find_spec("imagecorruptions")
    folder = Path(next(iter(spec.submodule_search_locations))) / "frost"
    rng = np.random.default_rng(7)
    index = int(rng.integers(5))
    with Image.open(folder / C.FROST_FILES[index]) as im:
        texture = np.asarray(im.convert("RGB")).astype(np.float64)
    top, left = int(rng.integers(0, texture.shape[0] - 224)), int(rng.integers(0, texture.shape[1] - 224))
    image = _random_image(224, 224, seed=12)
    a, b = 0.7, 0.7  # imagenet severity 3
    expected = np.rint(np.clip(a * image + b * texture[top:top + 224, left:left + 224], 0, 255))
    np.testing.assert_array_equal(C.corrupt(image, "frost", severity=3, rng=7), expected)
    # only the first five photos are ever used (the reference draws randint(5) over six files)
    assert len(C.FROST_FILES) == 6


def test_snow_by_hand_with_a_flat_layer():
    # scale 0 makes the layer flat at loc 0.2: floor(.2 * 255) / 255 = 51/255 = .2 exactly, blur keeps it.
    # On black: blend * 0 + (1 - blend) * max(0, 1.5 * 0 + .5) + .2 + .2 = .5 * .5 + .4 = .65 -> 165.75
    param = (0.2, 0.0, 1, 0.1, 1, 1, 0.5)
    out = C.snow(np.zeros((6, 6, 3), np.uint8), param, np.random.default_rng(0))
    np.testing.assert_allclose(out, 0.65)
    # a grey pixel g = .4 whitens to max(.4, 1.5 * .4 + .5) = 1.1 by half: .5 * .4 + .5 * 1.1 + .4 = 1.15
    out = C.snow(np.full((6, 6, 3), 102, np.uint8), param, np.random.default_rng(0))
    np.testing.assert_allclose(out, 1.15)


def test_snow_composes_its_layer_as_the_reference():
    image = _random_image(32, 32, seed=13)
    param = C.CORRUPTIONS.get("snow").params["cifar"][3]
    layer = C.snow_layer((32, 32), param, np.random.default_rng(2))
    assert ((layer >= 0) & (layer <= 1)).all()
    np.testing.assert_allclose(layer * 255, np.rint(layer * 255))  # 8 bits, as ImageMagick hands it back
    x = image / 255.0
    grey = 0.299 * x[..., :1] + 0.587 * x[..., 1:2] + 0.114 * x[..., 2:]
    blend = param[6]
    expected = blend * x + (1 - blend) * np.maximum(x, grey * 1.5 + 0.5) + layer + np.rot90(layer, k=2)
    expected = np.rint(np.clip(expected, 0, 1) * 255)
    np.testing.assert_array_equal(C.corrupt(image, "snow", severity=4, rng=2, preset="cifar"), expected)


def test_spatter_by_hand_mud_and_water():
    black = np.zeros((10, 10, 3), np.uint8)
    # mud: a flat liquid layer above threshold gives m = 1 everywhere: the image becomes mud (63, 42, 20)
    out = C.spatter(black, (0.7, 0.0, 1, 0.65, 1.5, 1), np.random.default_rng(0))
    np.testing.assert_allclose(out * 255, np.broadcast_to([63, 42, 20], out.shape))
    # water: a flat layer has no edge, distance 20 everywhere, so m is flat at the intensity .6:
    # black + .6 * (175, 238, 238) = (105, 142.8, 142.8)
    out = C.spatter(black, (0.7, 0.0, 1, 0.65, 0.6, 0), np.random.default_rng(0))
    np.testing.assert_allclose(out * 255, np.broadcast_to([105, 142.8, 142.8], out.shape))
    # below threshold everywhere: no liquid, the image is unchanged
    image = _random_image(10, 10, seed=14)
    np.testing.assert_allclose(C.spatter(image, (0.5, 0.0, 1, 0.65, 0.6, 0), np.random.default_rng(0)),
                               image / 255.0)


def test_spatter_helpers_by_hand():
    # equalizeHist of [0, 0, 1, 2]: cdf 2, 3, 4, cdf_min 2 -> (cdf - 2) * 255 / 2 = 0, 127.5 -> 128, 255
    np.testing.assert_array_equal(C.equalize_hist(np.array([[0, 0], [1, 2]], np.uint8)), [[0, 0], [128, 255]])
    np.testing.assert_array_equal(C.equalize_hist(np.full((2, 2), 7, np.uint8)), 7)
    # a vertical step 0 | 200: Sobel |gx| = 4 * 200 = 800 > 150 on the two columns beside it, 0 elsewhere
    step = np.zeros((5, 6), np.uint8)
    step[:, 3:] = 200
    edges = C.canny(step, 50, 150)
    np.testing.assert_array_equal(edges.any(axis=0), [False, False, True, True, False, False])
    assert edges[:, 2:4].all()
    # a weak edge (gradient 4 * 20 = 80, between the thresholds) is kept only when touching a strong one
    weak = np.zeros((5, 6), np.uint8)
    weak[:, 3:] = 20
    assert not C.canny(weak, 50, 150).any()


def test_frost_without_its_textures_says_how_to_install_them(monkeypatch):
    monkeypatch.setattr(C.weather, "frost_folder", lambda: None)  # the module that calls it
    C.frost_texture.cache_clear()
    names, skipped = C.available_corruptions()
    assert "frost" not in names and len(names) == 18
    assert skipped == {"frost": C.FROST_MISSING}
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps imagecorruptions"):
        C.corrupt(_random_image(8, 8), "frost", severity=1, rng=0)
    C.frost_texture.cache_clear()


@needs_frost
def test_all_nineteen_available_with_the_textures():
    assert C.available_corruptions() == (NAMES, {})

"""Tests for rmd_ray.data.corruptions: shapes and dtypes, hand formulas, determinism, severity
monotonicity on a real ImageNet image, validation, and the ImageNet-C folder reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rmd_ray.data import corruptions as C

NAMES = [
    "box_blur", "brightness", "contrast", "defocus_blur", "elastic_transform", "gaussian_blur",
    "gaussian_noise", "impulse_noise", "jpeg_compression", "pixelate", "saturate", "shot_noise",
]
RANDOM = {"gaussian_noise", "shot_noise", "impulse_noise", "elastic_transform"}
SEVERITY = r"severity must be an integer in 1..5"
SAMPLE = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "imagenet-sample"


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


def test_registry_lists_the_twelve_corruptions():
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
    np.testing.assert_allclose(p["box_blur"]["imagenet"], [4.430, 7.383, 11.813, 17.719, 22.149], atol=1e-3)


@pytest.mark.parametrize("name", NAMES)
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


@pytest.mark.parametrize("name", NAMES)
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
    ["gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "gaussian_blur", "box_blur",
     "contrast", "brightness", "jpeg_compression", "pixelate"],
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
    hsv = C._rgb_to_hsv(rgb)
    expected = [[0, 1, 1], [1 / 3, 1, 1], [2 / 3, 1, 1], [0, 0, 0.5], [0, 0, 0], [0, 0.5, 0.8]]
    np.testing.assert_allclose(hsv, expected)
    x = np.random.default_rng(0).random((50, 3))
    np.testing.assert_allclose(C._hsv_to_rgb(C._rgb_to_hsv(x)), x, atol=1e-12)


def test_saturate_matches_hand_values():
    image = np.array([[[204, 102, 102], [100, 100, 100]]], dtype=np.uint8)
    # severity 1, (a, b) = (0.3, 0): (.8, .4, .4) has S = .5 -> .15: (.8, .68, .68)
    out = C.corrupt(image, "saturate", severity=1, rng=0)
    np.testing.assert_array_equal(out, [[[204, 173, 173], [100, 100, 100]]])
    # severity 4, (5, 0.1): S = min(.5 * 5 + .1, 1) = 1 -> (.8, 0, 0); grey gets S = .1 at hue 0 (red)
    out = C.corrupt(image, "saturate", severity=4, rng=0)
    np.testing.assert_array_equal(out, [[[204, 0, 0], [100, 90, 90]]])


@pytest.mark.parametrize("name", ["defocus_blur", "gaussian_blur", "box_blur", "pixelate", "contrast"])
@pytest.mark.parametrize("preset", ["imagenet", "cifar"])
def test_constant_image_is_a_fixed_point(name, preset):
    image = np.full((40, 30, 3), (17, 140, 230), dtype=np.uint8)
    for severity in range(1, 6):
        expected = image
        if name == "defocus_blur":  # the reference kernel's sum (see _disk) scales a flat image
            gain = C._disk(*C.CORRUPTIONS.get(name).params[preset][severity - 1]).sum()
            expected = np.rint(np.clip(image / 255.0 * gain, 0, 1) * 255)
        out = C.corrupt(image, name, severity=severity, rng=0, preset=preset)
        np.testing.assert_array_equal(out, expected)


def test_blur_kernels_are_normalised_and_symmetric():
    for radius, alias in ((3, 0.1), (6, 0.5), (0.3, 0.4), (1.5, 0.1), (8, 0.5), (10, 0.5)):
        k = C._disk(radius, alias)
        np.testing.assert_allclose(k, k[::-1, ::-1])
        np.testing.assert_allclose(k, k.T)
        if radius <= 6:
            assert k.sum() == pytest.approx(1.0)
    # reference quirk kept: the disk touches the kernel edge and the mirrored border adds mass
    assert C._disk(8, 0.5).sum() == pytest.approx(1.013, abs=1e-3)
    assert C._disk(10, 0.5).sum() == pytest.approx(1.011, abs=1e-3)
    # radius 3: 29 lattice points with x^2 + y^2 <= 9, alias blur .1 is nearly the identity
    assert C._disk(3, 0.1).max() == pytest.approx(1 / 29, rel=1e-6)
    assert C._disk(10, 0.5).shape == (21, 21) and C._disk(3, 0.1).shape == (17, 17)
    np.testing.assert_allclose(C._box_taps(3.0), [1 / 3] * 3)
    np.testing.assert_allclose(C._box_taps(2.0), [0.25, 0.5, 0.25])
    # width 1.48 covers the centre pixel and .24 of each neighbour
    np.testing.assert_allclose(C._box_taps(1.48), np.array([0.24, 1.0, 0.24]) / 1.48)
    # width 4.43: three full taps and .715 at distance 2 on each side
    np.testing.assert_allclose(C._box_taps(4.43), np.array([0.715, 1, 1, 1, 0.715]) / 4.43)
    taps = C._box_taps(22.16)
    np.testing.assert_allclose(taps, taps[::-1])
    assert taps.sum() == pytest.approx(1.0) and taps.size == 23


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
    out = C._elastic_transform(image, (0.0, 1.0, 5.0), _ShiftRng())
    # a control-point translation by +2 in x moves every pixel 2 columns to the right
    np.testing.assert_allclose(out[:, 2:], image[:, :-2] / 255.0, atol=1e-12)


def test_elastic_identity_when_field_and_jitter_vanish():
    image = _random_image(9, 12, seed=6)
    out = C._elastic_transform(image, (0.0, 0.0, 0.0), np.random.default_rng(0))
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
        (np.zeros((4, 4, 3), np.uint8), {"name": "motion_blur"}, ValueError,
         "unknown corruption 'motion_blur'; valid names: box_blur, brightness"),
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

"""rmd_ray.evaluation.corruption: a fixed linear model on 8x8 images, checked against a direct
computation (corrupt every image with its documented seed, one forward pass, naive ECE)."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
from torch import nn

from rmd_ray.data.corruptions import corrupt
from rmd_ray.evaluation.corruption import corruption_eval, corruption_rng

torch.set_num_threads(1)
N, K = 24, 3


def _preprocess(batch: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(batch.astype(np.float32) / 255.0).permute(0, 3, 1, 2)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, K))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(K, 3 * 8 * 8) * 0.15)
        model[1].bias.zero_()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(N, 8, 8, 3), dtype=np.uint8)
    with torch.no_grad():
        clean_pred = model(_preprocess(images)).argmax(1).numpy()
    labels = clean_pred.copy()
    labels[::4] = (labels[::4] + 1) % K  # a quarter wrong on clean data
    return model, images, labels.astype(np.int64)


def _naive_ece(probs, labels, binning):
    conf, correct = probs.max(1), probs.argmax(1) == labels
    if binning == "width":
        groups = [np.flatnonzero((conf > b / 15) & (conf <= (b + 1) / 15)) for b in range(15)]
    else:  # no ties among continuous confidences
        groups = np.array_split(np.argsort(conf), 15)
    return sum(len(g) / len(conf) * abs(correct[g].mean() - conf[g].mean()) for g in groups if len(g))


def _direct(model, images, labels, name=None, severity=None, seed=0):
    if name is None:
        x = images
    else:
        x = np.stack(
            [
                corrupt(
                    images[i],
                    name,
                    severity=severity,
                    rng=np.random.default_rng([seed, i, zlib.crc32(name.encode()), severity]),
                    preset="cifar",
                )
                for i in range(len(images))
            ]
        )
    with torch.no_grad():
        logits = model(_preprocess(x)).double()
    probs = torch.softmax(logits, 1).numpy()
    return {
        "acc": float(np.mean(probs.argmax(1) == labels)),
        "ece_mass": _naive_ece(probs, labels, "mass"),
        "ece_width": _naive_ece(probs, labels, "width"),
    }


def _close(row, ref):
    assert row["acc"] == ref["acc"]
    assert row["ece_mass"] == pytest.approx(ref["ece_mass"], abs=1e-6)
    assert row["ece_width"] == pytest.approx(ref["ece_width"], abs=1e-6)


def test_rows_match_a_direct_computation(setup):
    model, images, labels = setup
    rows = corruption_eval(
        model,
        images,
        labels,
        corruptions=["gaussian_noise", "contrast"],
        severities=(1, 3),
        preprocess=_preprocess,
        batch_size=5,
        seed=0,
        preset="cifar",
    )
    assert [(r["corruption"], r["severity"]) for r in rows] == [
        ("clean", 0),
        ("gaussian_noise", 1),
        ("gaussian_noise", 3),
        ("contrast", 1),
        ("contrast", 3),
    ]
    assert set(rows[0]) == {"corruption", "severity", "acc", "ece_mass", "ece_width"}
    clean = _direct(model, images, labels)
    assert clean["acc"] == 0.75  # labels were built so
    _close(rows[0], clean)
    _close(rows[2], _direct(model, images, labels, "gaussian_noise", 3))
    _close(rows[4], _direct(model, images, labels, "contrast", 3))
    # the corruption did something: contrast 3 of the cifar table shrinks every logit towards the mean
    assert rows[4]["ece_mass"] != pytest.approx(rows[0]["ece_mass"])


def test_result_does_not_depend_on_batch_size_or_on_the_other_corruptions(setup):
    model, images, labels = setup
    alone = corruption_eval(
        model,
        images,
        labels,
        corruptions=["gaussian_noise"],
        severities=[3],
        preprocess=_preprocess,
        batch_size=N,
        preset="cifar",
    )
    mixed = corruption_eval(
        model,
        images,
        labels,
        corruptions=["contrast", "gaussian_noise"],
        severities=[2, 3],
        preprocess=_preprocess,
        batch_size=7,
        preset="cifar",
    )
    _close(mixed[-1], alone[-1])
    assert mixed[-1]["corruption"] == "gaussian_noise" and mixed[-1]["severity"] == 3


def test_corruption_rng_is_the_documented_seed():
    name = "gaussian_noise"
    a = corruption_rng(5, name, 2, seed=7).normal(size=4)
    b = np.random.default_rng([7, 5, zlib.crc32(name.encode()), 2]).normal(size=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, corruption_rng(5, name, 2, seed=8).normal(size=4))
    assert not np.array_equal(a, corruption_rng(6, name, 2, seed=7).normal(size=4))


def test_model_mode_is_restored(setup):
    model, images, labels = setup
    model.train()
    corruption_eval(
        model,
        images[:4],
        labels[:4],
        corruptions=["contrast"],
        severities=[1],
        preprocess=_preprocess,
        preset="cifar",
    )
    assert model.training
    model.eval()


def test_validation_errors(setup):
    model, images, labels = setup
    kw = dict(corruptions=["contrast"], severities=[1], preprocess=_preprocess)
    with pytest.raises(ValueError, match=r"unknown corruption.*brightness"):
        corruption_eval(model, images, labels, corruptions=["barrel"], preprocess=_preprocess)
    with pytest.raises(ValueError, match=r"non-empty list of names"):
        corruption_eval(model, images, labels, corruptions=[], preprocess=_preprocess)
    with pytest.raises(ValueError, match=r"non-empty list of names"):
        corruption_eval(model, images, labels, corruptions="contrast", preprocess=_preprocess)
    with pytest.raises(ValueError, match=r"repeat a name"):
        corruption_eval(model, images, labels, corruptions=["contrast", "contrast"], preprocess=_preprocess)
    for bad in ([0], [6], [], [1, 1], 3, [True]):
        with pytest.raises(ValueError, match=r"severities must be a non-empty list of distinct integers"):
            corruption_eval(
                model, images, labels, corruptions=["contrast"], severities=bad, preprocess=_preprocess
            )
    with pytest.raises(TypeError, match=r"uint8 numpy array"):
        corruption_eval(model, images.astype(np.float32), labels, **kw)
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        corruption_eval(model, images[..., 0], labels, **kw)
    with pytest.raises(ValueError, match=r"24 images but 23 labels"):
        corruption_eval(model, images, labels[:-1], **kw)
    with pytest.raises(ValueError, match=r"1-D integer array"):
        corruption_eval(model, images, labels.astype(float), **kw)
    with pytest.raises(TypeError, match=r"torch.nn.Module"):
        corruption_eval(lambda x: x, images, labels, **kw)
    with pytest.raises(TypeError, match=r"preprocess must be a callable"):
        corruption_eval(model, images, labels, corruptions=["contrast"], preprocess=None)
    with pytest.raises(ValueError, match=r"batch_size must be a positive integer"):
        corruption_eval(model, images, labels, batch_size=0, **kw)
    with pytest.raises(ValueError, match=r"seed must be a non-negative integer"):
        corruption_eval(model, images, labels, seed=-1, **kw)
    with pytest.raises(ValueError, match=r"unknown corruption preset"):
        corruption_eval(model, images, labels, preset="mnist", **kw)
    with pytest.raises(ValueError, match=r"preprocess must return a float tensor"):
        corruption_eval(model, images, labels, corruptions=["contrast"], preprocess=lambda b: b)
    with pytest.raises(ValueError, match=r"K > the largest label 5"):
        corruption_eval(model, images, np.full(N, 5), **kw)


def test_nan_logits_raise(setup):
    _, images, labels = setup
    nan_model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, K))
    with torch.no_grad():
        nan_model[1].bias.fill_(float("nan"))
    with pytest.raises(ValueError, match=r"NaN or inf"):
        corruption_eval(
            nan_model, images, labels, corruptions=["contrast"], severities=[1], preprocess=_preprocess
        )


def _naive_rows(model, images, labels):
    with torch.no_grad():
        probs = torch.softmax(model(_preprocess(images)).double(), 1).numpy()
    return {
        "acc": float(np.mean(probs.argmax(1) == labels)),
        "ece_mass": _naive_ece(probs, labels, "mass"),
        "ece_width": _naive_ece(probs, labels, "width"),
    }


def test_published_eval_groups_precorrupted_images_by_corruption_and_severity(setup):
    from rmd_ray.evaluation.corruption import published_corruption_eval

    model, images, labels = setup
    # a published set: the same 24 images under two "corruptions" x severities, interleaved on purpose
    names = np.array(["snow", "frost"] * (N // 2), dtype=object)
    sev = np.array([1, 1, 3, 3] * (N // 4))
    rows = published_corruption_eval(model, images, labels, list(names), sev, preprocess=_preprocess, batch_size=5)
    assert [(r["corruption"], r["severity"]) for r in rows] == [("frost", 1), ("frost", 3), ("snow", 1), ("snow", 3)]
    for row in rows:
        keep = (names == row["corruption"]) & (sev == row["severity"])
        _close(row, _naive_rows(model, images[keep], labels[keep]))


@pytest.mark.parametrize(
    "names, sev, match",
    [
        (["snow"] * 3, np.ones(N, int), "24 images but 3 corruption names and 24 severities"),
        (["snow"] * N, np.full(N, 6), r"severities must be integers in 1..5, got \[6\]"),
        (["snow"] * N, np.full(N, 1.5), r"severities must be integers in 1..5"),
    ],
)
def test_published_eval_validation(setup, names, sev, match):
    from rmd_ray.evaluation.corruption import published_corruption_eval

    model, images, labels = setup
    with pytest.raises(ValueError, match=match):
        published_corruption_eval(model, images, labels, names, sev, preprocess=_preprocess)

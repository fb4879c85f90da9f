"""Losses: exact reductions to cross-entropy, hand-derived values, naive references, gradients, validation."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from rmd_ray.nn.losses import (
    LOSSES,
    CorrectnessRankingLoss,
    Interval,
    build_loss,
    entropy_from_logits,
    tunable_hparams,
)

torch.set_num_threads(1)

ALL = ["ce", "crl", "entropy_reg", "focal", "l1_norm", "label_smoothing", "poly1", "proposed"]


def _batch(b=6, k=4, seed=0, dtype=torch.float32, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    logits = (scale * torch.randn(b, k, generator=g)).to(dtype)
    targets = torch.randint(0, k, (b,), generator=g)
    weights = torch.rand(b, generator=g).to(dtype)
    ids = torch.randperm(b, generator=g)
    return logits, targets, weights, ids


def _make(name, **kw):
    if name == "crl":
        kw.setdefault("num_samples", 16)
    return build_loss(name, **kw)


def _naive_parts(logits, targets):
    """float64 reference via explicit softmax and log (fine for moderate logits)."""
    z = logits.detach().double().numpy()
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    t = targets.numpy()
    ce = -np.log(p[np.arange(len(t)), t])
    h = -(p * np.log(p)).sum(axis=1)
    return p, ce, h


# ------------------------------------------------------------------ registry / construction


def test_registry_names():
    assert LOSSES.names() == ALL


def test_unknown_loss_lists_names():
    with pytest.raises(ValueError, match=r"unknown loss 'mse'; valid names: ce, crl, entropy_reg"):
        build_loss("mse")


def test_unknown_hparam_lists_valid_ones():
    with pytest.raises(ValueError, match=r"loss 'focal' got unknown hyper-parameter\(s\) beta; valid: gamma"):
        build_loss("focal", beta=1.0)
    with pytest.raises(ValueError, match=r"loss 'ce' got unknown hyper-parameter\(s\) alpha; valid: none"):
        build_loss("ce", alpha=1.0)


def test_missing_required_hparam():
    with pytest.raises(ValueError, match=r"loss 'crl' needs hyper-parameter\(s\): num_samples"):
        build_loss("crl")


def test_tunable_hparams_table_matches_the_constructors():
    # the one table the tuning schema reads: every constructor argument but crl's num_samples (filled in)
    table = tunable_hparams()
    assert {name: sorted(ranges) for name, ranges in table.items()} == {
        "ce": [], "crl": ["lam"], "entropy_reg": ["beta"], "focal": ["gamma"], "l1_norm": ["lam"],
        "label_smoothing": ["epsilon"], "poly1": ["epsilon"], "proposed": ["alpha"],
    }
    assert table["label_smoothing"]["epsilon"] == Interval(0.0, 1.0) and str(table["poly1"]["epsilon"]) == "[-1, inf)"
    for name, ranges in table.items():
        defaults = _make(name).hparams
        assert set(defaults) - {"num_samples"} == set(ranges), name
        for key, interval in ranges.items():
            assert defaults[key] in interval, (name, key)
            # the constructor rejects the value just outside the declared range, with that range
            with pytest.raises(ValueError, match=rf"{key} must be a finite number in {re.escape(str(interval))}"):
                _make(name, **{key: interval.low - 0.5})
    assert [n for n in ALL if LOSSES.get(n).needs_weights] == ["proposed"]


def test_defaults_and_hparams():
    assert build_loss("proposed").hparams == {"alpha": 0.3}
    assert build_loss("focal").hparams == {"gamma": 2.0}
    assert build_loss("poly1").hparams == {"epsilon": 1.0}
    assert build_loss("crl", num_samples=5).hparams == {"num_samples": 5, "lam": 1.0}
    assert build_loss("ce").hparams == {}
    assert repr(build_loss("label_smoothing", epsilon=0.2)) == "LabelSmoothingLoss(epsilon=0.2)"


@pytest.mark.parametrize(
    "name, kw, match",
    [
        (
            "proposed",
            {"alpha": -0.1},
            r"loss 'proposed': alpha must be a finite number in \[0, inf\), got -0.1",
        ),
        ("proposed", {"alpha": math.nan}, r"alpha must be a finite number in \[0, inf\)"),
        ("proposed", {"alpha": math.inf}, r"alpha must be a finite number in \[0, inf\)"),
        ("label_smoothing", {"epsilon": 1.5}, r"epsilon must be a finite number in \[0, 1\], got 1.5"),
        ("label_smoothing", {"epsilon": -0.01}, r"epsilon must be a finite number in \[0, 1\]"),
        ("focal", {"gamma": -1.0}, r"loss 'focal': gamma must be a finite number in \[0, inf\)"),
        ("l1_norm", {"lam": -1e-3}, r"loss 'l1_norm': lam must be a finite number in \[0, inf\)"),
        ("entropy_reg", {"beta": -0.3}, r"loss 'entropy_reg': beta must be a finite number in \[0, inf\)"),
        ("poly1", {"epsilon": -1.5}, r"loss 'poly1': epsilon must be a finite number in \[-1, inf\)"),
        ("crl", {"num_samples": 0}, r"loss 'crl': num_samples must be an int >= 1"),
        ("crl", {"num_samples": 2.5}, r"loss 'crl': num_samples must be an int >= 1"),
        ("crl", {"num_samples": 10, "lam": -1.0}, r"loss 'crl': lam must be a finite number in \[0, inf\)"),
    ],
)
def test_invalid_hparams(name, kw, match):
    with pytest.raises(ValueError, match=match):
        build_loss(name, **kw)


@pytest.mark.parametrize("value", ["0.3", True, None])
def test_non_numeric_hparam_is_type_error(value):
    with pytest.raises(TypeError, match=r"loss 'proposed': alpha must be a number in \[0, inf\)"):
        build_loss("proposed", alpha=value)


def test_boundary_hparams_accepted():
    assert build_loss("poly1", epsilon=-1).epsilon == -1.0
    assert build_loss("label_smoothing", epsilon=1).epsilon == 1.0
    assert build_loss("proposed", alpha=0).alpha == 0.0


# ------------------------------------------------------------------ batch validation


@pytest.mark.parametrize("name", ALL)
def test_batch_validation(name):
    loss = _make(name)
    x, y, w, i = _batch()
    kw = {"weights": w, "ids": i}
    with pytest.raises(ValueError, match=r"logits must have shape \(B, K\)"):
        loss(x[0], y, **kw)
    with pytest.raises(ValueError, match=r"logits must have shape \(B, K\) with B, K >= 1"):
        loss(x[:0], y[:0], weights=w[:0], ids=i[:0])
    with pytest.raises(TypeError, match="logits must be a floating-point"):
        loss(x.long(), y, **kw)
    with pytest.raises(
        TypeError, match=r"targets must be an int64 tensor of class indices \(use .long\(\)\)"
    ):
        loss(x, y.int(), **kw)
    with pytest.raises(TypeError, match="targets must be an int64 tensor"):
        loss(x, y.float(), **kw)
    with pytest.raises(ValueError, match=r"targets must have shape \(6,\) to match logits"):
        loss(x, y[:5], **kw)
    bad = y.clone()
    bad[0], bad[1] = 7, 0
    with pytest.raises(
        ValueError, match=r"targets must be class indices in \[0, 4\), got values in \[0, 7\]"
    ):
        loss(x, bad, **kw)
    bad[0] = -1
    with pytest.raises(ValueError, match=r"targets must be class indices in \[0, 4\), got values in \[-1,"):
        loss(x, bad, **kw)
    with pytest.raises(ValueError, match=r"weights must have shape \(6,\)"):
        loss(x, y, weights=w[:3], ids=i)
    with pytest.raises(TypeError, match="weights must be a floating-point tensor"):
        loss(x, y, weights=(w > 0.5).long(), ids=i)
    with pytest.raises(ValueError, match=r"ids must have shape \(6,\)"):
        loss(x, y, weights=w, ids=i[:2])
    with pytest.raises(TypeError, match="ids must be an int64 tensor"):
        loss(x, y, weights=w, ids=i.int())


def test_proposed_weight_validation():
    loss = build_loss("proposed")
    x, y, w, _ = _batch()
    with pytest.raises(ValueError, match="pass the per-sample difficulty weights s"):
        loss(x, y)
    with pytest.raises(ValueError, match="pass the per-sample difficulty weights s"):
        loss.per_sample(x, y)
    for bad, shown in [(-0.1, "-0.1"), (1.5, "1.5"), (math.nan, "nan"), (math.inf, "inf")]:
        w2 = w.clone()
        w2[2] = bad
        with pytest.raises(
            ValueError, match=rf"weights must be finite and in \[0, 1\]; 1 of 6 are not \(e.g. {shown}"
        ):
            loss(x, y, weights=w2)
    # the boundaries are valid
    assert torch.isfinite(loss(x, y, weights=torch.tensor([0.0, 1.0, 0.0, 1.0, 0.5, 1.0])))


def test_crl_ids_validation():
    loss = build_loss("crl", num_samples=6)
    x, y, _, i = _batch()
    with pytest.raises(ValueError, match="pass the sample ids"):
        loss(x, y)
    with pytest.raises(ValueError, match=r"ids must be in \[0, num_samples=6\), got values in \[1, 6\]"):
        loss(x, y, ids=torch.where(i == 0, 6, i))
    with pytest.raises(ValueError, match=r"ids must be in \[0, num_samples=6\), got values in \[-2,"):
        loss(x, y, ids=torch.where(i == 0, -2, i))
    with pytest.raises(TypeError, match="ids must be a 1-d int64 tensor"):
        loss.update(i.int(), torch.ones(6, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"correct must be a tensor of shape \(6,\)"):
        loss.update(i, torch.ones(5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"ids must be in \[0, num_samples=6\)"):
        loss.update(i + 1, torch.ones(6, dtype=torch.bool))


def test_entropy_from_logits_validation():
    with pytest.raises(ValueError, match=r"shape \(B, K\)"):
        entropy_from_logits(torch.zeros(3))


# ------------------------------------------------------------------ exact reductions


def test_proposed_alpha_zero_is_cross_entropy_exactly():
    x, y, w, _ = _batch(b=32, k=10, seed=3, scale=3.0)
    loss = build_loss("proposed", alpha=0.0)
    assert torch.equal(loss(x, y, weights=w), F.cross_entropy(x, y))
    assert torch.equal(loss.per_sample(x, y, weights=w), F.cross_entropy(x, y, reduction="none"))


def test_proposed_zero_weights_is_cross_entropy_exactly():
    x, y, _, _ = _batch(b=32, k=10, seed=4, scale=3.0)
    loss = build_loss("proposed", alpha=0.7)
    s = torch.zeros(32)
    assert torch.equal(loss(x, y, weights=s), F.cross_entropy(x, y))
    assert torch.equal(loss.per_sample(x, y, weights=s), F.cross_entropy(x, y, reduction="none"))


@pytest.mark.parametrize("beta", [0.0, 0.05, 0.3, 2.0])
def test_entropy_reg_equals_proposed_with_unit_weights(beta):
    x, y, _, _ = _batch(b=17, k=5, seed=5, scale=2.0)
    er = build_loss("entropy_reg", beta=beta)
    prop = build_loss("proposed", alpha=beta)
    ones = torch.ones(17)
    assert torch.equal(er(x, y), prop(x, y, weights=ones))
    assert torch.equal(er.per_sample(x, y), prop.per_sample(x, y, weights=ones))


def test_focal_gamma_zero_is_cross_entropy():
    x, y, _, _ = _batch(b=20, k=7, seed=6, scale=2.0)
    loss = build_loss("focal", gamma=0.0)
    assert torch.equal(loss.per_sample(x, y), F.cross_entropy(x, y, reduction="none"))
    torch.testing.assert_close(loss(x, y), F.cross_entropy(x, y), rtol=1e-6, atol=0)


def test_poly1_epsilon_zero_is_cross_entropy_exactly():
    x, y, _, _ = _batch(b=20, k=7, seed=7, scale=2.0)
    loss = build_loss("poly1", epsilon=0.0)
    assert torch.equal(loss(x, y), F.cross_entropy(x, y))
    assert torch.equal(loss.per_sample(x, y), F.cross_entropy(x, y, reduction="none"))


@pytest.mark.parametrize(
    "name, kw",
    [("l1_norm", {"lam": 0.0}), ("crl", {"lam": 0.0}), ("label_smoothing", {"epsilon": 0.0}), ("ce", {})],
)
def test_zero_strength_is_cross_entropy(name, kw):
    x, y, w, i = _batch(b=12, k=5, seed=8, scale=2.0)
    loss = _make(name, **kw).eval()
    torch.testing.assert_close(loss(x, y, weights=w, ids=i), F.cross_entropy(x, y), rtol=1e-6, atol=0)
    torch.testing.assert_close(
        loss.per_sample(x, y, weights=w, ids=i), F.cross_entropy(x, y, reduction="none"), rtol=1e-6, atol=0
    )


# ------------------------------------------------------------------ values


LN3 = math.log(3.0)


def test_focal_hand_value():
    # logits (0, ln 3) -> p = (1/4, 3/4); target 1: p_t = 3/4
    x = torch.tensor([[0.0, LN3]], dtype=torch.float64)
    y = torch.tensor([1])
    expected = 0.25**2 * -math.log(0.75)  # 0.0179801...
    assert build_loss("focal", gamma=2.0)(x, y).item() == pytest.approx(expected, rel=1e-12)
    expected_g1 = 0.25 * -math.log(0.75)
    assert build_loss("focal", gamma=1.0)(x, y).item() == pytest.approx(expected_g1, rel=1e-12)
    # target 0: p_t = 1/4
    assert build_loss("focal", gamma=3.0)(x, torch.tensor([0])).item() == pytest.approx(
        0.75**3 * math.log(4.0), rel=1e-12
    )


def test_poly1_hand_value():
    x = torch.tensor([[0.0, LN3]], dtype=torch.float64)
    assert build_loss("poly1", epsilon=2.0)(x, torch.tensor([1])).item() == pytest.approx(
        -math.log(0.75) + 2.0 * 0.25, rel=1e-12
    )
    assert build_loss("poly1", epsilon=-1.0)(x, torch.tensor([0])).item() == pytest.approx(
        math.log(4.0) - 0.75, rel=1e-12
    )


def test_label_smoothing_hand_formula():
    x, y, _, _ = _batch(b=9, k=6, seed=9, dtype=torch.float64, scale=2.0)
    eps = 0.2
    _, ce, _ = _naive_parts(x, y)
    z = x.numpy() - x.numpy().max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    expected = (1 - eps) * ce + eps * (-logp).mean(axis=1)
    loss = build_loss("label_smoothing", epsilon=eps)
    np.testing.assert_allclose(loss.per_sample(x, y).numpy(), expected, rtol=1e-12)
    assert loss(x, y).item() == pytest.approx(expected.mean(), rel=1e-12)


def test_l1_norm_hand_value():
    x = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([0, 2])
    _, ce, _ = _naive_parts(x, y)
    per = build_loss("l1_norm", lam=0.1).per_sample(x, y).numpy()
    np.testing.assert_allclose(per, [ce[0] + 0.1 * 3.5, math.log(3.0)], rtol=1e-12)


def test_entropy_reg_hand_value():
    # p = (1/4, 3/4): H = -(1/4 ln 1/4 + 3/4 ln 3/4)
    x = torch.tensor([[0.0, LN3]], dtype=torch.float64)
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert build_loss("entropy_reg", beta=0.5)(x, torch.tensor([1])).item() == pytest.approx(
        -math.log(0.75) - 0.5 * h, rel=1e-12
    )


@pytest.mark.parametrize("k", [2, 3, 10, 1000])
def test_entropy_of_uniform_is_log_k(k):
    for c in (0.0, 7.5, -1e4):
        h = entropy_from_logits(torch.full((3, k), c, dtype=torch.float64))
        torch.testing.assert_close(h, torch.full((3,), math.log(k), dtype=torch.float64), rtol=1e-12, atol=0)


def test_entropy_of_confident_prediction_is_zero():
    x = torch.tensor([[1e4, 0.0, -1e4]])
    assert entropy_from_logits(x).item() == 0.0


@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 8),
    k=st.integers(2, 6),
    alpha=st.floats(0.0, 2.0),
    seed=st.integers(0, 10_000),
    scale=st.floats(0.1, 5.0),
)
def test_proposed_matches_naive_reference(b, k, alpha, seed, scale):
    x, y, w, _ = _batch(b=b, k=k, seed=seed, dtype=torch.float64, scale=scale)
    _, ce, h = _naive_parts(x, y)
    expected = ce - alpha * w.numpy() * h
    loss = build_loss("proposed", alpha=alpha)
    np.testing.assert_allclose(loss.per_sample(x, y, weights=w).numpy(), expected, rtol=1e-10, atol=1e-12)
    assert loss(x, y, weights=w).item() == pytest.approx(expected.mean(), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("name", ALL)
def test_forward_is_mean_of_per_sample(name):
    x, y, w, i = _batch(b=10, k=5, seed=11, dtype=torch.float64, scale=2.0)
    loss = _make(name).eval()
    if name == "crl":
        loss.update(torch.arange(10), torch.arange(10) % 3 == 0)
    torch.testing.assert_close(
        loss(x, y, weights=w, ids=i), loss.per_sample(x, y, weights=w, ids=i).mean(), rtol=1e-12, atol=1e-14
    )


# ------------------------------------------------------------------ CRL


def _crl_reference(logits, targets, ids, c_all, lam):
    """Authors' formulation (Moon et al. 2020 code): pair i with roll(-1), MarginRankingLoss(margin=0)
    with the margin folded into the second input."""
    conf = F.softmax(logits, dim=1).max(dim=1).values
    conf2 = torch.roll(conf, -1)
    c1 = c_all[ids]
    c2 = c_all[torch.roll(ids, -1)]
    target = (c1 > c2).to(logits.dtype) - (c1 < c2).to(logits.dtype)
    margin = (c1 - c2).abs().to(logits.dtype)
    nonzero = torch.where(target == 0, torch.ones_like(target), target)
    rank = torch.nn.MarginRankingLoss(margin=0.0)(conf, conf2 + margin / nonzero, target)
    return F.cross_entropy(logits, targets) + lam * rank


def _authors_correctness(counts, epochs_finished):
    """crl_utils.History.correctness_normalize of the authors' code: (n - min n) / (max_correctness - min n),
    with max_correctness = max(epochs finished, 1) (it starts at 1 and grows after every epoch but the first)."""
    n = counts.double()
    return (n - n.min()) / (max(epochs_finished, 1) - n.min())


def test_crl_matches_reference_formulation():
    n = 12
    loss = build_loss("crl", num_samples=n, lam=0.7).eval()
    # 4 finished epochs; sample j right (j % 3) + 1 times: n_min = 1, so c = (n - 1) / 3
    counts = torch.tensor([j % 3 + 1 for j in range(n)])
    for epoch in range(4):
        loss.update(torch.arange(n), counts > epoch)
        loss.end_epoch()
    assert loss.correct_count.tolist() == counts.tolist() and int(loss.epochs_finished) == 4
    c_all = _authors_correctness(counts, 4)
    torch.testing.assert_close(loss.correctness(torch.arange(n)), c_all, rtol=0, atol=0)
    torch.testing.assert_close(c_all[:3], torch.tensor([0.0, 1 / 3, 2 / 3], dtype=torch.float64))
    x, y, _, _ = _batch(b=8, k=3, seed=12, dtype=torch.float64, scale=2.0)
    ids = torch.tensor([3, 7, 0, 11, 5, 2, 9, 4])
    expected = _crl_reference(x, y, ids, c_all, 0.7)
    assert loss(x, y, ids=ids).item() == pytest.approx(expected.item(), rel=1e-12)
    assert c_all[ids].unique().numel() > 2  # the ranking term is really exercised
    assert loss(x, y, ids=ids).item() > F.cross_entropy(x, y).item()


def test_crl_normalises_correctness_as_the_authors_by_hand():
    loss = build_loss("crl", num_samples=4, lam=1.0).eval()
    # Epochs 1-3 (one visit per sample each): sample 0 right 3 times, sample 1 once, sample 2 twice,
    # sample 3 once. Then, in epoch 4, sample 0 is visited and right again:
    #   n = (4, 1, 2, 1), n_min = 1, E = 3 finished epochs
    #   c = (n - n_min) / (E - n_min) = (3, 0, 1, 0) / 2 = (1.5, 0, 0.5, 0)
    # (the old count / visits gave (4/4, 1/3, 2/3, 1/3) = (1, 1/3, 2/3, 1/3)).
    for right in ([1, 0, 1, 1], [1, 1, 1, 0], [1, 0, 0, 0]):
        loss.update(torch.arange(4), torch.tensor(right, dtype=torch.bool))
        loss.end_epoch()
    loss.update(torch.tensor([0]), torch.tensor([True]))
    assert loss.correct_count.tolist() == [4, 1, 2, 1] and loss.seen_count.tolist() == [4, 3, 3, 3]
    assert loss.correctness(torch.arange(4)).tolist() == [1.5, 0.0, 0.5, 0.0]
    # Ranking samples 0 and 2: logits (0, 0) -> kappa_0 = 1/2; (ln 3, 0) -> kappa_2 = 3/4 (both target 0).
    #   pair (0, 2): g = +1, margin |1.5 - 0.5| = 1: max(0, -(1/2 - 3/4) + 1) = 1.25
    #   pair (2, 0): g = -1:                        max(0, (3/4 - 1/2) + 1) = 1.25
    # so each loss is its CE (ln 2, -ln 3/4) + 1.25; with the old c the margin was 1/3 (1/4 + 1/3).
    x = torch.tensor([[0.0, 0.0], [LN3, 0.0]], dtype=torch.float64)
    y = torch.tensor([0, 0])
    per = loss.per_sample(x, y, ids=torch.tensor([0, 2])).numpy()
    np.testing.assert_allclose(per, [math.log(2.0) + 1.25, -math.log(0.75) + 1.25], rtol=1e-12)


def test_crl_normalisation_guard_when_every_sample_is_always_right():
    loss = build_loss("crl", num_samples=2).eval()
    assert loss.correctness(torch.arange(2)).tolist() == [0.0, 0.0]  # nothing recorded: E floors at 1
    # both right in the one finished epoch: n_min = E = 1, where the authors divide 0 by 0
    loss.update(torch.arange(2), torch.tensor([True, True]))
    loss.end_epoch()
    assert loss.correctness(torch.arange(2)).tolist() == [0.0, 0.0]
    # sample 0 right again in epoch 2: E - n_min = 0 -> the guard divides by 1, count differences
    loss.update(torch.tensor([0]), torch.tensor([True]))
    assert loss.correctness(torch.arange(2)).tolist() == [1.0, 0.0]
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert torch.isfinite(loss(x, torch.tensor([0, 1]), ids=torch.arange(2)))


def test_crl_loads_a_checkpoint_without_the_epoch_count():
    old = build_loss("crl", num_samples=3)
    for _ in range(2):
        old.update(torch.arange(3), torch.tensor([True, False, True]))
    state = {k: v for k, v in old.state_dict().items() if k != "epochs_finished"}
    new = build_loss("crl", num_samples=3)
    new.load_state_dict(state)  # strict: the missing count is filled in from the visits
    assert int(new.epochs_finished) == 2 and new.correct_count.tolist() == [2, 0, 2]


def test_crl_hand_value_two_samples():
    loss = build_loss("crl", num_samples=2, lam=1.0).eval()
    loss.update(torch.tensor([0, 1]), torch.tensor([True, False]))  # c = (1, 0)
    # confidences: sample 0 -> 0.5 (uniform over 2), sample 1 -> 3/4; sample 0 should be more confident
    x = torch.tensor([[0.0, 0.0], [0.0, LN3]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    ce = np.array([math.log(2.0), -math.log(0.75)])
    # pair (0,1): g=+1: max(0, -(0.5-0.75) + 1) = 1.25; pair (1,0): g=-1: max(0, (0.75-0.5) + 1) = 1.25
    np.testing.assert_allclose(loss.per_sample(x, y, ids=torch.tensor([0, 1])).numpy(), ce + 1.25, rtol=1e-12)


def test_crl_forward_updates_history_only_in_training():
    loss = build_loss("crl", num_samples=5)
    x = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    y = torch.tensor([0, 0, 0])  # correct, wrong, correct
    ids = torch.tensor([4, 1, 4])  # repeated id counted twice
    loss.per_sample(x, y, ids=ids)
    assert loss.seen_count.sum().item() == 0
    with torch.no_grad():
        loss(x, y, ids=ids)
    assert loss.seen_count.sum().item() == 0
    loss.eval()
    loss(x, y, ids=ids)
    assert loss.seen_count.sum().item() == 0
    loss.train()
    first = loss(x, y, ids=ids)
    assert loss.seen_count.tolist() == [0, 1, 0, 0, 2]
    assert loss.correct_count.tolist() == [0, 0, 0, 0, 2]
    # sample 4 right twice before any epoch finished: (2 - 0) / max(1 - 0, 1), above 1 as in the authors' code
    assert loss.correctness(torch.tensor([4, 1, 0])).tolist() == [2.0, 0.0, 0.0]
    # the first call ranked with an empty history (all ties) -> plain CE
    torch.testing.assert_close(first, F.cross_entropy(x, y), rtol=1e-6, atol=0)
    assert set(loss.state_dict()) == {"correct_count", "seen_count", "epochs_finished"}


# ------------------------------------------------------------------ gradients and numerics


def _gradcheck_inputs(name, seed=0):
    x, y, w, i = _batch(b=5, k=4, seed=seed, dtype=torch.float64, scale=1.5)
    return x.requires_grad_(True), y, w, i


@pytest.mark.parametrize("name", ALL)
def test_gradcheck(name):
    kw = {"gamma": 0.5} if name == "focal" else {}
    loss = _make(name, **kw).eval()
    x, y, w, i = _gradcheck_inputs(name)
    if name == "crl":
        loss.update(torch.arange(16), torch.arange(16) % 3 == 0)
        loss.update(torch.arange(16), torch.arange(16) % 2 == 0)
    assert torch.autograd.gradcheck(lambda z: loss(z, y, weights=w, ids=i), (x,))
    assert torch.autograd.gradcheck(lambda z: loss.per_sample(z, y, weights=w, ids=i), (x,))


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_huge_logits_give_finite_loss_and_grad(name, dtype):
    kw = {"gamma": 0.5} if name == "focal" else {}
    loss = _make(name, **kw)
    x, y, w, i = _batch(b=8, k=5, seed=13, dtype=dtype, scale=1e4)
    x[0] = 0.0
    x[0, y[0]] = 1e4  # one sample confidently right (p_t == 1 exactly)
    x.requires_grad_(True)
    value = loss(x, y, weights=w, ids=i)
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


def test_huge_logits_cross_entropy_value():
    # CE of a wrong confident prediction is the logit gap, not inf
    x = torch.tensor([[1e4, 0.0]])
    expected = {
        "ce": 1e4,
        "proposed": 1e4,
        "entropy_reg": 1e4,
        "focal": 1e4,
        "poly1": 1e4 + 1.0,
        "label_smoothing": 1e4 * (1 - 0.1 / 2),
        "l1_norm": 1e4 + 0.01 * 1e4,
    }
    for name, value in expected.items():
        got = _make(name)(x, torch.tensor([1]), weights=torch.ones(1)).item()
        assert got == pytest.approx(value, rel=1e-6), name


def test_isinstance_of_crl_class():
    assert isinstance(build_loss("crl", num_samples=3), CorrectnessRankingLoss)

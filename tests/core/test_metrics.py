"""Tests for rmd_ray.core.metrics: reference values (docs/design.md section 5), hand computations, naive
loop references, invariances and every validation branch."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmd_ray.core import metrics as M
from rmd_ray.core.metrics.calibration import _width_bin_ids

# docs/design.md section 5, row 1 (torchmetrics' multiclass_calibration_error docstring example).
P4 = np.array([[0.25, 0.20, 0.55], [0.55, 0.05, 0.40], [0.10, 0.30, 0.60], [0.90, 0.05, 0.05]])
Y4 = np.array([0, 1, 2, 0])

# docs/design.md section 5, row 3. The original notes gave the last row as [.2, 0, .85], which sums to 1.05 and is
# rejected by check_probabilities. We could not find the published source of this example (searched
# torchmetrics / netcal code); the expected 0.075 needs a top-label confidence of exactly 0.85 with
# class 2 predicted, so the row must have been [.15, 0, .85] (a valid row; .2 looks like a typo).
# Renormalising [.2, 0, .85] / 1.05 instead gives confidence 0.8095 and ECE 0.08175 (tested below).
P6 = np.array([[0.8, 0.1, 0.1], [0.6, 0.2, 0.2], [0, 0.9, 0.1], [0, 1, 0], [0.3, 0.3, 0.4], [0.15, 0, 0.85]])
Y6 = np.array([0, 0, 1, 1, 0, 2])


LOGITS = "looks like logits: apply softmax"


def _rows(conf, k=4):
    """Probability rows whose top-label confidence is ``conf`` on class 0 (needs conf > 1/k)."""
    conf = np.asarray(conf, dtype=float)
    rest = (1 - conf) / (k - 1)
    p = np.repeat(rest[:, None], k, axis=1)
    p[:, 0] = conf
    assert (p[:, 0] > p[:, 1]).all()
    return p


def _labels(correct):
    """Label 0 (the argmax of _rows) when correct, else 1."""
    return np.where(np.asarray(correct, bool), 0, 1)


def _random_probs(rng, n, k, quantum=None):
    p = rng.dirichlet(np.full(k, 0.5), size=n)
    if quantum is not None:  # coarse grid: many exact ties and confidences on bin edges
        counts = rng.multinomial(quantum, np.full(k, 1.0 / k), size=n)
        p = counts / quantum
    return p


# -------------------------------------------------------------------------------------------
# naive references
# -------------------------------------------------------------------------------------------


def naive_ece(probs, labels, n_bins, binning, norm="l1"):
    n = len(labels)
    conf = [max(row) for row in probs]
    correct = [int(np.argmax(row)) == int(lab) for row, lab in zip(probs, labels, strict=True)]
    bin_of = [0] * n
    if binning == "width":
        for i, c in enumerate(conf):
            for b in range(n_bins):
                lo, hi = b / n_bins, (b + 1) / n_bins
                if (lo < c <= hi) or (b == 0 and c == 0.0):
                    bin_of[i] = b
                    break
    else:
        order = sorted(range(n), key=lambda i: conf[i])  # Python's sort is stable
        rank_bin, base, extra = [], n // n_bins, n % n_bins
        for b in range(n_bins):
            rank_bin += [b] * (base + (1 if b < extra else 0))
        for i in order:
            first = min(rr for rr, j in enumerate(order) if conf[j] == conf[i])
            bin_of[i] = rank_bin[first]
    terms = []
    for b in range(n_bins):
        members = [i for i in range(n) if bin_of[i] == b]
        if not members:
            continue
        acc = sum(correct[i] for i in members) / len(members)
        cf = sum(conf[i] for i in members) / len(members)
        terms.append((len(members) / n, abs(acc - cf)))
    if norm == "l1":
        return sum(w * g for w, g in terms)
    if norm == "l2":
        return math.sqrt(sum(w * g * g for w, g in terms))
    return max(g for _, g in terms)


# -------------------------------------------------------------------------------------------
# check_probabilities / softmax
# -------------------------------------------------------------------------------------------


def test_check_probabilities_returns_float64_and_int64():
    p, y = M.check_probabilities(P4.astype(np.float32), Y4.astype(np.int32))
    assert p.dtype == np.float64 and y.dtype == np.int64
    np.testing.assert_allclose(p, P4, atol=1e-7)
    assert M.check_probabilities(P4)[1] is None


@pytest.mark.parametrize(
    "probs, labels, exc, match",
    [
        (np.array([[1, 0], [0, 1]]), None, TypeError, "floating-point"),
        (np.array([0.5, 0.5]), None, ValueError, "must be 2-D"),
        (np.zeros((0, 3)), None, ValueError, "empty"),
        (np.ones((3, 1)), None, ValueError, "at least 2"),
        (np.array([[0.5, 0.5], [np.nan, 0.5], [np.inf, 0]]), None, ValueError, "row 1 holds NaN or inf"),
        (np.array([[0.5, 0.5], [2.0, -1.0]]), None, ValueError, "row 1 has entries outside.*" + LOGITS),
        (np.array([[0.5, 0.5], [0.3, 0.3]]), None, ValueError, "row 1 sums to 0.6.*" + LOGITS),
        (P4, np.array([0.0, 1, 2, 0]), TypeError, "integer class indices"),
        (P4, np.array([[0, 1, 2, 0]]), ValueError, "labels must be 1-D"),
        (P4, np.array([0, 1, 2]), ValueError, "4 rows but labels have 3"),
        (P4, np.array([0, 1, 3, 0]), ValueError, r"label 3 outside 0..2"),
        (P4, np.array([0, -1, 2, 0]), ValueError, r"label -1 outside 0..2"),
    ],
)
def test_check_probabilities_rejects(probs, labels, exc, match):
    with pytest.raises(exc, match=match):
        M.check_probabilities(probs, labels)


def test_row_sum_tolerance_is_1e_4():
    ok = np.array([[0.5, 0.5 + 0.9e-4]])
    M.check_probabilities(ok)
    with pytest.raises(ValueError, match="looks like logits"):
        M.check_probabilities(np.array([[0.5, 0.5 + 1.1e-4]]))


def test_public_metrics_validate_at_entry():
    logits = np.array([[2.0, -1.0], [0.5, 3.0]])
    for fn in (M.accuracy, M.negative_log_likelihood, M.brier_score, M.expected_calibration_error):
        with pytest.raises(ValueError, match="looks like logits: apply softmax"):
            fn(logits, np.array([0, 1]))
    with pytest.raises(ValueError, match="looks like logits"):
        M.predictive_entropy(logits)


def test_softmax_values_and_stability():
    z = np.array([[0.0, np.log(3.0)], [1000.0, 1000.0], [-1000.0, 0.0]])
    p = M.softmax(z)
    np.testing.assert_allclose(p[0], [0.25, 0.75])
    np.testing.assert_allclose(p[1], [0.5, 0.5])
    assert p[2, 0] == 0.0 and p[2, 1] == 1.0  # no overflow / NaN
    np.testing.assert_allclose(M.softmax(np.array([1, 2, 3])), np.exp([1, 2, 3]) / np.exp([1, 2, 3]).sum())
    np.testing.assert_allclose(M.softmax(z.T, axis=0), p.T)


@pytest.mark.parametrize(
    "z, exc, match",
    [
        (np.array([["a", "b"]]), TypeError, "real-valued"),
        (np.float64(1.0), ValueError, "non-empty class axis"),
        (np.zeros((2, 0)), ValueError, "non-empty class axis"),
        (np.array([[0.0, np.nan]]), ValueError, "NaN or inf"),
    ],
)
def test_softmax_rejects(z, exc, match):
    with pytest.raises(exc, match=match):
        M.softmax(z)


# -------------------------------------------------------------------------------------------
# elementary metrics
# -------------------------------------------------------------------------------------------


def test_accuracy_argmax_ties_take_first_index():
    probs = np.array([[0.4, 0.4, 0.2], [0.3, 0.35, 0.35]])
    assert M.accuracy(probs, np.array([0, 1])) == 1.0
    assert M.accuracy(probs, np.array([1, 2])) == 0.0
    assert M.accuracy(P4, Y4) == 0.5


def test_nll_brier_hand_values():
    probs = np.array([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]])
    y = np.array([0, 1])
    assert M.negative_log_likelihood(probs, y) == pytest.approx(-(math.log(0.7) + math.log(0.25)) / 2)
    b0 = 0.3**2 + 0.2**2 + 0.1**2
    b1 = 0.25**2 + 0.75**2 + 0.5**2
    assert M.brier_score(probs, y) == pytest.approx((b0 + b1) / 2)
    assert M.brier_score(np.eye(3), np.array([0, 1, 2])) == 0.0
    assert M.brier_score(np.eye(3), np.array([1, 2, 0])) == pytest.approx(2.0)


def test_nll_clips_at_tiny():
    probs = np.array([[1.0, 0.0], [0.5, 0.5]])
    tiny = np.finfo(np.float64).tiny
    expected = (-math.log(tiny) - math.log(0.5)) / 2
    assert M.negative_log_likelihood(probs, np.array([1, 0])) == pytest.approx(expected)
    assert -math.log(tiny) == pytest.approx(708.396, abs=1e-3)


def test_predictive_entropy_zero_log_zero():
    probs = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    with np.errstate(all="raise"):  # no log(0) warning either
        h = M.predictive_entropy(probs)
    np.testing.assert_allclose(h, [0.0, math.log(2), math.log(3)])


# -------------------------------------------------------------------------------------------
# ECE: reference values
# -------------------------------------------------------------------------------------------


def test_ece_reference_three_equal_width_bins():
    assert M.expected_calibration_error(P4, Y4, n_bins=3, norm="l1") == pytest.approx(0.2000, abs=1e-4)
    assert M.expected_calibration_error(P4, Y4, n_bins=3, norm="l2") == pytest.approx(0.2082, abs=1e-4)
    assert M.expected_calibration_error(P4, Y4, n_bins=3, norm="max") == pytest.approx(0.2333, abs=1e-4)
    assert M.maximum_calibration_error(P4, Y4, n_bins=3) == pytest.approx(0.7 / 3)
    # exact: bin (1/3, 2/3] holds .55, .55, .60 (1 of 3 right), bin (2/3, 1] holds .90 (right)
    exact = 0.75 * (1.7 / 3 - 1 / 3) + 0.25 * 0.1
    assert M.expected_calibration_error(P4, Y4, n_bins=3) == pytest.approx(exact)


def test_ece_reference_two_equal_mass_bins_differs_from_width():
    # sorted confidences .55(wrong) .55(wrong) | .60(right) .90(right): .5*.55 + .5*(1-.75) = .40
    assert M.expected_calibration_error(P4, Y4, n_bins=2, binning="mass") == pytest.approx(0.40)
    # equal width: all four in (.5, 1]: |0.5 - 0.65| = 0.15
    assert M.expected_calibration_error(P4, Y4, n_bins=2, binning="width") == pytest.approx(0.15)


@pytest.mark.parametrize("binning", ["width", "mass"])
def test_ece_reference_six_samples(binning):
    assert M.expected_calibration_error(P6, Y6, n_bins=3, binning=binning) == pytest.approx(0.075)


@pytest.mark.parametrize("binning", ["width", "mass"])
def test_ece_six_samples_with_renormalised_typo_row(binning):
    p = P6.copy()
    p[5] = np.array([0.2, 0.0, 0.85]) / 1.05
    # top bin holds .8 .9 1.0 and 0.85/1.05, all right: (2/3) * (1 - mean)
    expected = (4 / 6) * (1 - (0.8 + 0.9 + 1.0 + 0.85 / 1.05) / 4)
    assert M.expected_calibration_error(p, Y6, n_bins=3, binning=binning) == pytest.approx(expected)
    assert expected == pytest.approx(0.08175, abs=1e-5)
    with pytest.raises(ValueError, match="row 5 sums to 1.05"):
        M.expected_calibration_error(np.vstack([P6[:5], [0.2, 0, 0.85]]), Y6)


@pytest.mark.parametrize("binning", ["width", "mass"])
def test_ece_two_samples(binning):
    assert M.expected_calibration_error(np.array([[0.9, 0.1], [0.8, 0.2]]), np.array([0, 0]),
                                        binning=binning) == pytest.approx(0.15)


def test_ece_equal_mass_hand_computation_uneven_groups():
    # N = 7, 3 bins -> np.array_split sizes 3, 2, 2 of the ascending order
    conf = [0.9, 0.3, 0.6, 0.5, 0.8, 0.4, 0.7]
    correct = [1, 0, 1, 0, 0, 1, 1]
    # groups: {.3 w, .4 r, .5 w}: |1/3 - .4|; {.6 r, .7 r}: |1 - .65|; {.8 w, .9 r}: |.5 - .85|
    expected = 3 / 7 * abs(1 / 3 - 0.4) + 2 / 7 * 0.35 + 2 / 7 * 0.35
    probs, y = _rows(conf), _labels(correct)
    assert M.expected_calibration_error(probs, y, n_bins=3, binning="mass") == pytest.approx(expected)
    # equal width differs: (0,1/3] {.3 w}, (1/3,2/3] {.4 r, .5 w, .6 r}, (2/3,1] {.7 r, .8 w, .9 r}
    width = 1 / 7 * 0.3 + 3 / 7 * abs(2 / 3 - 0.5) + 3 / 7 * abs(2 / 3 - 0.8)
    assert M.expected_calibration_error(probs, y, n_bins=3, binning="width") == pytest.approx(width)
    assert abs(expected - width) > 0.05


# -------------------------------------------------------------------------------------------
# ECE: edge rules
# -------------------------------------------------------------------------------------------


def test_width_bins_are_left_open_right_closed_with_0_first_and_1_last():
    ids = _width_bin_ids(np.array([0.0, 0.2, 0.2000001, 0.6, 0.61, 1.0]), 5)
    np.testing.assert_array_equal(ids, [0, 0, 1, 2, 3, 4])
    # confidence 0 cannot arise from a top label; 1 can: it is in the last bin
    rd = M.reliability_diagram_data(np.array([[1.0, 0.0], [0.6, 0.4]]), np.array([0, 0]), n_bins=5)
    np.testing.assert_array_equal(rd.bin_index, [2, 4])
    np.testing.assert_allclose(rd.lower, [0.4, 0.8])
    np.testing.assert_allclose(rd.upper, [0.6, 1.0])


def test_confidence_on_an_edge_goes_to_lower_bin():
    # .6 sits on the 3/5 edge -> bin (.4, .6] together with .5; .7 is alone in (.6, .8]
    probs, y = _rows([0.5, 0.6, 0.7], k=3), _labels([0, 1, 1])
    expected = 2 / 3 * abs(0.5 - 0.55) + 1 / 3 * 0.3
    assert M.expected_calibration_error(probs, y, n_bins=5) == pytest.approx(expected)


@pytest.mark.parametrize("binning", ["width", "mass"])
def test_identical_confidences_form_one_bin(binning):
    probs, y = _rows([0.7] * 4), _labels([1, 0, 1, 1])
    assert M.expected_calibration_error(probs, y, n_bins=15, binning=binning) == pytest.approx(0.05)
    rd = M.reliability_diagram_data(probs, y, n_bins=15, binning=binning)
    assert rd.count.tolist() == [4]


def test_equal_mass_tie_run_across_group_boundary_joins_lower_group():
    # array_split would cut .5 .5 | .5 .9; the run of .5 stays together in the lower group
    conf, correct = [0.5, 0.5, 0.5, 0.9], [1, 0, 0, 1]
    expected = 3 / 4 * abs(1 / 3 - 0.5) + 1 / 4 * 0.1
    for perm in ([0, 1, 2, 3], [1, 2, 0, 3], [3, 2, 1, 0]):
        probs, y = _rows(np.array(conf)[perm]), _labels(np.array(correct)[perm])
        assert M.expected_calibration_error(probs, y, n_bins=2, binning="mass") == pytest.approx(expected)
    rd = M.reliability_diagram_data(_rows(conf), _labels(correct), n_bins=2, binning="mass")
    assert rd.count.tolist() == [3, 1]
    np.testing.assert_allclose(rd.lower, [0.5, 0.9])
    np.testing.assert_allclose(rd.upper, [0.5, 0.9])


def test_empty_bins_are_skipped_and_ignored_by_max():
    probs, y = _rows([0.95, 0.92]), _labels([1, 1])
    # 15 equal-width bins, 14 empty: they must not add a |0 - 0| = 0 gap... nor count in the max
    assert M.expected_calibration_error(probs, y, norm="max") == pytest.approx(0.08)
    # more mass bins than samples: empty groups skipped, each sample its own bin
    assert M.expected_calibration_error(probs, y, n_bins=10, binning="mass") == pytest.approx(0.065)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"n_bins": 0}, ValueError, "n_bins must be a positive integer"),
        ({"n_bins": 2.5}, ValueError, "n_bins must be a positive integer"),
        ({"n_bins": True}, ValueError, "n_bins must be a positive integer"),
        ({"binning": "quantile"}, ValueError, "unknown binning 'quantile'; valid names: mass, width"),
        ({"norm": "l3"}, ValueError, "unknown calibration norm 'l3'; valid names: l1, l2, max"),
        ({"binning": 3}, TypeError, "must be given by name"),
    ],
)
def test_ece_rejects_bad_options(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        M.expected_calibration_error(P4, Y4, **kwargs)


def test_reliability_diagram_rejects_bad_options():
    with pytest.raises(ValueError, match="n_bins must be a positive integer"):
        M.reliability_diagram_data(P4, Y4, n_bins=-1)
    with pytest.raises(ValueError, match="unknown binning"):
        M.reliability_diagram_data(P4, Y4, binning="uniform")


def test_reliability_diagram_values_and_ece_consistency():
    rd = M.reliability_diagram_data(P4, Y4, n_bins=3)
    np.testing.assert_array_equal(rd.bin_index, [1, 2])
    np.testing.assert_allclose(rd.confidence, [1.7 / 3, 0.9])
    np.testing.assert_allclose(rd.accuracy, [1 / 3, 1.0])
    np.testing.assert_array_equal(rd.count, [3, 1])
    np.testing.assert_allclose(rd.lower, [1 / 3, 2 / 3])
    np.testing.assert_allclose(rd.upper, [2 / 3, 1.0])
    assert rd.n_samples == 4
    rd = M.reliability_diagram_data(P4, Y4, n_bins=2, binning="mass")
    np.testing.assert_allclose(rd.lower, [0.55, 0.60])
    np.testing.assert_allclose(rd.upper, [0.55, 0.90])


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 40),
    k=st.integers(2, 5),
    n_bins=st.integers(1, 12),
    quantum=st.sampled_from([None, 4, 10, 12]),
    binning=st.sampled_from(["width", "mass"]),
    norm=st.sampled_from(["l1", "l2", "max"]),
)
def test_ece_matches_naive_loop_and_is_permutation_invariant(seed, n, k, n_bins, quantum, binning, norm):
    rng = np.random.default_rng(seed)
    probs = _random_probs(rng, n, k, quantum)
    labels = rng.integers(0, k, size=n)
    got = M.expected_calibration_error(probs, labels, n_bins=n_bins, binning=binning, norm=norm)
    assert got == pytest.approx(naive_ece(probs.tolist(), labels.tolist(), n_bins, binning, norm), abs=1e-12)
    perm = rng.permutation(n)
    opts = {"n_bins": n_bins, "binning": binning, "norm": norm}
    permuted = M.expected_calibration_error(probs[perm], labels[perm], **opts)
    assert permuted == pytest.approx(got, abs=1e-12)
    rd = M.reliability_diagram_data(probs, labels, n_bins=n_bins, binning=binning)
    if norm == "l1":
        assert np.sum(rd.count / n * np.abs(rd.accuracy - rd.confidence)) == pytest.approx(got, abs=1e-12)
    assert rd.count.sum() == n and (rd.count > 0).all()
    assert (rd.lower <= rd.confidence + 1e-12).all() and (rd.confidence <= rd.upper + 1e-12).all()


def test_ece_agrees_with_torchmetrics():
    tm = pytest.importorskip(
        "torchmetrics.functional.classification",
        reason="torchmetrics is not installed (not a dependency); independent ECE check skipped",
    )
    import torch

    torch.set_num_threads(1)
    rng = np.random.default_rng(7)
    probs = rng.dirichlet(np.full(5, 0.4), size=500)
    labels = rng.integers(0, 5, size=500)
    conf = probs.max(axis=1)
    # Bin-edge conventions differ between torchmetrics versions ((lo, hi] before, [lo, hi) with
    # bucketize(right=True) later) and its public API bins in float32: keep clear of every edge.
    edges = np.arange(16) / 15
    far = np.min(np.abs(conf[:, None] - edges[None, :]), axis=1) > 1e-4
    probs, labels = probs[far], labels[far]
    for norm in ("l1", "l2", "max"):
        ours = M.expected_calibration_error(probs, labels, n_bins=15, norm=norm)
        theirs = tm.multiclass_calibration_error(
            torch.from_numpy(probs), torch.from_numpy(labels), num_classes=5, n_bins=15, norm=norm
        )
        assert ours == pytest.approx(float(theirs), abs=1e-6)  # float32 inside torchmetrics
    ce_compute = getattr(
        __import__("torchmetrics.functional.classification.calibration_error", fromlist=["_ce_compute"]),
        "_ce_compute",
        None,
    )
    if ce_compute is None:
        pytest.skip("torchmetrics has no _ce_compute; float64 agreement to 1e-9 not checked")
    t_conf = torch.from_numpy(probs.max(axis=1))
    t_acc = torch.from_numpy((probs.argmax(axis=1) == labels).astype(np.float64))
    bounds = torch.linspace(0, 1, 16, dtype=torch.float64)
    for norm in ("l1", "l2", "max"):
        ours = M.expected_calibration_error(probs, labels, n_bins=15, norm=norm)
        assert ours == pytest.approx(float(ce_compute(t_conf, t_acc, bounds, norm=norm)), abs=1e-9)


# -------------------------------------------------------------------------------------------
# selective classification
# -------------------------------------------------------------------------------------------


def test_risk_coverage_curve_and_aurc_hand_values():
    coverage, risk = M.risk_coverage_curve([0.7, 0.9, 0.8], [True, True, False])
    np.testing.assert_allclose(coverage, [1 / 3, 2 / 3, 1.0])
    np.testing.assert_allclose(risk, [0.0, 0.5, 1 / 3])
    assert M.aurc([0.7, 0.9, 0.8], [1, 1, 0]) == pytest.approx((0 + 0.5 + 1 / 3) / 3)


def test_risk_coverage_ties_are_kept_together():
    # .9 right; .5 .5 one right one wrong; .1 wrong
    coverage, risk = M.risk_coverage_curve([0.5, 0.9, 0.1, 0.5], [1, 1, 0, 0])
    np.testing.assert_allclose(coverage, [0.25, 0.75, 1.0])
    np.testing.assert_allclose(risk, [0.0, 1 / 3, 0.5])
    assert M.aurc([0.5, 0.9, 0.1, 0.5], [1, 1, 0, 0]) == pytest.approx(0.25 * 0 + 0.5 / 3 + 0.25 * 0.5)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 50))
def test_aurc_equals_mean_risk_at_k_without_ties(seed, n):
    rng = np.random.default_rng(seed)
    conf = rng.permutation(n) / n + 0.001  # distinct
    correct = rng.random(n) < 0.6
    order = sorted(range(n), key=lambda i: -conf[i])
    risks = [sum(not correct[j] for j in order[:k]) / k for k in range(1, n + 1)]
    assert M.aurc(conf, correct) == pytest.approx(sum(risks) / n, abs=1e-12)
    perm = rng.permutation(n)
    assert M.aurc(conf[perm], correct[perm]) == pytest.approx(M.aurc(conf, correct), abs=1e-12)


def test_accuracy_rejection_curve_hand_values():
    conf = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05]
    correct = [1, 1, 1, 0, 1, 0, 1, 0, 0, 0]
    acc = M.accuracy_rejection_curve(conf, correct, rejection_rates=[0.0, 0.5, 0.7, 0.9])
    np.testing.assert_allclose(acc, [0.5, 0.8, 1.0, 1.0])


def test_accuracy_rejection_curve_tie_at_the_cut_is_averaged():
    # keep 2 of 4: .9 (right) plus one of the tied .5 pair (one right, one wrong) -> (1 + .5) / 2
    for conf, correct in (([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0]), ([0.5, 0.1, 0.9, 0.5], [0, 0, 1, 1])):
        acc = M.accuracy_rejection_curve(conf, correct, rejection_rates=[0.5, 0.25])
        np.testing.assert_allclose(acc, [0.75, 2 / 3])


def test_accuracy_rejection_curve_rounds_half_to_even():
    # N = 10, rate .25 -> rint(2.5) = 2 rejected, rate .35 -> rint(3.5) = 4 rejected
    conf = np.arange(10, 0, -1) / 10
    correct = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0])
    acc = M.accuracy_rejection_curve(conf, correct, rejection_rates=[0.25, 0.35])
    np.testing.assert_allclose(acc, [6 / 8, 6 / 6])


@pytest.mark.parametrize(
    "conf, correct, kwargs, exc, match",
    [
        ([[0.5, 0.4]], [1], {}, ValueError, "confidence must be 1-D"),
        ([], [], {}, ValueError, "confidence is empty"),
        ([0.5, np.nan], [1, 0], {}, ValueError, r"confidence\[1\] is NaN or inf"),
        (["a"], [1], {}, TypeError, "real-valued"),
        ([0.5, 0.4], [0.0, 1.0], {}, TypeError, "boolean"),
        ([0.5, 0.4], [[1, 0]], {}, ValueError, "correct must be 1-D"),
        ([0.5, 0.4], [1, 0, 1], {}, ValueError, "confidence has 2 entries but correct has 3"),
        ([0.5, 0.4], [1, 2], {}, ValueError, "only 0/1"),
    ],
)
def test_selective_validation(conf, correct, kwargs, exc, match):
    for fn in (M.risk_coverage_curve, M.aurc):
        with pytest.raises(exc, match=match):
            fn(conf, correct)
    with pytest.raises(exc, match=match):
        M.accuracy_rejection_curve(conf, correct, rejection_rates=[0.1])


@pytest.mark.parametrize(
    "rates, match",
    [
        ([], "non-empty 1-D"),
        ([[0.1]], "non-empty 1-D"),
        ([1.0], r"must lie in \[0, 1\)"),
        ([-0.1], r"must lie in \[0, 1\)"),
        ([np.nan], r"must lie in \[0, 1\)"),
        ([0.9], "rejects all 3 samples"),
    ],
)
def test_accuracy_rejection_curve_rejects_bad_rates(rates, match):
    with pytest.raises(ValueError, match=match):
        M.accuracy_rejection_curve([0.9, 0.8, 0.7], [1, 0, 1], rejection_rates=rates)


# -------------------------------------------------------------------------------------------
# misclassification / OOD detection
# -------------------------------------------------------------------------------------------


def test_fpr_at_95_tpr_reference():
    conf = [0.9, 0.8, 0.7, 0.6, 0.4, 0.2, 0.1]
    correct = [1, 0, 1, 0, 0, 1, 0]
    assert M.fpr_at_tpr(conf, correct) == pytest.approx(0.75)
    # TPR 2/3 is reached at threshold .7 with one negative (.8) above it
    assert M.fpr_at_tpr(conf, correct, tpr=0.6) == pytest.approx(0.25)
    assert M.fpr_at_tpr(conf, np.array(correct, bool), tpr=1) == pytest.approx(0.75)


def test_fpr_at_tpr_exact_boundary_counts():
    # 20 positives: TPR 19/20 = 0.95 must count as reaching 95%
    scores = np.r_[np.arange(20, 0, -1), 0.5, 0.25]  # positives 20..2, 1 ; negatives .5 .25
    pos = np.r_[np.ones(20, bool), np.zeros(2, bool)]
    scores[19] = 0.1  # the 20th positive scores below both negatives
    assert M.fpr_at_tpr(scores, pos) == 0.0
    assert M.fpr_at_tpr(scores, pos, tpr=0.96) == 1.0


def test_fpr_at_tpr_against_naive_threshold_scan():
    rng = np.random.default_rng(3)
    for _ in range(20):
        n = int(rng.integers(4, 40))
        s = np.round(rng.random(n), 1)  # many ties
        pos = rng.random(n) < 0.5
        if pos.all() or not pos.any():
            continue
        best = min(
            ((s[~pos] >= t).mean() for t in np.unique(s) if (s[pos] >= t).mean() >= 0.95),
        )
        assert M.fpr_at_tpr(s, pos) == pytest.approx(best)


@pytest.mark.parametrize(
    "scores, positives, kwargs, exc, match",
    [
        ([0.1, 0.2], [1, 1], {}, ValueError, "no negative sample"),
        ([0.1, 0.2], [0, 0], {}, ValueError, "no positive sample"),
        ([[0.1, 0.2]], [1, 0], {}, ValueError, "non-empty 1-D"),
        ([0.1, np.inf], [1, 0], {}, ValueError, r"scores\[1\] is NaN or inf"),
        ([0.1, 0.2], [1, 0, 1], {}, ValueError, "scores has 2 entries but positives has 3"),
        ([0.1, 0.2], [1, 0], {"tpr": 0.0}, ValueError, r"tpr must be a number in \(0, 1\]"),
        ([0.1, 0.2], [1, 0], {"tpr": 1.5}, ValueError, r"tpr must be a number in \(0, 1\]"),
    ],
)
def test_fpr_at_tpr_rejects(scores, positives, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        M.fpr_at_tpr(scores, positives, **kwargs)


def test_auroc_ap_reference_through_ood_detection():
    # docs/design.md section 5, row 5: y = [0, 0, 1, 1], s = [.1, .4, .35, .8] -> AUROC 0.75, AP 0.8333.
    # As OOD detection with the max logit as score: in-distribution (y = 1) rows score .35 and .8.
    def logit_rows(s):
        return np.c_[s, np.full(len(s), -10.0)]

    res = M.ood_detection(logit_rows([0.35, 0.8]), logit_rows([0.1, 0.4]), score="maxlogit")
    assert res["auroc"] == pytest.approx(0.75)
    assert res["aupr"] == pytest.approx(0.8333, abs=1e-4)
    # TPR 1 needs threshold .35, where the OOD sample at .4 is above: FPR 0.5
    assert res["fpr_at_95_tpr"] == pytest.approx(0.5)
    # AUPR-Out: OOD as positives with negated score: ranking -0.1, -0.35, -0.4, -0.8 -> (1 + 2/3)/2
    assert res["aupr_error"] == pytest.approx((1 + 2 / 3) / 2)


def test_misclassification_detection_msp_and_entropy():
    # top-label confidences .9 .8 .7 .6 .4(as 3-class) ...: build rows with known MSP
    conf = [0.9, 0.8, 0.7, 0.6, 0.45, 0.4, 0.35]
    correct = [1, 0, 1, 0, 0, 1, 0]
    probs, y = _rows(conf, k=3), _labels(correct)
    res = M.misclassification_detection(probs, y, score="msp")
    pos = np.array(correct, bool)
    # AUROC by pair counting: positives .9 .7 .4 vs negatives .8 .6 .45 .35
    pairs = [(a > b) for a in (0.9, 0.7, 0.4) for b in (0.8, 0.6, 0.45, 0.35)]
    assert res["auroc"] == pytest.approx(sum(pairs) / len(pairs))
    assert res["fpr_at_95_tpr"] == pytest.approx(M.fpr_at_tpr(np.array(conf), pos))
    assert res["fpr_at_95_tpr"] == pytest.approx(0.75)
    # with two equal "rest" entries, entropy is monotone decreasing in MSP: same ranking
    res_h = M.misclassification_detection(probs, y, score="entropy")
    for key in ("auroc", "aupr", "fpr_at_95_tpr", "aupr_error"):
        assert res_h[key] == pytest.approx(res[key])


def test_misclassification_detection_entropy_can_rank_differently():
    # same MSP .5, but [.5, .5, 0] is more certain (lower entropy) than [.5, .25, .25]
    probs = np.array([[0.5, 0.5, 0.0], [0.5, 0.25, 0.25]])
    y = np.array([0, 1])  # first right, second wrong
    assert M.misclassification_detection(probs, y, score="entropy")["auroc"] == 1.0
    assert M.misclassification_detection(probs, y, score="msp")["auroc"] == 0.5


@pytest.mark.parametrize("labels, state", [([0, 1], "correct"), ([1, 0], "wrong")])
def test_misclassification_detection_single_class_raises(labels, state):
    probs = np.array([[0.9, 0.1], [0.2, 0.8]])
    with pytest.raises(ValueError, match=f"every prediction is {state}"):
        M.misclassification_detection(probs, np.array(labels))


def test_misclassification_detection_rejects_unknown_score():
    with pytest.raises(ValueError, match="unknown confidence score 'maxlogit'; valid names: entropy, msp"):
        M.misclassification_detection(P4, Y4, score="maxlogit")


def test_ood_detection_scores_and_validation():
    z_in = np.array([[4.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    z_out = np.array([[1.0, 1.0, 1.0], [10.0, 10.0, 9.0]])
    # max logit ranks the second OOD row (10) above everything: AUROC = 2 of 4 pairs
    assert M.ood_detection(z_in, z_out)["auroc"] == pytest.approx(0.5)
    # MSP / entropy see the uniform-ish OOD rows as uncertain: perfect separation
    for score in ("msp", "entropy"):
        res = M.ood_detection(z_in, z_out, score=score)
        assert res["auroc"] == 1.0 and res["fpr_at_95_tpr"] == 0.0 and res["aupr"] == 1.0
    with pytest.raises(ValueError, match="in_logits have 3 classes but out_logits 2"):
        M.ood_detection(z_in, z_out[:, :2])
    with pytest.raises(ValueError, match="unknown OOD score 'energy'"):
        M.ood_detection(z_in, z_out, score="energy")
    with pytest.raises(ValueError, match="out_logits row 1 holds NaN"):
        M.ood_detection(z_in, np.array([[1.0, 1.0, 1.0], [np.nan, 0, 0]]))
    with pytest.raises(ValueError, match="in_logits is empty"):
        M.ood_detection(np.zeros((0, 3)), z_out)


# -------------------------------------------------------------------------------------------
# evaluate_predictions
# -------------------------------------------------------------------------------------------


def test_evaluate_predictions_matches_the_individual_metrics():
    rng = np.random.default_rng(11)
    logits = rng.normal(size=(300, 6)) * 2.5
    labels = np.where(rng.random(300) < 0.6, logits.argmax(axis=1), rng.integers(0, 6, 300))
    out = M.evaluate_predictions(logits, labels)
    p = M.softmax(logits)
    assert out["n_samples"] == 300
    assert out["acc"] == pytest.approx(M.accuracy(p, labels))
    for binning in ("mass", "width"):
        ece = M.expected_calibration_error(p, labels, n_bins=15, binning=binning)
        assert out[f"ece_{binning}"] == pytest.approx(ece)
    assert out["mce"] == pytest.approx(M.maximum_calibration_error(p, labels, n_bins=15))
    assert out["nll"] == pytest.approx(M.negative_log_likelihood(p, labels), rel=1e-12)
    assert out["brier"] == pytest.approx(M.brier_score(p, labels))
    correct = p.argmax(axis=1) == labels
    assert out["aurc"] == pytest.approx(M.aurc(p.max(axis=1), correct))
    for score in ("msp", "entropy"):
        for key, value in M.misclassification_detection(p, labels, score=score).items():
            assert out[f"{score}_{key}"] == pytest.approx(value)
    assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in out.values())


def test_evaluate_predictions_nll_does_not_clip_from_logits():
    logits = np.array([[0.0, 2000.0], [0.0, 0.0]])
    out = M.evaluate_predictions(logits, np.array([0, 0]))
    assert out["nll"] == pytest.approx((2000.0 + math.log(2)) / 2)


def test_evaluate_predictions_single_class_warns_and_omits_detection():
    logits = np.array([[3.0, 0.0], [0.0, 3.0]])
    with pytest.warns(M.SingleClassWarning, match="all 2 predictions are correct"):
        out = M.evaluate_predictions(logits, np.array([0, 1]))
    assert out["acc"] == 1.0 and "msp_auroc" not in out and "aurc" in out and out["aurc"] == 0.0


def test_evaluate_predictions_validation():
    with pytest.raises(ValueError, match="logits row 0 holds NaN"):
        M.evaluate_predictions(np.array([[np.nan, 0.0]]), np.array([0]))
    with pytest.raises(ValueError, match="label 2 outside 0..1"):
        M.evaluate_predictions(np.zeros((2, 2)), np.array([0, 2]))
    with pytest.raises(TypeError, match="integer class indices"):
        M.evaluate_predictions(np.zeros((2, 2)), np.array([0.0, 1.0]))


def test_core_metrics_do_not_import_torch_or_ray():
    import ast
    from pathlib import Path

    names = set()
    for node in (n for path in Path(M.__file__).parent.glob("*.py") for n in ast.walk(ast.parse(path.read_text()))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    assert not names & {"torch", "ray", "torchvision"}


def test_ood_report_hand_values():
    # in-distribution a = [3, 0, 0], b = [0, 0, 0]; OOD c = [10, 10, 10], d = [1, 0, 0]
    z_in = np.array([[3.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    z_out = np.array([[10.0, 10.0, 10.0], [1.0, 0.0, 0.0]])
    res = M.ood_report(z_in, z_out)
    assert list(res) == ["maxlogit", "entropy", "msp"]
    # MaxLogit: in {3, 0}, out {10, 1}: only 3 > 1 of the 4 (in, out) pairs -> AUROC 1/4.
    # Ranked 10(out) 3(in) 1(out) 0(in): precision 1/2 at each in-sample -> AUPR-In 1/2.
    # TPR 1 needs threshold 0, both OOD above it -> FPR 1.
    assert res["maxlogit"]["auroc"] == pytest.approx(0.25)
    assert res["maxlogit"]["aupr"] == pytest.approx(0.5)
    assert res["maxlogit"]["fpr_at_95_tpr"] == pytest.approx(1.0)
    # MSP: a e^3/(e^3+2) = .909, b 1/3; c 1/3 (ties b), d e/(e+2) = .576:
    # pairs a>c, a>d, b=c (1/2), b<d -> AUROC 2.5/4; AP: R .5 at P 1 (a), R 1 at P 2/4 -> .5 + .25 = .75
    assert res["msp"]["auroc"] == pytest.approx(0.625)
    assert res["msp"]["aupr"] == pytest.approx(0.75)
    assert res["msp"]["fpr_at_95_tpr"] == pytest.approx(1.0)
    # entropy: with two equal other logits entropy falls as MSP rises, so the ranking (and numbers) match MSP
    for key in ("auroc", "aupr", "aupr_error", "fpr_at_95_tpr"):
        assert res["entropy"][key] == pytest.approx(res["msp"][key])
    with pytest.raises(ValueError, match="in_logits have 3 classes but out_logits 2"):
        M.ood_report(z_in, z_out[:, :2])


@pytest.mark.parametrize("binning", ["width", "mass"])
def test_calibration_error_from_confidence_equals_the_probability_form(binning):
    from rmd_ray.core.metrics import calibration_error_from_confidence

    rng = np.random.default_rng(7)
    logits = rng.normal(size=(200, 5)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = rng.integers(0, 5, 200)
    conf, hit = probs.max(axis=1), probs.argmax(axis=1) == labels
    for norm in ("l1", "l2", "max"):
        assert calibration_error_from_confidence(conf, hit, binning=binning, norm=norm) == pytest.approx(
            M.expected_calibration_error(probs, labels, binning=binning, norm=norm), abs=1e-15
        )
    with pytest.raises(ValueError, match="must be 1-D of the same length"):
        calibration_error_from_confidence(conf, hit[:3])
    with pytest.raises(ValueError, match=r"confidence must be finite and in \[0, 1\]"):
        calibration_error_from_confidence(conf + 1, hit)
    with pytest.raises(ValueError, match="correct must be a bool array"):
        calibration_error_from_confidence(conf, hit.astype(int))

"""Classification metrics against values worked out by hand."""

import numpy as np
import pytest

from shindan.stats import bootstrap_auc, calibration, classification_report, youden_cutoff


@pytest.mark.slow
def test_binary_report_known_values():
    y = np.array([0, 0, 1, 1])
    p1 = np.array([0.1, 0.4, 0.35, 0.8])  # P(class 1): one of four pairs mis-ordered
    probs = np.stack([1 - p1, p1], axis=1)
    r = classification_report(y, probs, ["neg", "pos"], n_boot=200)
    assert r["n"] == 4
    assert r["accuracy"] == pytest.approx(0.75)  # 0.35 → predicted neg
    assert r["confusion"] == [[2, 0], [1, 1]]
    assert r["per_class"]["pos"]["precision"] == pytest.approx(1.0)
    assert r["per_class"]["pos"]["recall"] == pytest.approx(0.5)
    assert r["per_class"]["neg"]["recall"] == pytest.approx(1.0)
    # F1(neg) = 2·(2/3·1)/(2/3+1) = 0.8, F1(pos) = 2·(1·0.5)/1.5 = 2/3
    assert r["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert r["per_class"]["pos"]["auc"] == pytest.approx(0.75)
    assert r["per_class"]["neg"]["auc"] == pytest.approx(0.75)
    lo, hi = r["per_class"]["pos"]["auc_ci"]
    assert 0 <= lo <= 0.75 <= hi <= 1


def test_youden_cutoff():
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.6, 0.5, 0.7, 0.9])
    yd = youden_cutoff(y, s)
    # cut 0.7: sens 2/3, spec 1 (J 0.667); cut 0.5: sens 1, spec 2/3 (J 0.667); first max is 0.7
    assert yd["j"] == pytest.approx(2 / 3)
    assert yd["threshold"] in (0.5, 0.7)
    assert yd["sensitivity"] - (1 - yd["specificity"]) == pytest.approx(yd["j"])


def test_perfect_separation_ci_is_one():
    y = np.array([0] * 20 + [1] * 20)
    s = np.r_[np.linspace(0, 0.4, 20), np.linspace(0.6, 1, 20)]
    auc, lo, hi = bootstrap_auc(y, s, n_boot=100)
    assert (auc, lo, hi) == pytest.approx((1.0, 1.0, 1.0))
    assert youden_cutoff(y, s)["sensitivity"] == 1.0


def test_single_class_gives_nan_not_error():
    auc, lo, hi = bootstrap_auc(np.ones(5), np.linspace(0, 1, 5))
    assert np.isnan(auc) and np.isnan(lo)


def test_calibration_ece_and_brier():
    # Two images at confidence 0.9 (one right, one wrong), two at 0.6 (both right).
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
    y = np.array([0, 1, 1, 1])
    cal = calibration(y, probs, n_bins=10)
    # bin (0.8, 0.9]: acc 0.5 vs conf 0.9 → 0.4; bin (0.5, 0.6]: acc 1 vs 0.6 → 0.4; ECE 0.4
    assert cal["ece"] == pytest.approx(0.4)
    # Binary Brier of P(class 1): ((0.1)^2 + (0.9)^2 + (0.4)^2 + (0.4)^2) / 4
    assert cal["brier"] == pytest.approx((0.01 + 0.81 + 0.16 + 0.16) / 4)
    assert sum(b["count"] for b in cal["bins"]) == 4


def test_multiclass_report_shapes():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 10)
    logits = rng.normal(size=(30, 3)) + 3 * np.eye(3)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    r = classification_report(y, probs, ["a", "b", "c"], n_boot=50)
    assert np.array(r["confusion"]).sum() == 30
    assert set(r["per_class"]) == {"a", "b", "c"}
    assert 0.5 < r["macro_auc"] <= 1
    assert r["macro_auc_ci"][0] <= r["macro_auc"] <= r["macro_auc_ci"][1]
    assert r["balanced_accuracy"] == pytest.approx(
        np.mean([r["per_class"][c]["recall"] for c in "abc"])
    )
    with pytest.raises(ValueError):
        classification_report(y, probs[:, :2], ["a", "b", "c"])

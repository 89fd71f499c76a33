"""Selective prediction: AURC by hand, validation-fixed coverage thresholds, CIs, the plot."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from utils.data import datasets
from utils.evaluation import selective

HAM = datasets.HAM10000.classes


def frame_of(y: np.ndarray, probs: np.ndarray, lesions=None) -> pd.DataFrame:
    ids = [f"IMG_{i:05d}" for i in range(len(y))]
    frame = pd.DataFrame({"image_id": ids, "lesion_id": lesions if lesions is not None else ids,
                          "label": [HAM[k] for k in y], "label_index": y, "split": "test"})
    return pd.concat([frame, pd.DataFrame(probs, columns=list(HAM))], axis=1)


def predictions(n: int, seed: int, signal: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(HAM), n)
    logits = rng.normal(size=(n, len(HAM)))
    logits[np.arange(n), y] += signal
    return y, np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def test_aurc_hand_case():
    # confidence order: right, wrong, right, wrong -> risks 0, 1/2, 1/3, 2/4
    correct = np.array([True, False, True, False])
    conf = np.array([0.9, 0.8, 0.7, 0.6])
    assert selective.aurc(correct, conf)[0] == pytest.approx((0 + 1 / 2 + 1 / 3 + 2 / 4) / 4)
    # a perfect ranking (both right first) scores lower
    assert selective.aurc(correct, np.array([0.9, 0.6, 0.8, 0.5]))[0] == pytest.approx(
        (0 + 0 + 1 / 3 + 2 / 4) / 4)
    # equal confidences enter together: risk 2/4 for all four
    assert selective.aurc(correct, np.full(4, 0.5))[0] == pytest.approx(0.5)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(st.integers(min_value=5, max_value=60), st.integers(min_value=0, max_value=10_000))
def test_aurc_is_the_mean_risk_over_coverages_and_weights_one_equal_none(n, seed):
    rng = np.random.default_rng(seed)
    correct = rng.random(n) < 0.6
    conf = rng.random(n)
    order = np.argsort(-conf)
    risks = [1 - correct[order[:k]].mean() for k in range(1, n + 1)]
    assert selective.aurc(correct, conf)[0] == pytest.approx(np.mean(risks))
    assert selective.aurc(correct, conf, np.ones((2, n)))[1] == pytest.approx(np.mean(risks))


def test_threshold_for_coverage_keeps_the_share_of_validation():
    conf = np.linspace(0.1, 1.0, 10)
    assert selective.threshold_for_coverage(conf, 0.8) == pytest.approx(0.3)
    assert (conf >= selective.threshold_for_coverage(conf, 0.8)).mean() == 0.8
    assert selective.threshold_for_coverage(conf, 1.0) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="coverage"):
        selective.threshold_for_coverage(conf, 0.0)


def test_selective_section_fixes_thresholds_on_validation(tmp_path):
    y_val, p_val = predictions(600, seed=1)
    y_test, p_test = predictions(500, seed=2)
    lesions = np.repeat(np.arange(250), 2).astype(str)
    section = selective.selective_section(frame_of(y_test, p_test, lesions),
                                          frame_of(y_val, p_val), n_boot=100, seed=0)
    assert [p["target_coverage"] for p in section["operating_points"]] == [0.8, 0.9]
    for point in section["operating_points"]:
        val_conf = p_val.max(axis=1)
        assert (val_conf >= point["threshold"]).mean() >= point["target_coverage"]
        kept = p_test.max(axis=1) >= point["threshold"]
        assert point["kept"] == kept.sum()
        assert point["coverage"]["value"] == pytest.approx(kept.mean())
        assert point["coverage"]["value"] == pytest.approx(point["target_coverage"], abs=0.06)
        for name in ("coverage", "balanced_accuracy", "melanoma_sensitivity", "selective_risk"):
            stats = point[name]
            assert stats["ci_low"] <= stats["value"] <= stats["ci_high"], name
        assert point["selective_risk"]["value"] == pytest.approx(
            1 - (p_test[kept].argmax(1) == y_test[kept]).mean())
    # abstaining on the least confident images lowers the error rate
    assert section["operating_points"][0]["selective_risk"]["value"] < section[
        "risk_at_full_coverage"]
    assert section["aurc_optimal"] < section["aurc"]["value"] < section["risk_at_full_coverage"]
    table = selective.table(section)
    assert set(table["metric"]) >= {"coverage", "balanced_accuracy", "aurc"}
    assert selective.plot(section, tmp_path / "rc.png") is not None
    assert (tmp_path / "rc.png").stat().st_size > 5_000


def test_without_validation_the_operating_points_are_not_computed():
    y, p = predictions(100, seed=3)
    section = selective.selective_section(frame_of(y, p), None, n_boot=20)
    assert section["operating_points"] == [] and "validation" in section["note"]
    assert len(section["curve"]) == selective.CURVE_POINTS

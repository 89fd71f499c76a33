"""Temperature scaling and expected calibration error."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from utils.data import datasets
from utils.evaluation import calibration

HAM = datasets.HAM10000.classes


def overconfident(n: int, seed: int, sharpen: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from calibrated probabilities, then the probabilities sharpened (T = 1/4)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=1.0, size=(n, len(HAM)))
    calibrated = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(len(HAM), p=p) for p in calibrated])
    sharp = np.exp(sharpen * logits)
    return y, sharp / sharp.sum(axis=1, keepdims=True)


def as_frame(y, probs, split):
    frame = pd.DataFrame({"image_id": [f"{split}{i}" for i in range(len(y))],
                          "lesion_id": [f"{split}{i}" for i in range(len(y))],
                          "label": [HAM[k] for k in y], "label_index": y, "split": split})
    for k, code in enumerate(HAM):
        frame[code] = probs[:, k]
    return frame


def test_ece_hand_case():
    # two rows in the (0.6, 0.667] bin: confidence 0.62 (right) and 0.65 (wrong)
    probs = np.array([[0.62, 0.38], [0.35, 0.65], [0.95, 0.05]])
    y = np.array([0, 0, 0])
    table = calibration.reliability_data(probs, y)
    assert table["count"].sum() == 3 and len(table) == calibration.N_BINS
    expected = (2 * abs(0.5 - 0.635) + 1 * abs(1.0 - 0.95)) / 3
    assert calibration.expected_calibration_error(probs, y) == pytest.approx(expected)


def test_temperature_recovers_the_sharpening_and_lowers_ece():
    y_val, p_val = overconfident(3000, seed=0)
    y_test, p_test = overconfident(3000, seed=1)
    temperature = calibration.fit_temperature(p_val, y_val)
    assert temperature == pytest.approx(4.0, rel=0.15)  # undoes the x4 sharpening
    calibrated = calibration.apply_temperature(p_test, temperature)
    np.testing.assert_allclose(calibrated.sum(axis=1), 1.0)
    np.testing.assert_array_equal(calibrated.argmax(axis=1), p_test.argmax(axis=1))
    before = calibration.expected_calibration_error(p_test, y_test)
    after = calibration.expected_calibration_error(calibrated, y_test)
    assert after < 0.5 * before and after < 0.05


def test_calibrate_predictions_on_frames():
    y_val, p_val = overconfident(800, seed=2)
    y_test, p_test = overconfident(800, seed=3)
    out, summary = calibration.calibrate_predictions(as_frame(y_val, p_val, "val"),
                                                     as_frame(y_test, p_test, "test"))
    assert summary["val_nll_after"] < summary["val_nll_before"]
    assert summary["test_ece_after"] < summary["test_ece_before"]
    assert list(out.columns) == list(as_frame(y_test, p_test, "test").columns)
    assert summary["temperature"] > 1.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="temperature"):
        calibration.apply_temperature(np.array([[0.5, 0.5]]), 0.0)
    with pytest.raises(ValueError, match="empty"):
        calibration.fit_temperature(np.zeros((0, 2)), np.zeros(0, dtype=int))

"""Temperature scaling and calibration error.

Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017) divides
the logits by one scalar T > 0 fitted on the validation split by minimising the negative
log-likelihood; the argmax (hence accuracy) is unchanged. Our models output softmax
probabilities, so the log-probabilities serve as logits (softmax(log p / T) is the same as
softmax(z / T) up to a per-row constant). T is optimised on log T, so it stays positive.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from utils.scoring import metrics, predictions

N_BINS = 15  # equal-width confidence bins of the expected calibration error
EPSILON = 1e-12  # floor of probabilities before taking logs
LOG_T_BOUNDS = (np.log(0.02), np.log(50.0))  # search range of log T


def logits_from_probabilities(probs: np.ndarray) -> np.ndarray:
    """Log-probabilities, used as logits."""
    return np.log(np.clip(np.asarray(probs, dtype=float), EPSILON, 1.0))


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return np.exp(log_softmax(logits_from_probabilities(probs) / temperature, axis=1))


def negative_log_likelihood(probs: np.ndarray, y_true: np.ndarray, temperature: float) -> float:
    """Mean NLL of the true classes after temperature scaling."""
    log_p = log_softmax(logits_from_probabilities(probs) / temperature, axis=1)
    return float(-log_p[np.arange(len(y_true)), np.asarray(y_true, dtype=int)].mean())


def fit_temperature(probs: np.ndarray, y_true: np.ndarray) -> float:
    """The temperature minimising the validation NLL (bounded search over log T)."""
    if len(y_true) == 0:
        raise ValueError("cannot fit a temperature on zero rows; the validation split is empty")
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(probs, y_true, float(np.exp(log_t))),
        bounds=LOG_T_BOUNDS,
        method="bounded",
        options={"xatol": 1e-5},
    )
    return float(np.exp(result.x))


def reliability_data(probs: np.ndarray, y_true: np.ndarray, n_bins: int = N_BINS) -> pd.DataFrame:
    """Per confidence bin: edges, count, mean confidence and accuracy of the top-1 prediction.

    Confidence is the maximum probability; bins are equal-width on [0, 1] (right-closed, the
    first also holds 0). Accuracy uses the argmax, ties counted wrong (as in utils.scoring.metrics).
    """
    probs = np.asarray(probs, dtype=float)
    confidence = probs.max(axis=1)
    correct = metrics.predicted_labels(probs) == np.asarray(y_true, dtype=int)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, weights=confidence, minlength=n_bins) / count
        accuracy = np.bincount(index, weights=correct.astype(float), minlength=n_bins) / count
    return pd.DataFrame({"bin_low": edges[:-1], "bin_high": edges[1:], "count": count,
                         "confidence": mean_conf, "accuracy": accuracy})


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray,
                               n_bins: int = N_BINS) -> float:
    """ECE: sum over bins of (bin share) * |accuracy - confidence|."""
    table = reliability_data(probs, y_true, n_bins)
    filled = table[table["count"] > 0]
    gap = (filled["accuracy"] - filled["confidence"]).abs()
    return float((filled["count"] * gap).sum() / max(int(table["count"].sum()), 1))


def calibrate_predictions(
    val_frame: pd.DataFrame, test_frame: pd.DataFrame
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Fit T on validation predictions, apply it to test predictions.

    Returns the calibrated test frame (same columns) and a summary: temperature, validation NLL
    before/after, test ECE before/after.
    """
    classes = predictions.validate_predictions(val_frame, "validation predictions")
    test_classes = predictions.validate_predictions(test_frame, "test predictions")
    if classes != test_classes:
        raise ValueError(f"validation classes {classes} differ from test classes {test_classes}")
    y_val, p_val, _ = predictions.arrays_from_predictions(val_frame)
    y_test, p_test, _ = predictions.arrays_from_predictions(test_frame)
    temperature = fit_temperature(p_val, y_val)
    calibrated = apply_temperature(p_test, temperature)
    out = test_frame.copy()
    out[list(classes)] = calibrated
    summary = {
        "temperature": temperature,
        "val_nll_before": negative_log_likelihood(p_val, y_val, 1.0),
        "val_nll_after": negative_log_likelihood(p_val, y_val, temperature),
        "test_ece_before": expected_calibration_error(p_test, y_test),
        "test_ece_after": expected_calibration_error(calibrated, y_test),
        "n_bins": N_BINS,
    }
    return out, summary


def apply_to_frame(frame: pd.DataFrame, temperature: float) -> pd.DataFrame:
    """A predictions frame with its probabilities temperature-scaled (same ids and columns)."""
    classes = predictions.validate_predictions(frame)
    _, probs, _ = predictions.arrays_from_predictions(frame)
    out = frame.copy()
    out[list(classes)] = apply_temperature(probs, temperature)
    return out

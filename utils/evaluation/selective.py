"""Selective prediction: how the model does when it may abstain on its least confident images.

Confidence is the maximum class probability (of the temperature-scaled probabilities where
temperature scaling ran). Keeping the images whose confidence is at least a threshold gives a
coverage (the share kept) and a selective risk (the error rate on the kept images; a tied
maximum counts as an error, as everywhere in utils.scoring.metrics).

- The risk-coverage curve and its area (AURC, Geifman & El-Yaniv 2017: the mean selective risk
  over the coverages 1/n, 2/n, ..., 1 of the confidence ranking) describe every threshold at once;
  `aurc_optimal` is the AURC of a perfect ranking with the same errors (r + (1 - r) ln(1 - r)).
- Operating points at 80 % and 90 % coverage are FIXED ON VALIDATION: the threshold keeps that
  share of the validation images, then the same threshold is applied to the test images and the
  achieved test coverage is reported beside balanced accuracy and melanoma sensitivity on the
  kept images (the test split chooses nothing).
Every value has a lesion-bootstrap 95 % CI (the same resampling as utils.scoring.metrics).
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import pandas as pd

from utils.scoring import metrics, predictions

COVERAGES: tuple[float, ...] = (0.8, 0.9)  # operating points, fixed on validation
CURVE_POINTS = 20  # coverages 0.05, 0.10, ..., 1.00 in risk_coverage.csv


def confidence(probs: np.ndarray) -> np.ndarray:
    """The maximum class probability of each row."""
    return np.asarray(probs, dtype=float).max(axis=1)


def correct(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """True where the argmax is the true class (a tied maximum is wrong)."""
    return metrics.predicted_labels(probs) == np.asarray(y_true, dtype=int)


def aurc(is_correct: np.ndarray, conf: np.ndarray,
         weights: np.ndarray | None = None) -> np.ndarray:
    """Area under the risk-coverage curve (B,) for each weight row: the weighted mean, over the
    images in decreasing confidence, of the selective risk once that image is kept (images of
    equal confidence enter together)."""
    errors = ~np.asarray(is_correct, dtype=bool)
    conf = np.asarray(conf, dtype=float)
    w = weights if weights is not None else np.ones((1, len(conf)))
    w = w[None, :] if w.ndim == 1 else w
    order = np.argsort(-conf, kind="stable")
    sorted_conf = conf[order]
    starts = np.flatnonzero(np.r_[True, sorted_conf[1:] != sorted_conf[:-1]])
    group_w = np.add.reduceat(w[:, order], starts, axis=1)
    group_err = np.add.reduceat(w[:, order] * errors[order], starts, axis=1)
    kept = np.cumsum(group_w, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        risk = np.where(kept > 0, np.cumsum(group_err, axis=1) / np.where(kept > 0, kept, 1), 0.0)
        return (group_w * risk).sum(axis=1) / group_w.sum(axis=1)


def optimal_aurc(error_rate: float) -> float:
    """AURC of a perfect confidence ranking with this overall error rate (continuous form)."""
    r = float(error_rate)
    return r + (1.0 - r) * np.log(1.0 - r) if r < 1.0 else 1.0


def threshold_for_coverage(conf_val: np.ndarray, coverage: float) -> float:
    """The highest confidence threshold keeping at least `coverage` of the validation rows."""
    if not 0.0 < coverage <= 1.0:
        raise ValueError(f"coverage must lie in (0, 1], got {coverage}")
    ranked = np.sort(np.asarray(conf_val, dtype=float))[::-1]
    if ranked.size == 0:
        raise ValueError("cannot fix a coverage threshold on zero validation rows")
    return float(ranked[int(np.ceil(coverage * ranked.size)) - 1])


def curve(y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str],
          points: int = CURVE_POINTS) -> pd.DataFrame:
    """The test risk-coverage curve at `points` coverages (descriptive: each keeps the most
    confident share of the test images): coverage, kept images, selective risk, balanced
    accuracy of the kept images."""
    order = np.argsort(-confidence(probs), kind="stable")
    is_correct = correct(y_true, probs)
    rows = []
    for coverage in np.linspace(1.0 / points, 1.0, points):
        keep = order[: max(1, int(round(coverage * len(order))))]
        matrices = metrics.confusion_matrices(y_true[keep], metrics.predicted_labels(probs[keep]),
                                              len(classes))
        rows.append({"coverage": float(coverage), "kept": int(len(keep)),
                     "selective_risk": float(1.0 - is_correct[keep].mean()),
                     "balanced_accuracy": float(
                         metrics.rates_from_confusion(matrices)["balanced_accuracy"][0])})
    return pd.DataFrame(rows)


def _at_threshold(y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str],
                  keep: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Coverage, balanced accuracy and melanoma sensitivity of the kept rows, per weight row."""
    kept_weights = weights * keep
    values = metrics.metric_replicates(y_true, probs, classes, kept_weights)
    out = {"coverage": kept_weights.sum(axis=1) / weights.sum(axis=1),
           "balanced_accuracy": values["balanced_accuracy"],
           "selective_risk": 1.0 - values["accuracy"]}
    mel = metrics.melanoma_class(classes)
    if mel is not None:
        out["melanoma_sensitivity"] = values[f"sensitivity/{mel}"]
    return out


def selective_section(frame: pd.DataFrame, val_frame: pd.DataFrame | None,
                      n_boot: int = metrics.DEFAULT_N_BOOT, seed: int = 0,
                      coverages: Sequence[float] = COVERAGES,
                      confidence_source: str = "plain") -> dict[str, Any]:
    """The selective-prediction section of metrics.json for test predictions `frame` (and the
    validation predictions of the same variant, which fix the coverage thresholds)."""
    classes = predictions.validate_predictions(frame)
    y_true, probs, _ = predictions.arrays_from_predictions(frame)
    groups = metrics.bootstrap_groups(frame)
    conf, is_correct = confidence(probs), correct(y_true, probs)
    weights = (metrics.bootstrap_weights(groups, len(y_true), n_boot, seed) if n_boot > 0
               else np.zeros((0, len(y_true))))
    area = aurc(is_correct, conf)[0]
    error_rate = float(1.0 - is_correct.mean())
    section: dict[str, Any] = {
        "confidence": f"maximum probability ({confidence_source})",
        "n_images": int(len(y_true)),
        "aurc": metrics.interval(area, aurc(is_correct, conf, weights) if n_boot else None),
        "aurc_optimal": optimal_aurc(error_rate),
        "risk_at_full_coverage": error_rate,
        "operating_points": [],
        "curve": curve(y_true, probs, classes).to_dict(orient="records"),
    }
    if val_frame is None or len(val_frame) == 0:
        section["note"] = ("no validation predictions: the 80 % / 90 % coverage thresholds "
                           "are fixed on validation and were not computed")
        return section
    _, p_val, _ = predictions.arrays_from_predictions(val_frame)
    for target in coverages:
        threshold = threshold_for_coverage(confidence(p_val), target)
        keep = conf >= threshold
        point = _at_threshold(y_true, probs, classes, keep, np.ones((1, len(y_true))))
        reps = _at_threshold(y_true, probs, classes, keep, weights) if n_boot else {}
        section["operating_points"].append({
            "target_coverage": float(target), "threshold": threshold, "kept": int(keep.sum()),
            **{name: metrics.interval(value[0], reps.get(name)) for name, value in point.items()},
        })
    return section


def table(section: dict[str, Any]) -> pd.DataFrame:
    """The operating points as rows (target coverage, threshold, kept, value with CI per metric)."""
    rows = []
    for point in section["operating_points"]:
        for name, stats in point.items():
            if isinstance(stats, dict):
                rows.append({"target_coverage": point["target_coverage"],
                             "threshold": point["threshold"], "kept": point["kept"],
                             "metric": name, **stats})
    rows.append({"target_coverage": 1.0, "metric": "aurc", **section["aurc"]})
    return pd.DataFrame(rows, columns=["target_coverage", "threshold", "kept", "metric", "value",
                                       "ci_low", "ci_high"])


def plot(section: dict[str, Any], path: str | os.PathLike | None = None):
    """Selective risk and balanced accuracy against coverage; the validation-fixed operating
    points marked at their achieved test coverage."""
    from utils.evaluation.plots import finish_figure, new_figure

    frame = pd.DataFrame(section["curve"])
    figure, (left, right) = new_figure(10.0, 4.2, ncols=2)
    risk = section["risk_at_full_coverage"]
    grid = np.linspace(1e-3, 1.0, 200)
    left.plot(frame["coverage"], frame["selective_risk"], marker=".", label="model")
    left.plot(grid, np.clip((grid - (1 - risk)) / grid, 0, None), linestyle="--", color="grey",
              label="perfect ranking")
    left.axhline(risk, linestyle=":", color="black", label="no abstention")
    right.plot(frame["coverage"], frame["balanced_accuracy"], marker=".", label="model")
    for point in section["operating_points"]:
        for ax, key in ((left, "selective_risk"), (right, "balanced_accuracy")):
            ax.plot(point["coverage"]["value"], point[key]["value"], marker="o", markersize=8,
                    linestyle="none", color="tab:red")
    left.set(xlabel="coverage (share of test images kept)", ylabel="selective risk (error rate)",
             xlim=(0, 1.02), ylim=(0, max(0.05, frame["selective_risk"].max() * 1.1)),
             title=f"Risk-coverage (AURC {section['aurc']['value']:.3f})")
    right.set(xlabel="coverage", ylabel="balanced accuracy of kept images", xlim=(0, 1.02),
              ylim=(0, 1.02), title="Balanced accuracy when abstaining")
    left.legend(loc="upper left", fontsize=8)
    if section["operating_points"]:
        right.text(0.02, 0.04, "red: thresholds fixed on validation (80 / 90 % coverage)",
                   transform=right.transAxes, fontsize=8, color="tab:red")
    figure.tight_layout()
    return finish_figure(figure, path)

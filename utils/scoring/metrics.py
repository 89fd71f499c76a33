"""Classification metrics with bootstrap confidence intervals, from a predictions CSV.

Every metric is computed from per-row *weights*: the point estimate uses weight 1 for every row,
and a bootstrap replicate uses the number of times the row was drawn. Weights of shape (B, n)
compute B replicates at once with matrix products, so 1,000 replicates of 1,500 rows take about
a second. Where `lesion_id` is known the bootstrap resamples lesions (cluster bootstrap: all the
images of a drawn lesion come together), since images of one lesion are not independent.

Conventions (chosen to match the official `isic-challenge-scoring` 5.6.0 package):
- the predicted class is the argmax of the probabilities; a row whose maximum is tied between two
  or more classes is predicted "undecided" and counts as wrong for every class (true-positive
  nowhere, false-positive nowhere);
- balanced accuracy is the mean per-class recall over the classes present in the truth;
- one-vs-rest ROC AUC per class (ties in scores count one half), macro AUC = mean over the classes
  that have both positives and negatives;
- macro-F1 is the mean F1 over the classes present in the truth (a class absent from a bootstrap
  replicate is skipped, not scored 0);
- per-class Matthews correlation (one-vs-rest, from the same argmax decisions as precision and
  recall; NaN where a margin of the 2x2 table is empty).

Melanoma operating point (`OperatingPoint`): the test split chooses nothing, so the rule
"melanoma probability >= t" is fixed on the VALIDATION predictions: t is the lowest threshold whose
validation specificity reaches the target (default 0.80, `DEFAULT_SPECIFICITY`), which maximises
validation sensitivity under that constraint. The rule is then applied unchanged to the test
rows, and both its test sensitivity and its test specificity are reported (the test specificity
is whatever the fixed rule achieves, not the target), named after the target, e.g.
`melanoma_sensitivity_at_val_spec80` / `melanoma_specificity_at_val_spec80`.

Equal to `isic-challenge-scoring` (tested): balanced accuracy, per-class AUC and macro AUC. The
rest (accuracy, macro-F1, per-class precision / sensitivity / specificity / F1 / MCC from the
argmax decision, the melanoma operating point) are this repository's own; the official scorer's
per-class sensitivity and specificity threshold each probability at 0.5 instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from utils.data import datasets
from utils.errors import DataError
from utils.scoring.predictions import arrays_from_predictions, validate_predictions

DEFAULT_SPECIFICITY = 0.80  # validation specificity that fixes the melanoma operating point
DEFAULT_N_BOOT = 1000
CI_LEVEL = 0.95
UNDECIDED = -1  # predicted index of a row whose maximum probability is tied


# --------------------------------------------------------------------------- classes
def dataset_of_classes(classes: Sequence[str]) -> datasets.DatasetInfo | None:
    """The dataset whose class order is exactly `classes` (HAM10000 before its derivatives)."""
    for info in datasets.DATASETS.values():
        if tuple(info.classes) == tuple(classes):
            return info
    return None


def melanoma_class(classes: Sequence[str]) -> str | None:
    """The melanoma code among `classes` ("mel" for HAM10000, "MEL" for ISIC 2019), or None."""
    for info in datasets.DATASETS.values():
        for code in classes:
            if info.class_names.get(code) == datasets.HAM10000.class_names["mel"]:
                return code
    return None


# --------------------------------------------------------------------------- pure metrics
def predicted_labels(probs: np.ndarray) -> np.ndarray:
    """Argmax per row; UNDECIDED (-1) where the maximum is tied (the official scorer's rule)."""
    probs = np.asarray(probs, dtype=float)
    top = probs.argmax(axis=1)
    tied = (probs == probs.max(axis=1, keepdims=True)).sum(axis=1) > 1
    return np.where(tied, UNDECIDED, top)


def _as_weights(weights: np.ndarray | None, n: int) -> np.ndarray:
    """Weights as a (B, n) float array (B = 1 for the point estimate)."""
    if weights is None:
        return np.ones((1, n))
    weights = np.asarray(weights, dtype=float)
    return weights[None, :] if weights.ndim == 1 else weights


def confusion_matrices(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int, weights: np.ndarray | None = None
) -> np.ndarray:
    """Weighted confusion matrices (B, K, K+1): rows true, columns predicted, last = undecided."""
    y_true = np.asarray(y_true, dtype=int)
    y_pred = np.asarray(y_pred, dtype=int)
    columns = np.where(y_pred == UNDECIDED, num_classes, y_pred)
    codes = y_true * (num_classes + 1) + columns
    onehot = np.zeros((len(codes), num_classes * (num_classes + 1)))
    onehot[np.arange(len(codes)), codes] = 1.0
    counts = _as_weights(weights, len(codes)) @ onehot
    return counts.reshape(-1, num_classes, num_classes + 1)


def confusion_matrix(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Unweighted K x K confusion matrix (rows true, columns predicted; ties count nowhere)."""
    num_classes = np.asarray(probs).shape[1]
    matrix = confusion_matrices(y_true, predicted_labels(probs), num_classes)[0]
    return matrix[:, :num_classes].astype(int)


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        positive = denominator > 0
        return np.where(positive, numerator / np.where(positive, denominator, 1), np.nan)


def rates_from_confusion(matrices: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, balanced accuracy, macro-F1 (B,) and per-class rates (B, K) from (B, K, K+1):
    precision, sensitivity, specificity, f1 and mcc (one-vs-rest Matthews correlation)."""
    num_classes = matrices.shape[1]
    square = matrices[:, :, :num_classes]
    tp = np.diagonal(square, axis1=1, axis2=2)
    support = matrices.sum(axis=2)  # true count per class (undecided rows included)
    predicted = square.sum(axis=1)  # predicted count per class
    total = support.sum(axis=1)
    fp = predicted - tp
    fn = support - tp
    tn = total[:, None] - tp - fp - fn
    recall = _safe_divide(tp, support)
    precision = _safe_divide(tp, predicted)
    f1 = _safe_divide(2 * tp, 2 * tp + fp + fn)
    present = support > 0
    with np.errstate(invalid="ignore"):
        balanced = np.nanmean(np.where(present, recall, np.nan), axis=1)
        macro_f1 = np.nanmean(np.where(present, f1, np.nan), axis=1)
    mcc = _safe_divide(tp * tn - fp * fn,
                       np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
    return {
        "accuracy": _safe_divide(tp.sum(axis=1), total),
        "balanced_accuracy": balanced,
        "macro_f1": macro_f1,
        "precision": precision,
        "sensitivity": recall,
        "specificity": _safe_divide(tn, tn + fp),
        "f1": f1,
        "mcc": mcc,
    }


def _score_groups(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort order of the scores and the start index of each run of equal scores."""
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    return order, starts


def _grouped_weights(
    positive: np.ndarray, scores: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative weight per distinct score, ascending: two (B, U) arrays."""
    order, starts = _score_groups(scores)
    w = weights[:, order]
    pos = positive[order].astype(float)
    pos_w = np.add.reduceat(w * pos, starts, axis=1)
    neg_w = np.add.reduceat(w * (1.0 - pos), starts, axis=1)
    return pos_w, neg_w


def binary_auc(
    positive: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """Weighted ROC AUC (B,), ties count one half; NaN where a replicate lacks a class."""
    positive = np.asarray(positive, dtype=bool)
    scores = np.asarray(scores, dtype=float)
    pos_w, neg_w = _grouped_weights(positive, scores, _as_weights(weights, len(scores)))
    neg_below = np.cumsum(neg_w, axis=1) - neg_w
    pairs = (pos_w * (neg_below + 0.5 * neg_w)).sum(axis=1)
    return _safe_divide(pairs, pos_w.sum(axis=1) * neg_w.sum(axis=1))


def _rule_counts(positive: np.ndarray, scores: np.ndarray,
                 weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For the rules "score >= u" at each distinct score u (ascending) and one above the maximum:
    the positive and negative weight at or above u (B, U+1), and the totals (B, 1)."""
    pos_w, neg_w = _grouped_weights(positive, scores, weights)
    zeros = np.zeros((pos_w.shape[0], 1))
    pos_above = np.concatenate([np.cumsum(pos_w[:, ::-1], axis=1)[:, ::-1], zeros], axis=1)
    neg_above = np.concatenate([np.cumsum(neg_w[:, ::-1], axis=1)[:, ::-1], zeros], axis=1)
    return (pos_above, neg_above, pos_w.sum(axis=1, keepdims=True),
            neg_w.sum(axis=1, keepdims=True))


def threshold_at_specificity(positive: np.ndarray, scores: np.ndarray,
                             specificity: float = DEFAULT_SPECIFICITY) -> float:
    """The lowest threshold t whose rule `score >= t` has specificity >= `specificity` on these
    rows (so the highest sensitivity under that constraint). t is one of the scores, or just
    above the maximum when only "nothing positive" reaches the target."""
    if not 0.0 <= specificity <= 1.0:
        raise ValueError(f"specificity must lie in [0, 1], got {specificity}")
    positive = np.asarray(positive, dtype=bool)
    scores = np.asarray(scores, dtype=float)
    if not (~positive).any():
        raise ValueError("cannot fix a specificity without negative rows")
    _, neg_above, _, neg_total = _rule_counts(positive, scores, _as_weights(None, len(scores)))
    spec = 1.0 - neg_above[0] / neg_total[0, 0]
    first = int(np.flatnonzero(spec >= specificity - 1e-12)[0])
    distinct = np.unique(scores)
    return float(distinct[first]) if first < len(distinct) else float(
        np.nextafter(distinct[-1], np.inf))


def rule_rates(positive: np.ndarray, flagged: np.ndarray,
               weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sensitivity and specificity (B,) of a fixed yes/no rule (`flagged`) per weight row."""
    positive = np.asarray(positive, dtype=bool)
    flagged = np.asarray(flagged, dtype=bool)
    weights = _as_weights(weights, len(positive))
    sens = _safe_divide(weights @ (positive & flagged), weights @ positive)
    spec = _safe_divide(weights @ (~positive & ~flagged), weights @ ~positive)
    return sens, spec


def fpr_at_tpr(positive: np.ndarray, scores: np.ndarray, tpr: float = 0.95,
               weights: np.ndarray | None = None) -> np.ndarray:
    """Lowest false-positive rate (B,) of a rule `score >= t` whose true-positive rate is at least
    `tpr` (out-of-distribution detection's "FPR at 95 % TPR"); NaN where a class is absent."""
    if not 0.0 <= tpr <= 1.0:
        raise ValueError(f"tpr must lie in [0, 1], got {tpr}")
    positive = np.asarray(positive, dtype=bool)
    scores = np.asarray(scores, dtype=float)
    pos_above, neg_above, pos_total, neg_total = _rule_counts(
        positive, scores, _as_weights(weights, len(scores)))
    rate_tp = _safe_divide(pos_above, pos_total)
    rate_fp = _safe_divide(neg_above, neg_total)
    allowed = np.where(rate_tp >= tpr - 1e-12, rate_fp, np.inf)
    best = allowed.min(axis=1)
    defined = (pos_total[:, 0] > 0) & (neg_total[:, 0] > 0)
    return np.where(defined, best, np.nan)


@dataclass(frozen=True)
class OperatingPoint:
    """A yes/no rule on one class's probability, fixed on the validation predictions."""

    code: str  # the class whose probability is thresholded (melanoma)
    threshold: float  # the rule: probability of `code` >= threshold
    specificity: float  # the validation specificity the threshold was chosen to reach

    @property
    def sensitivity_name(self) -> str:
        return operating_point_name(self.specificity, "sensitivity")

    @property
    def specificity_name(self) -> str:
        return operating_point_name(self.specificity, "specificity")


def operating_point_name(specificity: float = DEFAULT_SPECIFICITY,
                         kind: str = "sensitivity") -> str:
    """`melanoma_<kind>_at_val_spec80` for a target validation specificity of 0.80."""
    percent = f"{specificity * 100:.6g}".replace(".", "p")
    return f"melanoma_{kind}_at_val_spec{percent}"


def fit_operating_point(y_val: np.ndarray, probs_val: np.ndarray, classes: Sequence[str],
                        specificity: float = DEFAULT_SPECIFICITY) -> OperatingPoint | None:
    """The melanoma rule fixed on validation predictions (None without a melanoma class, or
    when the validation rows hold no non-melanoma image)."""
    code = melanoma_class(classes)
    if code is None:
        return None
    k = list(classes).index(code)
    positive = np.asarray(y_val, dtype=int) == k
    if positive.all():
        return None
    threshold = threshold_at_specificity(positive, np.asarray(probs_val)[:, k], specificity)
    return OperatingPoint(code, threshold, float(specificity))


def metric_replicates(
    y_true: np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
    weights: np.ndarray | None = None,
    operating_point: OperatingPoint | None = None,
) -> dict[str, np.ndarray]:
    """Every scalar metric for each row of `weights` (B, n): {name: (B,) array}.

    Names: accuracy, balanced_accuracy, macro_f1, macro_auc; with an `operating_point` (fixed on
    validation) its sensitivity and specificity on these rows, e.g.
    melanoma_sensitivity_at_val_spec80; and per class `<metric>/<class>` for precision,
    sensitivity, specificity, f1, mcc, auc.
    """
    y_true = np.asarray(y_true, dtype=int)
    probs = np.asarray(probs, dtype=float)
    if probs.ndim != 2 or probs.shape[1] != len(classes) or len(y_true) != len(probs):
        raise ValueError(
            f"probabilities of shape {probs.shape} do not match {len(y_true)} labels and "
            f"{len(classes)} classes"
        )
    weights = _as_weights(weights, len(y_true))
    matrices = confusion_matrices(y_true, predicted_labels(probs), len(classes), weights)
    rates = rates_from_confusion(matrices)
    aucs = np.stack([binary_auc(y_true == k, probs[:, k], weights) for k in range(len(classes))], 1)
    with np.errstate(invalid="ignore"):
        defined = ~np.isnan(aucs).all(axis=1)
        macro_auc = np.full(len(aucs), np.nan)
        macro_auc[defined] = np.nanmean(aucs[defined], axis=1)
    out = {name: rates[name] for name in ("accuracy", "balanced_accuracy", "macro_f1")}
    out["macro_auc"] = macro_auc
    if operating_point is not None:
        k = list(classes).index(operating_point.code)
        sens, spec = rule_rates(y_true == k, probs[:, k] >= operating_point.threshold, weights)
        out[operating_point.sensitivity_name] = sens
        out[operating_point.specificity_name] = spec
    per_class = {**{m: rates[m] for m in ("precision", "sensitivity", "specificity", "f1", "mcc")},
                 "auc": aucs}
    for metric, values in per_class.items():
        for k, code in enumerate(classes):
            out[f"{metric}/{code}"] = values[:, k]
    return out


# --------------------------------------------------------------------------- bootstrap
def bootstrap_weights(
    groups: np.ndarray | None, n: int, n_boot: int = DEFAULT_N_BOOT, seed: int = 0
) -> np.ndarray:
    """(n_boot, n) resampling counts. With `groups`, whole groups (lesions) are drawn with
    replacement and every row of a drawn group gets its group's count; otherwise rows are drawn."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    if groups is None:
        return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)
    _, group_index = np.unique(np.asarray(groups), return_inverse=True)
    n_groups = int(group_index.max()) + 1
    counts = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_boot)
    return counts[:, group_index].astype(float)


def percentile_interval(values: np.ndarray, level: float = CI_LEVEL) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates (NaN replicates ignored)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return float(low), float(high)


def interval(value: float, replicates: np.ndarray | None) -> dict[str, float | None]:
    """{"value", "ci_low", "ci_high"} of a point estimate and its bootstrap replicates (JSON-able;
    None for NaN, and for the interval without replicates)."""
    if replicates is None or np.asarray(replicates).size == 0:
        low, high = float("nan"), float("nan")
    else:
        low, high = percentile_interval(np.asarray(replicates, dtype=float))
    return {"value": _clean(value), "ci_low": _clean(low), "ci_high": _clean(high)}


def evaluate_arrays(
    y_true: np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
    groups: np.ndarray | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    specificity: float = DEFAULT_SPECIFICITY,
    chunk: int = 250,
    operating_point: OperatingPoint | None = None,
) -> dict[str, Any]:
    """Point estimates, 95 % percentile bootstrap CIs and the confusion matrix (JSON-able).
    `operating_point` (fixed on validation) adds its sensitivity and specificity on these rows."""
    point = metric_replicates(y_true, probs, classes, None, operating_point)
    replicates: dict[str, list[np.ndarray]] = {name: [] for name in point}
    weights = bootstrap_weights(groups, len(y_true), n_boot, seed) if n_boot > 0 else None
    for start in range(0, n_boot, chunk):
        batch = metric_replicates(y_true, probs, classes, weights[start:start + chunk],
                                  operating_point)
        for name, values in batch.items():
            replicates[name].append(values)
    scalars = {name: interval(value[0], np.concatenate(replicates[name]) if replicates[name]
                              else None) for name, value in point.items()}
    n_groups = len(np.unique(groups)) if groups is not None else len(y_true)
    return {
        "classes": list(classes),
        "n_images": int(len(y_true)),
        "n_groups": int(n_groups),
        "bootstrap": {"n_boot": int(n_boot), "seed": int(seed), "level": CI_LEVEL,
                      "unit": "lesion" if groups is not None else "image"},
        "specificity_target": float(specificity),
        "operating_point": None if operating_point is None else {
            "class": operating_point.code, "threshold": operating_point.threshold,
            "target_specificity": operating_point.specificity, "fitted_on": "validation",
            "sensitivity_name": operating_point.sensitivity_name,
            "specificity_name": operating_point.specificity_name},
        "support": {code: int((np.asarray(y_true) == k).sum()) for k, code in enumerate(classes)},
        "n_undecided": int((predicted_labels(probs) == UNDECIDED).sum()),
        "metrics": scalars,
        "confusion_matrix": confusion_matrix(y_true, probs).tolist(),
    }


def bootstrap_groups(frame: pd.DataFrame) -> np.ndarray | None:
    """The lesion of each row of a predictions frame, or None (resample images) where no row's
    lesion_id differs from its image_id."""
    _, _, lesions = arrays_from_predictions(frame)
    has_lesions = bool((lesions != frame["image_id"].astype(str).to_numpy()).any())
    return lesions if has_lesions else None


def validation_operating_point(val_frame: pd.DataFrame | None, classes: Sequence[str],
                               specificity: float = DEFAULT_SPECIFICITY
                               ) -> tuple[OperatingPoint | None, dict[str, Any]]:
    """The melanoma rule fixed on a validation predictions frame, and what it scores there
    (None and {} without validation predictions or a melanoma class)."""
    if val_frame is None or len(val_frame) == 0:
        return None, {}
    val_classes = validate_predictions(val_frame, "validation predictions")
    if tuple(val_classes) != tuple(classes):
        raise DataError(f"validation predictions have classes {', '.join(val_classes)}; the "
                        f"evaluated predictions have {', '.join(classes)}")
    y_val, p_val, _ = arrays_from_predictions(val_frame)
    point = fit_operating_point(y_val, p_val, classes, specificity)
    if point is None:
        return None, {}
    k = list(classes).index(point.code)
    sens, spec = rule_rates(y_val == k, p_val[:, k] >= point.threshold)
    return point, {"val_images": int(len(y_val)), "val_sensitivity": _clean(sens[0]),
                   "val_specificity": _clean(spec[0])}


def evaluate_predictions(
    frame: pd.DataFrame,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    specificity: float = DEFAULT_SPECIFICITY,
    exclude: Sequence[str] = (),
    val_frame: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """`evaluate_arrays` on a predictions frame; lesions are resampled where lesion_id differs
    from image_id for some row (images otherwise). Rows whose image_id is in `exclude` are
    dropped. With `val_frame` (the validation predictions of the same model) the melanoma
    operating point is fixed there and applied to `frame`."""
    frame = frame[~frame["image_id"].isin(exclude)]
    classes = validate_predictions(frame)
    y_true, probs, _ = arrays_from_predictions(frame)
    point, on_val = validation_operating_point(val_frame, classes, specificity)
    result = evaluate_arrays(y_true, probs, classes, bootstrap_groups(frame), n_boot, seed,
                             specificity, operating_point=point)
    if result["operating_point"] is not None:
        result["operating_point"].update(on_val)
    result["excluded_images"] = list(exclude)
    return result


def metrics_table(result: dict[str, Any]) -> pd.DataFrame:
    """metrics.csv: one row per scalar metric (metric, class, value, ci_low, ci_high)."""
    rows = []
    for name, stats in result["metrics"].items():
        metric, _, code = name.partition("/")
        rows.append({"metric": metric, "class": code, **stats})
    return pd.DataFrame(rows, columns=["metric", "class", "value", "ci_low", "ci_high"])


def _clean(value: float) -> float | None:
    """A float for JSON (None for NaN)."""
    value = float(value)
    return None if np.isnan(value) else value

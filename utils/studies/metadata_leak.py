"""Does a non-image metadata field alone predict the label? A leakage check of the dataset.

HAM10000's `dx_type` (how the diagnosis was confirmed: histopathology, follow-up, expert
consensus, confocal microscopy) is not an image property, yet it depends on the class (nevi are
confirmed by follow-up, melanomas by histopathology). A model that could read it would score above
chance without looking at the lesion. Here the classifier is the class distribution per field
value on the training split of a lesion-grouped split (add-one smoothed), scored on its test split
with the repository's metrics (balanced accuracy, lesion-bootstrap CI) against chance (1 / K).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from utils.data import datasets
from utils.scoring import metrics


def field_predictions(manifest: pd.DataFrame, field: str) -> tuple[np.ndarray, np.ndarray]:
    """(test labels as class indices, probabilities from the field's value) of a split manifest."""
    classes = datasets.class_order(manifest["label"])
    train = manifest[manifest["split"] == "train"]
    test = manifest[manifest["split"] == "test"]
    counts = pd.crosstab(train[field].fillna("missing"), train["label"]).reindex(
        columns=classes, fill_value=0) + 1.0
    distribution = counts.div(counts.sum(axis=1), axis=0)
    prior = np.full(len(classes), 1.0 / len(classes))
    values = test[field].fillna("missing")
    probs = np.stack([distribution.loc[v].to_numpy() if v in distribution.index else prior
                      for v in values])
    y_true = test["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    return y_true, probs


def metadata_leak(manifest: pd.DataFrame, field: str = "dx_type", n_boot: int = 1000,
                  seed: int = 0) -> dict[str, Any] | None:
    """Balanced accuracy of predicting the label from `field` alone (None without the field)."""
    if field not in manifest or manifest[field].isna().all():
        return None
    y_true, probs = field_predictions(manifest, field)
    test = manifest[manifest["split"] == "test"]
    classes = datasets.class_order(manifest["label"])
    result = metrics.evaluate_arrays(y_true, probs, classes, test["lesion_id"].to_numpy(),
                                     n_boot=n_boot, seed=seed)
    return {"field": field, "values": sorted(manifest[field].dropna().unique().tolist()),
            "chance": 1.0 / len(classes), "n_test": int(len(test)),
            "balanced_accuracy": result["metrics"]["balanced_accuracy"],
            "accuracy": result["metrics"]["accuracy"]}

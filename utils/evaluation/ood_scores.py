"""Scores for lesion types a model never saw (out-of-distribution detection), and how well they
separate unknown from known images.

Every score is oriented so that HIGHER means MORE LIKELY UNKNOWN:
- `max_softmax`: minus the maximum softmax probability (Hendrycks & Gimpel, ICLR 2017);
- `energy`: minus logsumexp of the logits, i.e. the free energy at temperature 1 (Liu et al.,
  NeurIPS 2020);
- `mahalanobis`: the smallest squared Mahalanobis distance of the penultimate-layer features to
  a class mean, with class means and one shared covariance fitted on the TRAINING images' features
  (Lee et al., NeurIPS 2018, without input perturbation); the covariance is Ledoit-Wolf shrunk,
  since the feature dimension (1,280 for MobileNetV2) can exceed the training images.
Logits are read from the classifier's penultimate features and its Dense head (no Lambda layer,
no second model file). `keep` restricts the softmax and energy to the classes the model was
trained on (a held-out class's output unit never saw a positive example).

Separation is scored as AUROC (unknown = positive) and the false-positive rate at 95 % true-
positive rate (the share of known test images flagged when 95 % of the unknown ones are), with
lesion-bootstrap 95 % CIs (known and unknown lesions resampled together).
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy.special import logsumexp, softmax

from utils.scoring import metrics

SCORES: tuple[str, ...] = ("max_softmax", "energy", "mahalanobis")
TPR_TARGET = 0.95


def features_and_logits(model, dataset) -> tuple[np.ndarray, np.ndarray]:
    """Penultimate-layer features (n, d) and logits (n, K) of a build_classifier model over a
    tf.data dataset of image batches (labels, if any, are ignored)."""
    from utils.training.models import feature_model

    extractor, head = feature_model(model)
    features = np.asarray(extractor.predict(dataset, verbose=0), dtype=np.float64)
    kernel = np.asarray(head.kernel.numpy(), dtype=np.float64)
    bias = np.asarray(head.bias.numpy(), dtype=np.float64) if head.use_bias else 0.0
    return features, features @ kernel + bias


def max_softmax(logits: np.ndarray, keep: Sequence[int] | None = None) -> np.ndarray:
    """Minus the largest softmax probability over the `keep` classes."""
    logits = np.asarray(logits, dtype=float)
    kept = logits if keep is None else logits[:, list(keep)]
    return -softmax(kept, axis=1).max(axis=1)


def energy(logits: np.ndarray, keep: Sequence[int] | None = None) -> np.ndarray:
    """Free energy -logsumexp(logits) over the `keep` classes (temperature 1)."""
    logits = np.asarray(logits, dtype=float)
    kept = logits if keep is None else logits[:, list(keep)]
    return -logsumexp(kept, axis=1)


class Mahalanobis:
    """Class means and a shared (Ledoit-Wolf) precision fitted on training features."""

    def __init__(self, features: np.ndarray, labels: np.ndarray):
        from sklearn.covariance import LedoitWolf

        features = np.asarray(features, dtype=float)
        labels = np.asarray(labels)
        self.classes = np.unique(labels)
        if len(features) < 2 or len(self.classes) < 1:
            raise ValueError("Mahalanobis needs at least two training features")
        self.means = np.stack([features[labels == c].mean(axis=0) for c in self.classes])
        centred = features - self.means[np.searchsorted(self.classes, labels)]
        self.precision = LedoitWolf().fit(centred).precision_

    def score(self, features: np.ndarray) -> np.ndarray:
        """The smallest squared distance to a class mean, per row."""
        features = np.asarray(features, dtype=float)
        distances = []
        for mean in self.means:
            diff = features - mean
            distances.append(((diff @ self.precision) * diff).sum(axis=1))
        return np.min(np.stack(distances, axis=1), axis=1)


def detection_metrics(scores: dict[str, np.ndarray], is_unknown: np.ndarray,
                      groups: np.ndarray | None, n_boot: int = metrics.DEFAULT_N_BOOT,
                      seed: int = 0, tpr: float = TPR_TARGET) -> dict[str, dict[str, Any]]:
    """{score: {"auroc": value with CI, "fpr_at_95_tpr": value with CI}}."""
    is_unknown = np.asarray(is_unknown, dtype=bool)
    weights = (metrics.bootstrap_weights(groups, len(is_unknown), n_boot, seed) if n_boot
               else None)
    out = {}
    for name, values in scores.items():
        auc = metrics.binary_auc(is_unknown, values)[0]
        fpr = metrics.fpr_at_tpr(is_unknown, values, tpr)[0]
        out[name] = {
            "auroc": metrics.interval(auc, None if weights is None else
                                      metrics.binary_auc(is_unknown, values, weights)),
            f"fpr_at_{round(tpr * 100)}_tpr": metrics.interval(
                fpr, None if weights is None else metrics.fpr_at_tpr(is_unknown, values, tpr,
                                                                     weights)),
        }
    return out


def detection_table(result: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per score and metric (value, ci_low, ci_high)."""
    rows = [{"score": score, "metric": metric, **stats}
            for score, values in result.items() for metric, stats in values.items()]
    return pd.DataFrame(rows, columns=["score", "metric", "value", "ci_low", "ci_high"])


def plot(scores: dict[str, np.ndarray], is_unknown: np.ndarray, unknown_name: str,
         path: str | os.PathLike | None = None):
    """Per score: histograms of known and unknown test images; then the three ROC curves."""
    from utils.evaluation.plots import finish_figure, new_figure

    is_unknown = np.asarray(is_unknown, dtype=bool)
    figure, axes = new_figure(4.0 * (len(scores) + 1), 3.6, ncols=len(scores) + 1)
    for ax, (name, values) in zip(axes, scores.items()):
        bins = np.histogram_bin_edges(values, bins=30)
        ax.hist(values[~is_unknown], bins=bins, density=True, alpha=0.6, label="known classes")
        ax.hist(values[is_unknown], bins=bins, density=True, alpha=0.6,
                label=f"held out: {unknown_name}")
        ax.set(title=name, xlabel="score (higher = more unusual)", ylabel="density")
        ax.legend(fontsize=7)
    roc = axes[-1]
    for name, values in scores.items():
        order = np.argsort(-values, kind="stable")
        tpr = np.r_[0, np.cumsum(is_unknown[order]) / max(1, is_unknown.sum())]
        fpr = np.r_[0, np.cumsum(~is_unknown[order]) / max(1, (~is_unknown).sum())]
        roc.plot(fpr, tpr, label=name)
    roc.plot([0, 1], [0, 1], linestyle="--", color="grey")
    roc.axhline(TPR_TARGET, linestyle=":", color="black")
    roc.set(xlabel="false-positive rate (known flagged)", ylabel="true-positive rate",
            title="Unknown vs known (ROC)")
    roc.legend(fontsize=7)
    figure.tight_layout()
    return finish_figure(figure, path)

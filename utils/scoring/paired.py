"""Paired comparison of several arms (e.g. preprocessing configurations) scored on the SAME test
images: balanced accuracy per arm and the paired difference against a reference arm, with a
two-level bootstrap (lesions, then seeds).

Every arm was trained with the same seeds and predicts the same test rows. A bootstrap replicate
draws lesions with replacement (`metrics.bootstrap_weights`: all the images of a drawn lesion
come together) and, with several seeds, draws seeds with replacement; both draws are shared by
every arm. An arm's replicate value is its balanced accuracy on the drawn images, averaged over
the drawn seeds; its paired difference is the average over the drawn seeds of (arm - reference)
on the same images with the same seed. Because the pairing removes the between-image and
between-seed variation the arms share, the interval of a difference is narrower than the
intervals of the two values it subtracts. Intervals: 95 % percentiles of the replicates.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from utils.scoring import metrics


def balanced_accuracy(y_true: np.ndarray, probs: np.ndarray,
                      weights: np.ndarray | None = None) -> np.ndarray:
    """Balanced accuracy (B,) for each row of `weights` (B, n) (one value without weights), with
    the conventions of utils.scoring.metrics (argmax; a tied maximum counts as wrong)."""
    probs = np.asarray(probs, dtype=float)
    matrices = metrics.confusion_matrices(y_true, metrics.predicted_labels(probs), probs.shape[1],
                                          weights)
    return metrics.rates_from_confusion(matrices)["balanced_accuracy"]


def _interval(point: float, replicates: np.ndarray) -> dict[str, float | None]:
    low, high = metrics.percentile_interval(replicates)
    clean = [None if not np.isfinite(v) else float(v) for v in (point, low, high)]
    return {"value": clean[0], "ci_low": clean[1], "ci_high": clean[2]}


def paired_comparison(y_true: np.ndarray, probs: Mapping[str, Sequence[np.ndarray]],
                      reference: str, groups: np.ndarray | None = None,
                      n_boot: int = metrics.DEFAULT_N_BOOT, seed: int = 0) -> dict[str, Any]:
    """Balanced accuracy of every arm and its paired difference to `reference`.

    probs: {arm: [probabilities (n, K) of seed 0, seed 1, ...]}, every arm with the same seeds in
    the same order and the same rows as `y_true`. groups: lesion ids of the rows (None: images
    are resampled). Returns {"reference", "n_images", "n_groups", "n_seeds", "bootstrap",
    "arms": {arm: {"balanced_accuracy", "per_seed", "difference", "p_better"}}} where
    "difference" (None for the reference) is arm - reference and "p_better" the share of
    replicates in which the arm beats the reference.
    """
    y_true = np.asarray(y_true, dtype=int)
    if reference not in probs:
        raise ValueError(f"reference arm {reference!r} not among {sorted(probs)}")
    n_seeds = {len(runs) for runs in probs.values()}
    if len(n_seeds) != 1 or 0 in n_seeds:
        raise ValueError(f"every arm needs the same number (> 0) of seeds, got "
                         f"{ {arm: len(runs) for arm, runs in probs.items()} }")
    (n_seeds,) = n_seeds
    for arm, runs in probs.items():
        for k, p in enumerate(runs):
            if np.asarray(p).shape[0] != len(y_true):
                raise ValueError(f"arm {arm!r} seed {k}: {np.asarray(p).shape[0]} rows, "
                                 f"{len(y_true)} labels")
    weights = metrics.bootstrap_weights(groups, len(y_true), n_boot, seed)
    rng = np.random.default_rng([seed, 1])
    seed_draws = (rng.integers(0, n_seeds, size=(n_boot, n_seeds)) if n_seeds > 1
                  else np.zeros((n_boot, 1), dtype=int))
    point = {arm: np.array([balanced_accuracy(y_true, p)[0] for p in runs])
             for arm, runs in probs.items()}
    replicates = {arm: np.stack([balanced_accuracy(y_true, p, weights) for p in runs], axis=1)
                  for arm, runs in probs.items()}  # (B, seeds)
    rows = np.arange(n_boot)[:, None]
    arms: dict[str, Any] = {}
    for arm in probs:
        drawn = replicates[arm][rows, seed_draws].mean(axis=1)
        entry: dict[str, Any] = {"balanced_accuracy": _interval(point[arm].mean(), drawn),
                                 "per_seed": [float(v) for v in point[arm]],
                                 "difference": None, "p_better": None}
        if arm != reference:
            delta = (replicates[arm] - replicates[reference])[rows, seed_draws].mean(axis=1)
            entry["difference"] = _interval((point[arm] - point[reference]).mean(), delta)
            finite = delta[np.isfinite(delta)]
            entry["p_better"] = float((finite > 0).mean()) if finite.size else None
        arms[arm] = entry
    return {
        "reference": reference,
        "n_images": int(len(y_true)),
        "n_groups": int(len(np.unique(groups))) if groups is not None else int(len(y_true)),
        "n_seeds": int(n_seeds),
        "bootstrap": {"n_boot": int(n_boot), "seed": int(seed), "level": metrics.CI_LEVEL,
                      "unit": "lesion" if groups is not None else "image",
                      "seeds_resampled": n_seeds > 1},
        "arms": arms,
    }


def verdict(difference: Mapping[str, Any] | None) -> str:
    """Plain words for a paired difference interval: helps, hurts, or no evidence either way."""
    if not difference or difference.get("ci_low") is None:
        return "reference"
    if difference["ci_low"] > 0:
        return "helps (the CI lies above 0)"
    if difference["ci_high"] < 0:
        return "hurts (the CI lies below 0)"
    return "no evidence either way (the CI includes 0)"

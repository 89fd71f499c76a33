"""Paired bootstrap statistics of the leakage audit.

Every model is scored on two test sets: its own protocol's test split and the shared clean test
(lesions held out before either protocol saw the data). Within one budget the data of each
protocol is fixed and only the training seed varies, so the models of one test set score the
same rows. One bootstrap replicate therefore
  1. resamples the lesions of each test set (all rows of a drawn lesion, augmented copies
     included, come together; one draw per test set, shared by every model scored on it), and
  2. resamples the seeds (with replacement),
and computes each statistic as a mean over the drawn seeds: the inflation of a protocol
(own test - clean test of the same model) and the difference between the protocols on the clean
test (published - lesion-grouped, seed k of one against seed k of the other). The percentile
interval of the replicates is the 95 % CI; the point estimate is the mean over seeds.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from utils.scoring import metrics
from utils.scoring.predictions import arrays_from_predictions, class_columns

# accuracy_at_own_mix: recall per class weighted by the class mix of the protocol's own test
# split - on the own test it is the accuracy; on the clean test (HAM10000's natural mix, two
# thirds nv) it is what the accuracy would be at the own test's mix, so own - clean isolates
# the leak from the difference in class mix.
RATES = ("accuracy", "balanced_accuracy", "accuracy_at_own_mix")
Runs = Mapping[tuple[int, str], Mapping[str, pd.DataFrame]]  # (seed, protocol) -> {set: frame}


def lesion_weights(frame: pd.DataFrame, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, rows) resampling counts of a test set, lesions drawn with replacement."""
    _, _, lesions = arrays_from_predictions(frame)
    _, index = np.unique(lesions, return_inverse=True)
    n_groups = int(index.max()) + 1
    counts = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_boot)
    return counts[:, index].astype(float)


def class_mix(frame: pd.DataFrame) -> np.ndarray:
    """Share of each class (columns' order) among a predictions frame's rows."""
    y_true, probs, _ = arrays_from_predictions(frame)
    return np.bincount(y_true, minlength=probs.shape[1]) / len(y_true)


def rates(frame: pd.DataFrame, weights: np.ndarray | None = None,
          mix: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """RATES, (B,) per weight row (the metric code of utils.scoring); `mix`: the class mix of
    accuracy_at_own_mix (default: this frame's own)."""
    y_true, probs, _ = arrays_from_predictions(frame)
    matrices = metrics.confusion_matrices(y_true, metrics.predicted_labels(probs),
                                          probs.shape[1], weights)
    values = metrics.rates_from_confusion(matrices)
    recall = values["sensitivity"]  # (B, K), NaN for a class absent from a replicate
    mix = class_mix(frame) if mix is None else mix
    present = ~np.isnan(recall)
    mixed = np.nansum(recall * mix, axis=1) / np.maximum((present * mix).sum(axis=1), 1e-12)
    return {"accuracy": values["accuracy"], "balanced_accuracy": values["balanced_accuracy"],
            "accuracy_at_own_mix": mixed}


def _interval(point: float, replicates: np.ndarray) -> dict[str, float | None]:
    low, high = metrics.percentile_interval(replicates)
    def clean(value: float | None) -> float | None:
        return None if value is None or np.isnan(value) else float(value)

    return {"value": clean(point), "ci_low": clean(low), "ci_high": clean(high)}


def paired_summary(runs: Runs, seeds: Sequence[int], protocols: Sequence[str],
                   n_boot: int = metrics.DEFAULT_N_BOOT, seed: int = 0) -> dict[str, Any]:
    """Means over seeds with CIs, the inflation per protocol and the clean-test difference.

    runs[(seed, protocol)] = {"own_test": predictions frame, "clean_test": predictions frame}."""
    rng = np.random.default_rng(seed)
    test_sets = {"clean_test": None, **{f"own_test/{p}": p for p in protocols}}
    weights = {}
    for name, protocol in test_sets.items():
        frame = runs[(seeds[0], protocol or protocols[0])][name.split("/")[0]]
        weights[name] = lesion_weights(frame, n_boot, rng)
    seed_draws = rng.integers(len(seeds), size=(n_boot, len(seeds)))
    point: dict[tuple[str, str], np.ndarray] = {}  # (protocol, set) -> (rate, seeds) point
    boot: dict[tuple[str, str, str], np.ndarray] = {}  # (protocol, set, rate) -> (B, seeds)
    for protocol in protocols:
        mix = class_mix(runs[(seeds[0], protocol)]["own_test"])
        for test in ("own_test", "clean_test"):
            key = "clean_test" if test == "clean_test" else f"own_test/{protocol}"
            per_seed = [(rates(runs[(s, protocol)][test], mix=mix),
                         rates(runs[(s, protocol)][test], weights[key], mix)) for s in seeds]
            for rate in RATES:
                point[(protocol, test, rate)] = np.array([p[rate][0] for p, _ in per_seed])
                boot[(protocol, test, rate)] = np.stack([b[rate] for _, b in per_seed], axis=1)

    def mean_over_draws(values: np.ndarray) -> np.ndarray:  # (B, seeds) -> (B,)
        return np.take_along_axis(values, seed_draws, axis=1).mean(axis=1)

    summary: dict[str, Any] = {"seeds": list(seeds), "n_boot": n_boot, "mean": {},
                               "inflation": {}, "clean_difference": {}}
    for protocol in protocols:
        summary["mean"][protocol] = {
            test: {rate: _interval(point[(protocol, test, rate)].mean(),
                                   mean_over_draws(boot[(protocol, test, rate)]))
                   for rate in RATES}
            for test in ("own_test", "clean_test")}
        summary["inflation"][protocol] = {
            rate: _interval(
                (point[(protocol, "own_test", rate)]
                 - point[(protocol, "clean_test", rate)]).mean(),
                mean_over_draws(boot[(protocol, "own_test", rate)]
                                - boot[(protocol, "clean_test", rate)]))
            for rate in RATES}
    if len(protocols) == 2:
        first, second = protocols
        summary["clean_difference"] = {
            "protocols": [first, second],
            **{rate: _interval(
                (point[(first, "clean_test", rate)] - point[(second, "clean_test", rate)]).mean(),
                mean_over_draws(boot[(first, "clean_test", rate)]
                                - boot[(second, "clean_test", rate)]))
               for rate in ("accuracy", "balanced_accuracy")}}
    return summary


def per_class_recall(frames: Sequence[pd.DataFrame]) -> dict[str, float]:
    """Recall per class (the paper's per-class accuracy), averaged over models of one set."""
    values: dict[str, list[float]] = {}
    for frame in frames:
        y_true, probs, _ = arrays_from_predictions(frame)
        classes = class_columns(frame)
        predicted = metrics.predicted_labels(probs)
        for k, code in enumerate(classes):
            mask = y_true == k
            if mask.any():
                values.setdefault(code, []).append(float((predicted[mask] == k).mean()))
    return {code: float(np.mean(v)) for code, v in values.items()}

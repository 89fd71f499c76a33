"""The leakage audit's measurements beyond training: per-budget results, data counts,
near-duplicate images across lesion ids, and a metadata-only classifier."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from utils.scoring import metrics
from utils.studies import audit_stats
from utils.studies.paper_protocol import PROTOCOLS

Frames = Mapping[tuple[int, str], Mapping[str, pd.DataFrame]]


def _scores(frame: pd.DataFrame, n_boot: int, seed: int) -> dict[str, Any]:
    """Accuracy and balanced accuracy with lesion-bootstrap CIs, and recall per class."""
    result = metrics.evaluate_predictions(frame, n_boot=n_boot, seed=seed)
    values = result["metrics"]
    return {"n_images": result["n_images"], "n_lesions": result["n_groups"],
            "accuracy": values["accuracy"], "balanced_accuracy": values["balanced_accuracy"],
            "recall": {name.split("/", 1)[1]: stats["value"] for name, stats in values.items()
                       if name.startswith("sensitivity/")}}


def final_train_accuracy(run_dir: Path) -> float | None:
    """Training accuracy of a run's last epoch (how far the model memorised its data)."""
    from utils.training import runs

    history = run_dir / runs.HISTORY
    if not history.is_file():
        return None
    frame = pd.read_csv(history)
    return float(frame["accuracy"].iloc[-1]) if "accuracy" in frame and len(frame) else None


def budget_result(size: int, epochs: int, seeds: Sequence[int], frames: Frames, n_boot: int,
                  seed: int, work_dir: Path) -> dict[str, Any]:
    """Everything measured at one budget: per protocol and seed, own_test and clean_test scores;
    the paired means, inflations and clean-test difference; per-class recall."""
    results: dict[str, dict[str, Any]] = {p: {} for p in PROTOCOLS}
    for (run_seed, protocol), sets in frames.items():
        run_dir = work_dir / "runs" / f"{protocol}-{size}px-{epochs}ep-seed{run_seed}"
        results[protocol][str(run_seed)] = {
            test: _scores(frame, n_boot, seed) for test, frame in sets.items()}
        results[protocol][str(run_seed)]["final_train_accuracy"] = final_train_accuracy(run_dir)
    per_class = {p: {test: audit_stats.per_class_recall([frames[(s, p)][test] for s in seeds])
                     for test in ("own_test", "clean_test")} for p in PROTOCOLS}
    return {"image_size": size, "epochs": epochs, "seeds": list(seeds), "results": results,
            "paired": audit_stats.paired_summary(frames, list(seeds), PROTOCOLS, n_boot, seed),
            "per_class_recall": per_class}


def data_summary(table: pd.DataFrame, manifests: Mapping[str, pd.DataFrame]) -> dict[str, Any]:
    """Images and lesions of the dataset, and images per class and set of every manifest."""
    counts = {}
    for key, manifest in manifests.items():
        frame = pd.crosstab(manifest["label"], manifest["split"])
        counts[key] = {label: {split: int(n) for split, n in row.items()}
                       for label, row in frame.iterrows()}
    return {"dataset": table.attrs.get("dataset"), "n_images": int(len(table)),
            "n_lesions": int(table["lesion_id"].nunique()), "counts": counts}


def near_duplicates(table: pd.DataFrame, manifests: Mapping[str, pd.DataFrame],
                    config: Any) -> dict[str, Any]:
    """Near-identical images of different lesions (utils.data.duplicates) that cross our
    default lesion-grouped split of the whole dataset, and the audit's clean test / pool."""
    from utils.data import duplicates, splits

    hashes, thumbnails = duplicates.fingerprint_files(table["path"].astype(str).tolist(),
                                                      config.workers)
    pairs = duplicates.near_duplicate_pairs(hashes, thumbnails)
    table = table.reset_index(drop=True)
    ours = splits.lesion_split(table, seed=config.data_seed)
    clean_ids = set(manifests["clean"]["image_id"])
    held = table.assign(split=["test" if i in clean_ids else "train" for i in table["image_id"]])
    return {"hash_threshold": duplicates.HASH_THRESHOLD,
            "min_correlation": duplicates.MIN_CORRELATION,
            "our_default_split": duplicates.pairs_across_splits(ours, pairs),
            "clean_test_vs_pool": duplicates.pairs_across_splits(held, pairs)}


def metadata_check(table: pd.DataFrame, config: Any) -> dict[str, Any] | None:
    """dx_type (where the metadata has it) as the only input, on our default split."""
    from utils.data import splits
    from utils.studies.metadata_leak import metadata_leak

    manifest = splits.lesion_split(table, seed=config.data_seed)
    return metadata_leak(manifest, "dx_type", config.n_boot, config.data_seed)

"""The two data protocols the leakage audit compares, as split manifests.

- published (`published_manifest`): Villa-Pulgarin et al. (2022) - every image of each class
  folder augmented with the published recipe and copies per image, name collisions replayed
  (utils.augmentation.published), then the published b/c counter over each class folder in
  folder order (utils.data.splits.paper_counter_split). Nothing else: no lesion grouping, so
  images of one lesion and copies of one image sit in train, validation and test at once.
- lesion-grouped (`lesion_manifest`): this repository's - a lesion-grouped, class-stratified split
  first, then offline balancing of the TRAINING split only (utils.augmentation.balance).

`leakage` measures how much of a manifest's test split is already in its training split.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from utils.augmentation import balance, published
from utils.data import splits

PROTOCOLS = ("published", "lesion")
PROTOCOL_NAMES = {"published": "published: augment class folders, then counter split",
                  "lesion": "ours: lesion-grouped split, then balance train only"}


def published_manifest(table: pd.DataFrame, out_dir: str | Path, dataset: str, seed: int = 0,
                       copies: Mapping[str, int] | None = None, collisions: bool = True,
                       workers: int = 2) -> pd.DataFrame:
    """The published protocol's manifest of `table` (augmented copies written under out_dir)."""
    copies = copies or published.copies_for(dataset, sorted(table["label"].unique()))
    pool = published.build_pool(table, out_dir, copies, seed, collisions, workers=workers)
    manifest = splits.paper_counter_split(pool)
    manifest.attrs = dict(table.attrs, protocol="published", copies=dict(copies))
    return manifest


def lesion_manifest(table: pd.DataFrame, out_dir: str | Path, seed: int = 0,
                    target: int | None = None) -> pd.DataFrame:
    """Our protocol's manifest: lesion_split, then the training split balanced to `target`
    images per class (None: the largest class) with this repository's transforms."""
    manifest = splits.lesion_split(table, seed=seed)
    balanced = balance.balance_manifest(manifest, out_dir, target=target, seed=seed)
    balanced.attrs = dict(table.attrs, protocol="lesion")
    return balanced


def leakage(manifest: pd.DataFrame) -> dict[str, Any]:
    """How much of the test split is already in training: augmented copies, shared lesions,
    shared source images."""
    test = manifest[manifest["split"] == "test"]
    train = manifest[manifest["split"] == "train"]
    source = manifest.get("source_image_id", pd.Series("", index=manifest.index)).fillna("")
    origin = source.where(source != "", manifest["image_id"])  # the raw image each row comes from
    augmented = manifest.get("augmented", pd.Series(False, index=manifest.index))
    share = (lambda mask: float(mask.mean())) if len(test) else (lambda mask: 0.0)
    return {
        "n_train": int(len(train)),
        "n_val": int((manifest["split"] == "val").sum()),
        "n_test": int(len(test)),
        "test_augmented_share": share(augmented[test.index].fillna(False).astype(bool)),
        "test_lesion_in_train_share": share(test["lesion_id"].isin(set(train["lesion_id"]))),
        "test_origin_in_train_share": share(origin[test.index].isin(set(origin[train.index]))),
    }

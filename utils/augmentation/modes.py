"""Augment modes: which manifest rows and which online augmentation a training run uses.

- "none": original rows only, no online augmentation;
- "online": original rows + random transforms in tf.data every epoch;
- "offline": the balanced manifest (original + augmented training rows, utils.augmentation.balance);
- "both": the balanced manifest + online augmentation.
"""
from __future__ import annotations

import pandas as pd

from utils.data.manifest import augmented_mask
from utils.errors import DataError

AUGMENT_MODES: tuple[str, ...] = ("none", "online", "offline", "both")


def check_mode(mode: str) -> str:
    """`mode` if it is an augment mode, else ValueError listing the valid ones."""
    if mode not in AUGMENT_MODES:
        raise ValueError(f"unknown augment mode {mode!r}; valid: {', '.join(AUGMENT_MODES)}")
    return mode


def uses_offline(mode: str) -> bool:
    """True when the mode trains on an offline-balanced manifest."""
    return check_mode(mode) in ("offline", "both")


def uses_online(mode: str) -> bool:
    """True when the mode augments each training image on the fly."""
    return check_mode(mode) in ("online", "both")


def training_rows(mode: str, manifest: pd.DataFrame) -> pd.DataFrame:
    """The manifest rows a run of this mode uses: the balanced manifest as is for offline/both
    (DataError when it holds no augmented row), the original rows otherwise."""
    augmented = augmented_mask(manifest)
    if uses_offline(mode):
        if not augmented.any():
            raise DataError(
                f"augment mode {mode!r} needs a balanced manifest (with augmented rows); run "
                "`python -m utils balance <split_manifest.csv> <out_dir>` and pass "
                "<out_dir>/balanced_manifest.csv"
            )
        return manifest
    return manifest.loc[~augmented].reset_index(drop=True) if augmented.any() else manifest

"""The SPLIT MANIFEST file: written, read and checked here and nowhere else.

A split manifest is the dataset TABLE (utils.data.readers: image_id, path, label, label_index,
lesion_id, age, sex, site, ...) plus a column `split` in SPLITS (and `fold` for k-fold). A
BALANCED MANIFEST (utils.augmentation.balance) adds augmented training rows with the columns
`augmented` (bool), `source_image_id` and `transforms`. Run folders keep the manifest they trained
on as manifest.csv.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from utils import fileio
from utils.data.table import infer_numbers
from utils.errors import DataError

SPLITS: tuple[str, ...] = ("train", "val", "test")
REQUIRED_COLUMNS: tuple[str, ...] = ("image_id", "path", "label", "lesion_id", "split")
# Columns read back as strings whatever they hold (ids such as "NA" or "0001" stay text).
STRING_COLUMNS = ("image_id", "path", "label", "lesion_id", "split", "sex", "site",
                  "source_image_id", "transforms", "dx_type")
NULLABLE_STRING_COLUMNS = ("sex", "site")


def save_manifest(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a manifest CSV atomically; frame.attrs["dataset"] goes into a `dataset` column."""
    if "split" not in frame:
        raise DataError("a manifest needs a 'split' column; build it with lesion_split")
    out = frame.copy()
    if "dataset" not in out and frame.attrs.get("dataset"):
        out["dataset"] = frame.attrs["dataset"]
    return fileio.write_csv(path, out)


def load_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Read a manifest CSV with stable dtypes: ids, paths and labels stay strings (even "NA" or
    "0001"), label_index and fold are int, age float, sex/site NaN where empty; a single-valued
    `dataset` column moves back into frame.attrs["dataset"]."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found; write it with `python -m utils split`")
    again = "write it again with `python -m utils split`"
    try:  # every value as text: numbers are parsed by table.infer_numbers, never pandas' C parser
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty file (0 bytes); {again}") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as error:
        raise DataError(f"{path}: cannot be parsed as a manifest ({_short(error)}); "
                        f"{again}") from None
    missing = [c for c in ("image_id", "path", "label", "split") if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: not a split manifest (missing column(s) "
                        f"{', '.join(missing)}); {again}")
    if len(frame) == 0:
        raise DataError(f"{path}: has a header but no rows; {again}")
    if not isinstance(frame.index, pd.RangeIndex):  # rows longer than the header
        raise DataError(f"{path}: its rows have more fields than its header; {again}")
    for column in frame.columns:
        if column not in STRING_COLUMNS:
            frame[column] = infer_numbers(frame[column])
    for column in NULLABLE_STRING_COLUMNS:
        if column in frame:
            frame[column] = frame[column].astype(object).where(frame[column] != "", np.nan)
    for column, kind in (("label_index", np.int64), ("fold", np.int64), ("age", float)):
        if column in frame:
            try:
                frame[column] = frame[column].astype(kind)
            except (ValueError, TypeError, OverflowError):
                raise DataError(f"{path}: column {column} holds a value that is not a "
                                f"{'number' if kind is float else 'whole number'}; "
                                f"{again}") from None
    if "augmented" in frame:
        frame["augmented"] = frame["augmented"].astype(str).str.lower().eq("true")
    if "dataset" in frame and frame["dataset"].nunique() == 1:
        frame.attrs["dataset"] = str(frame["dataset"].iloc[0])
        frame = frame.drop(columns="dataset")
    bad = sorted(set(frame["split"]) - set(SPLITS))
    if bad:
        raise DataError(f"{path}: unknown split value(s) {', '.join(bad)}; expected "
                        f"{', '.join(SPLITS)}")
    frame.attrs["source"] = str(path)
    return frame


def _short(error: BaseException) -> str:
    return " ".join(str(error).split())[:200]


def augmented_mask(frame: pd.DataFrame) -> pd.Series:
    """True for the augmented rows of a balanced manifest (all False for a split manifest)."""
    if "augmented" in frame.columns:
        return frame["augmented"].astype(bool)
    return pd.Series(False, index=frame.index)


def check_manifest(frame: pd.DataFrame, source: str = "manifest",
                   required_splits: Iterable[str] = ()) -> None:
    """Raise DataError unless the manifest has the required columns, unique image ids, known
    split values and a row in each of `required_splits`."""
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"{source}: missing column(s) {', '.join(missing)} (has "
            f"{', '.join(map(str, frame.columns))}); write a split manifest with "
            "`python -m utils split`"
        )
    duplicated = frame["image_id"][frame["image_id"].duplicated()]
    if len(duplicated):
        raise DataError(f"{source}: image_id {duplicated.iloc[0]!r} appears more than once")
    bad_split = sorted(set(frame["split"]) - set(SPLITS))
    if bad_split:
        raise DataError(f"{source}: unknown split value(s) {bad_split}; expected "
                        f"{', '.join(SPLITS)}")
    absent = [s for s in required_splits if s not in set(frame["split"])]
    if absent:
        raise DataError(f"{source}: no {absent} rows; training needs train and val splits "
                        "(check split_fractions or the manifest file)")

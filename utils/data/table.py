"""The TABLE every reader returns, one row per image (columns datasets.TABLE_COLUMNS):

    image_id (str), path (absolute str), label (class code), label_index (int, position in
    DatasetInfo.classes), lesion_id (str; the image id where unknown), age (float, NaN if
    unknown), sex (str or NaN), site (str or NaN); frame.attrs["dataset"] = DatasetInfo.name

Extra columns a layout carries (e.g. HAM10000's dx_type, localization) follow.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from utils.data.datasets import TABLE_COLUMNS, DatasetInfo

UNKNOWN_VALUES = ("", "unknown", "nan", "na", "none")


def parse_numbers(values: object) -> np.ndarray:
    """float64 of text values (NaN where not a number), parsed by Python's float().

    Never pandas' C number parser on user files (read_csv of a numeric column, pd.to_numeric):
    pandas 2.x crashes the interpreter (segmentation fault) on an exponent such as
    1e309714285714285 (pandas-dev/pandas#63089), which the fuzz tests met."""

    def number(value: object) -> float:
        try:
            parsed = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError, OverflowError):
            return np.nan
        return parsed if math.isfinite(parsed) else np.nan

    items = list(values) if not isinstance(values, np.ndarray) else values.tolist()
    return np.fromiter((number(v) for v in items), dtype=float, count=len(items))


def infer_numbers(values: pd.Series) -> pd.Series:
    """A text column as read_csv would type it, safely (parse_numbers): int64 when every value
    is a whole number, float64 when every non-empty value is a number (empty -> NaN), else the
    text with empty values as NaN."""
    text = values.astype(str)
    empty = text.str.strip().eq("")
    numbers = parse_numbers(text)
    if (np.isnan(numbers) & ~empty.to_numpy()).any():
        return values.astype(object).where(~empty, np.nan)
    if not empty.any() and text.str.fullmatch(r"\s*[+-]?\d{1,18}\s*").all():
        return pd.Series(numbers.astype(np.int64), index=values.index, name=values.name)
    return pd.Series(numbers, index=values.index, name=values.name)


def clean_values(values: pd.Series) -> pd.Series:
    """Strings stripped; missing, empty or 'unknown' -> NaN."""
    text = values.astype(str).str.strip()
    return text.where(~text.str.lower().isin(UNKNOWN_VALUES), np.nan).astype(object)


def finish_table(rows: pd.DataFrame, info: DatasetInfo, **attrs: object) -> pd.DataFrame:
    """Order and type the TABLE columns; attach attrs."""
    table = pd.DataFrame({
        "image_id": rows["image_id"].astype(str).to_numpy(dtype=object),
        "path": rows["path"].astype(str).to_numpy(dtype=object),
        "label": rows["label"].astype(str).to_numpy(dtype=object),
        "label_index": np.array([info.classes.index(label) for label in rows["label"]],
                                dtype=np.int64),
        "lesion_id": rows["lesion_id"].astype(str).to_numpy(dtype=object),
        "age": parse_numbers(rows["age"]),
        "sex": rows["sex"].to_numpy(dtype=object),
        "site": rows["site"].to_numpy(dtype=object),
    })
    extra = [column for column in rows.columns if column not in TABLE_COLUMNS]
    for column in extra:
        table[column] = rows[column].to_numpy()
    table.attrs["dataset"] = info.name
    table.attrs.update(attrs)
    return table

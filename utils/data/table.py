"""The TABLE every reader returns, one row per image (columns datasets.TABLE_COLUMNS):

    image_id (str), path (absolute str), label (class code), label_index (int, position in
    DatasetInfo.classes), lesion_id (str; the image id where unknown), age (float, NaN if
    unknown), sex (str or NaN), site (str or NaN); frame.attrs["dataset"] = DatasetInfo.name

Extra columns a layout carries (e.g. HAM10000's dx_type, localization) follow.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from utils.data.datasets import TABLE_COLUMNS, DatasetInfo

UNKNOWN_VALUES = ("", "unknown", "nan", "na", "none")


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
        "age": pd.to_numeric(rows["age"], errors="coerce").astype(float).to_numpy(),
        "sex": rows["sex"].to_numpy(dtype=object),
        "site": rows["site"].to_numpy(dtype=object),
    })
    extra = [column for column in rows.columns if column not in TABLE_COLUMNS]
    for column in extra:
        table[column] = rows[column].to_numpy()
    table.attrs["dataset"] = info.name
    table.attrs.update(attrs)
    return table

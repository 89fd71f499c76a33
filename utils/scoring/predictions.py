"""The PREDICTIONS CSV: the one file format between a trained model and every metric.

A predictions CSV (`predictions_<split>.csv` in a run folder, or what `predict` + ground truth
give) has the id columns PREDICTION_ID_COLUMNS, then one probability column per class in the
dataset's class order. This module writes it (`predictions_frame`, `write_predictions`) and reads
it back (`read_predictions`, `validate_predictions`, `arrays_from_predictions`); nothing else
spells out its columns.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from utils import fileio
from utils.data.table import infer_numbers, parse_numbers
from utils.errors import DataError

PREDICTION_ID_COLUMNS: tuple[str, ...] = ("image_id", "lesion_id", "label", "label_index", "split")


def predictions_frame(rows: pd.DataFrame, probs: np.ndarray,
                      classes: Sequence[str]) -> pd.DataFrame:
    """The PREDICTIONS table of manifest `rows` and their probabilities (n, K)."""
    frame = rows[list(PREDICTION_ID_COLUMNS)].reset_index(drop=True)
    probabilities = pd.DataFrame(np.asarray(probs, dtype="float64"), columns=list(classes))
    return pd.concat([frame, probabilities], axis=1)


def write_predictions(path: str | os.PathLike, rows: pd.DataFrame, probs: np.ndarray,
                      classes: Sequence[str]) -> Path:
    """Write the predictions CSV of `rows` atomically."""
    return fileio.write_csv(path, predictions_frame(rows, probs, classes))


def class_columns(frame: pd.DataFrame) -> tuple[str, ...]:
    """The probability columns of a predictions frame: every column after the id columns."""
    missing = [c for c in PREDICTION_ID_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"predictions table lacks column(s) {missing}; a predictions CSV has columns "
            f"{', '.join(PREDICTION_ID_COLUMNS)}, then one probability column per class"
        )
    return tuple(c for c in frame.columns if c not in PREDICTION_ID_COLUMNS)


def read_predictions(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate a predictions CSV."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: predictions file not found; train a model or run `predict` first")
    redo = "write it again (train or `python -m utils predict`)"
    try:  # as text: numbers are parsed by table.infer_numbers, never pandas' C parser
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty file (0 bytes); {redo}") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as error:
        reason = " ".join(str(error).split())[:200]
        raise DataError(f"{path}: cannot be parsed as a predictions CSV ({reason}); "
                        f"{redo}") from None
    if not isinstance(frame.index, pd.RangeIndex):  # rows longer than the header
        raise DataError(f"{path}: its rows have more fields than its header; {redo}")
    for column in frame.columns:
        if column in ("image_id", "lesion_id", "label", "split"):
            frame[column] = frame[column].astype(object).where(frame[column] != "", np.nan)
        else:
            frame[column] = infer_numbers(frame[column])
    validate_predictions(frame, source=str(path))
    return frame


def validate_predictions(frame: pd.DataFrame, source: str = "predictions") -> tuple[str, ...]:
    """Check labels and probabilities; returns the class codes. Raises DataError naming the row."""
    classes = class_columns(frame)
    if not classes:
        raise DataError(f"{source}: no probability columns after {PREDICTION_ID_COLUMNS}")
    probs = np.column_stack([parse_numbers(frame[c]) for c in classes]) if len(frame) else \
        np.zeros((0, len(classes)))
    bad = ~np.isfinite(probs).all(axis=1) | (probs < 0).any(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{source}: row {row + 2} has a missing, negative or non-finite probability")
    unknown = ~frame["label"].isin(classes)
    if unknown.any():
        row = int(np.flatnonzero(unknown.to_numpy())[0])
        raise DataError(
            f"{source}: row {row + 2} has label {frame['label'].iloc[row]!r}, not one of the "
            f"probability columns {', '.join(classes)}"
        )
    return classes


def arrays_from_predictions(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true class index, probabilities (n, K), lesion group ids) of a predictions frame."""
    classes = validate_predictions(frame)
    y_true = frame["label"].map({c: i for i, c in enumerate(classes)}).to_numpy(dtype=int)
    probs = frame[list(classes)].to_numpy(dtype=float)
    lesions = frame["lesion_id"].fillna(frame["image_id"]).astype(str).to_numpy()
    return y_true, probs, lesions

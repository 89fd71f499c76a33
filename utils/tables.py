"""Text formatting of results, written once: a value with its confidence interval, and markdown
tables (every report, model card and README table goes through `markdown_table`)."""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import pandas as pd


def format_ci(stats: Mapping[str, Any] | None, digits: int = 3) -> str:
    """`value [ci_low, ci_high]` of a metric entry ({"value", "ci_low", "ci_high"}); "n/a" where
    the value is missing, the bare value where the interval is."""
    if not stats or stats.get("value") is None or _missing(stats["value"]):
        return "n/a"
    value = f"{stats['value']:.{digits}f}"
    low, high = stats.get("ci_low"), stats.get("ci_high")
    if low is None or high is None or _missing(low) or _missing(high):
        return value
    return f"{value} [{low:.{digits}f}, {high:.{digits}f}]"


def format_cell(value: Any, digits: int = 3) -> str:
    """A table cell: floats rounded to `digits`, missing values as empty text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: pd.DataFrame | Sequence[Sequence[Any]],
                   header: Sequence[str] | None = None, digits: int = 3,
                   index: bool = False) -> str:
    """A GitHub markdown table from a DataFrame (its columns as header) or from rows + header."""
    if isinstance(rows, pd.DataFrame):
        frame = rows.reset_index() if index else rows
        header = [str(c) for c in frame.columns] if header is None else list(header)
        body = frame.itertuples(index=False, name=None)
    else:
        if header is None:
            raise ValueError("markdown_table needs a header for plain rows")
        body = rows
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in body:
        cells = [format_cell(value, digits) for value in row]
        if len(cells) != len(header):
            raise ValueError(f"row {row!r} has {len(cells)} cells for {len(header)} columns")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _missing(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)

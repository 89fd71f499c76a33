"""Validation of dataset tables and image files, with errors that name the file or row and the fix.

Two levels:

* cheap checks on the metadata (columns, labels, duplicated ids, one-hot rows, ids that would
  escape the data folder, listed images that are missing) -- the readers in `utils.data.readers` run
  them every time and raise `utils.errors.DataError`;
* image files (zero-byte, not an image, over the pixel cap, truncated) -- the image gate
  `utils.data.images`, which reports them with this module's `Problem`.

Every check returns a list of `Problem`; `raise_problems` turns a non-empty list into one
`DataError`; `utils.data.check` gathers every problem of a dataset folder.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from utils.data.table import parse_numbers
from utils.errors import DataError

MAX_LISTED = 20  # problems spelled out in one DataError message


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the data: where (file, line), what, and how to fix it."""

    kind: str  # short category, e.g. "missing_image", "unknown_label"
    where: str  # file name, with "line N" for a metadata row
    message: str  # what is wrong and what to do
    line: int = 0  # line of the metadata file (0: not a metadata row)

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def line_of(position: int) -> int:
    """1-based line of a 0-based data row in a CSV with one header line."""
    return position + 2


def row_where(source: str, position: int, image_id: str | None = None) -> str:
    """'file line N (image_id X)' for messages."""
    text = f"{source} line {line_of(position)}"
    return f"{text} (image {image_id!r})" if image_id else text


def row_problem(
    kind: str, source: str, position: int, image_id: str | None, message: str
) -> Problem:
    """A Problem located at data row `position` of `source`."""
    return Problem(kind, row_where(source, position, image_id), message, line_of(position))


def sort_problems(problems: Sequence[Problem]) -> list[Problem]:
    """Problems in file-line order (problems that are not rows first, order kept otherwise)."""
    return sorted(problems, key=lambda problem: problem.line)


def _positions(items: Sequence, positions: Sequence[int] | None) -> Sequence[int]:
    """0-based file rows of `items` (their own order unless given)."""
    return range(len(items)) if positions is None else positions


def raise_problems(problems: Sequence[Problem], what: str, hint: str = "") -> None:
    """Raise one DataError listing (up to MAX_LISTED of) `problems`; do nothing if empty."""
    if not problems:
        return
    lines = [str(problem) for problem in problems[:MAX_LISTED]]
    if len(problems) > MAX_LISTED:
        lines.append(f"... and {len(problems) - MAX_LISTED} more")
    message = f"{len(problems)} problem(s) in {what}:\n  " + "\n  ".join(lines)
    raise DataError(message + (f"\n{hint}" if hint else ""))


def require_columns(columns: Iterable[str], required: Sequence[str], source: str) -> None:
    """Raise DataError naming `source` and the missing columns (a table cannot be built)."""
    present = [str(column) for column in columns]
    missing = [column for column in required if column not in present]
    if missing:
        raise DataError(
            f"{source}: missing column(s) {', '.join(missing)}; found "
            f"{', '.join(present) or 'none'}. "
            "Use the file as distributed (unmodified header) or pass --dataset to pick the layout."
        )


def unsafe_image_id(image_id: str) -> str | None:
    """Why `image_id` cannot name a file inside the data folder, or None when it is safe."""
    if not image_id:
        return "empty image id"
    if os.path.isabs(image_id) or image_id.startswith(("/", "\\")) or ":" in image_id:
        return "absolute path"
    if "/" in image_id or "\\" in image_id or image_id in (".", "..") or image_id.startswith(".."):
        return "path outside the data folder"
    return None


def check_image_ids(
    ids: Sequence[str], source: str, positions: Sequence[int] | None = None
) -> list[Problem]:
    """Ids that are empty or would resolve outside the data folder (e.g. '../../etc/passwd')."""
    problems = []
    for position, image_id in zip(_positions(ids, positions), ids):
        reason = unsafe_image_id(image_id)
        if reason:
            problems.append(row_problem(
                "unsafe_id", source, position, None,
                f"image id {image_id!r} is not a plain file name ({reason}); ids must be bare "
                "names such as ISIC_0024306 -- fix or remove the row",
            ))
    return problems


def check_duplicates(
    ids: Sequence[str], source: str, positions: Sequence[int] | None = None
) -> list[Problem]:
    """Every repeated image id, naming the line of its first occurrence."""
    first_seen: dict[str, int] = {}
    problems = []
    for position, image_id in zip(_positions(ids, positions), ids):
        if image_id in first_seen:
            problems.append(row_problem(
                "duplicate_id", source, position, image_id,
                f"image id repeated (first on line {line_of(first_seen[image_id])}); "
                "remove the duplicated row",
            ))
        else:
            first_seen[image_id] = position
    return problems


def check_labels(
    labels: Sequence[str], ids: Sequence[str], valid: Sequence[str], source: str,
    positions: Sequence[int] | None = None,
) -> list[Problem]:
    """Labels outside `valid` (the dataset's class codes)."""
    allowed = set(valid)
    return [
        row_problem(
            "unknown_label", source, position, image_id,
            f"unknown label {label!r}; valid labels: {', '.join(valid)} -- correct or remove "
            "the row",
        )
        for position, label, image_id in zip(_positions(ids, positions), labels, ids)
        if label not in allowed
    ]


def one_hot_labels(
    frame: pd.DataFrame, columns: Sequence[str], source: str, id_column: str = "image"
) -> tuple[list[str | None], list[Problem]]:
    """Decode one-hot rows: the positive column per row (None where invalid) and the problems.

    A valid row holds exactly one 1 and zeros elsewhere ("1", "1.0", "0.0" accepted).
    """
    values = np.column_stack([parse_numbers(frame[c]) for c in columns]) if len(frame) else \
        np.zeros((0, len(columns)))
    labels: list[str | None] = []
    problems = []
    for position, row in enumerate(values):
        image_id = str(frame[id_column].iloc[position])
        binary = np.isin(row, (0.0, 1.0))
        positives = int(np.sum(row == 1.0))
        if binary.all() and positives == 1:
            labels.append(columns[int(np.argmax(row))])
            continue
        labels.append(None)
        if not binary.all():
            reason = "holds values other than 0 and 1"
        elif positives == 0:
            reason = "has no positive class (all zeros)"
        else:
            hot = [columns[i] for i in np.flatnonzero(row == 1.0)]
            reason = f"has {positives} positive classes ({', '.join(hot)})"
        problems.append(row_problem(
            "one_hot", source, position, image_id,
            f"one-hot row {reason}; each row needs exactly one 1 in {', '.join(columns)} "
            "-- correct or remove the row",
        ))
    return labels, problems


def check_missing_images(
    ids: Sequence[str], found: Mapping[str, str], source: str, searched: str,
    positions: Sequence[int] | None = None,
) -> list[Problem]:
    """Listed images without a file (`found` maps image id -> path); unsafe ids are skipped
    (check_image_ids reports them)."""
    return [
        row_problem(
            "missing_image", source, position, image_id,
            f"listed image has no file {image_id}.jpg under {searched}; restore the file "
            "(unzip the image archives again) or remove the row",
        )
        for position, image_id in zip(_positions(ids, positions), ids)
        if image_id not in found and not unsafe_image_id(image_id)
    ]


def is_inside(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """Whether the normalised absolute `path` lies under `root` (no symlink resolution)."""
    base = os.path.normpath(os.path.abspath(root))
    normal = os.path.normpath(os.path.abspath(path))
    return os.path.commonpath([base, normal]) == base


def check_inside(
    paths: Sequence[str], root: str | os.PathLike, source: str,
    positions: Sequence[int] | None = None,
) -> list[Problem]:
    """Image paths whose normalised form lies outside `root` (belt and braces after ids)."""
    return [
        row_problem(
            "unsafe_id", source, position, None,
            f"image path {path} resolves outside the data folder {root}; fix or remove the row",
        )
        for position, path in zip(_positions(paths, positions), paths)
        if not is_inside(path, root)
    ]

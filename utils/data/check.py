"""`python -m utils check <data dir> [--dataset ...]`: validate a dataset folder, print a summary.

Reads the metadata (every cheap check of utils.data.validation), decodes every image in parallel,
then prints images and lesions per class, the distribution of image sizes and every problem
found. Exit status 1 when there is any problem. The folder is only read.
"""
from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from utils import paths
from utils.arguments import checked, positive_int
from utils.data import images, readers
from utils.data.validation import Problem
from utils.errors import DataError

TOP_SIZES = 10  # image sizes listed individually


@dataclass
class CheckReport:
    """What `check` found in one dataset folder."""

    root: Path
    table: pd.DataFrame | None  # valid rows (None when no table could be built)
    problems: list[Problem] = field(default_factory=list)
    sizes: Counter = field(default_factory=Counter)  # (width, height) -> images
    decoded: bool = False  # whether every image was decoded
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems


def inspect_dataset(
    root: str | os.PathLike, dataset: str | None = None, decode: bool = True,
    workers: int | None = None, progress: bool = True,
) -> CheckReport:
    """Run every check on `root`; never raises for data problems (they are in the report)."""
    start = time.perf_counter()
    root = Path(root)
    try:
        table, problems = readers.scan_table(root, dataset)
    except DataError as error:
        return CheckReport(root, None, [layout_problem(root, str(error))],
                           seconds=time.perf_counter() - start)
    sizes: Counter = Counter()
    if decode:
        image_sizes, image_problems = images.inspect_images(
            table["path"].tolist(), workers, progress)
        problems = problems + image_problems
        sizes.update(size for size in image_sizes if size is not None)
    return CheckReport(root, table, problems, sizes, decode, time.perf_counter() - start)


def layout_problem(root: Path, message: str) -> Problem:
    """The one problem of a folder no table can be built from, located at the file the
    message names (or the folder)."""
    where, separator, rest = message.partition(": ")
    inside = where.startswith((str(root), str(root.resolve()))) and "\n" not in where
    return Problem("layout", where, rest) if separator and inside else \
        Problem("layout", str(root), message)


def collect_problems(
    root: str | os.PathLike, dataset: str | None = None, decode: bool = True,
    workers: int | None = None, progress: bool = False,
) -> list[Problem]:
    """Every problem of a dataset folder (metadata checks, then every image decoded); a problem
    that prevents building any table is the single problem of kind "layout"."""
    return inspect_dataset(root, dataset, decode, workers, progress).problems


def class_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Images, lesions and share of images per class, in dataset class order."""
    order = table[["label", "label_index"]].drop_duplicates().sort_values("label_index")["label"]
    groups = table.groupby("label")
    summary = pd.DataFrame({"images": groups.size(), "lesions": groups["lesion_id"].nunique()})
    summary["share"] = (summary["images"] / max(len(table), 1)).round(3)
    summary = summary.reindex(order)
    summary.loc["total"] = [len(table), table["lesion_id"].nunique(), 1.0 if len(table) else 0.0]
    return summary.astype({"images": int, "lesions": int})


def size_summary(sizes: Counter, decoded: bool = True) -> list[str]:
    """Lines describing the distribution of (width, height)."""
    if not sizes:
        return ["  (no readable image)" if decoded else "  (images not decoded: --no-decode)"]
    lines = [f"  {w}x{h}: {n}" for (w, h), n in sizes.most_common(TOP_SIZES)]
    if len(sizes) > TOP_SIZES:
        rest = sum(n for _, n in sizes.most_common()[TOP_SIZES:])
        lines.append(f"  ... {len(sizes) - TOP_SIZES} other sizes: {rest} images")
    widths = [w for w, _ in sizes.elements()]
    heights = [h for _, h in sizes.elements()]
    lines.append(f"  width {min(widths)}-{max(widths)} px, height {min(heights)}-{max(heights)} px")
    return lines


def format_report(report: CheckReport) -> str:
    """The printed summary."""
    lines = [f"data folder: {paths.display(report.root)}"]
    if report.table is not None:
        lines.append(f"dataset: {report.table.attrs.get('dataset')}  "
                     f"(valid rows: {len(report.table)})")
        lines += ["", class_summary(report.table).to_string(), "", "image sizes (width x height):"]
        lines += size_summary(report.sizes, report.decoded)
    lines.append("")
    if report.problems:
        lines.append(f"{len(report.problems)} problem(s):")
        lines += [f"  {problem}" for problem in report.problems]
    else:
        lines.append("no problems found")
    lines.append(f"checked in {report.seconds:.1f} s")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data_dir", type=Path, help="dataset folder (or DermaMNIST .npz)")
    parser.add_argument("--dataset", default=None, type=checked(readers.dataset_key, "dataset"),
                        help="layout: ham10000, isic2019, isic2018 (test), "
                             "isic2018_task3_validation, dermamnist (default: detected)")
    parser.add_argument("--workers", type=positive_int, default=None, help="decoding threads")
    parser.add_argument("--no-decode", action="store_true",
                        help="metadata and file checks only (skip decoding every image)")


def run(args: argparse.Namespace) -> int:
    report = inspect_dataset(args.data_dir, args.dataset, decode=not args.no_decode,
                             workers=args.workers)
    print(format_report(report))
    return 0 if report.ok else 1

"""Readers: every supported dataset layout -> one tidy TABLE (utils.data.table).

    image_id (str), path (absolute str), label (class code), label_index (int, position in
    DatasetInfo.classes), lesion_id (str; the image id where unknown), age (float, NaN if
    unknown), sex (str or NaN), site (str or NaN); frame.attrs["dataset"] = DatasetInfo.name

Layouts: HAM10000 (Dataverse CSV or tab file, two image folders, one folder, or Kaggle's copy with
duplicated lower-case folders), ISIC 2019 training, ISIC 2018 Task 3 validation/test, DermaMNIST
(.npz, utils.data.dermamnist). `read_table(root)` detects the layout. Readers always run the
cheap checks of
`utils.data.validation` and raise `DataError` listing every problem; decoding every image is left to
`python -m utils check`. Raw files are only read, never written.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from utils.data import datasets, dermamnist, validation
from utils.data.datasets import (
    HAM_IMAGE_PREFIX,
    HAM_METADATA_NAMES,
    ISIC2018_TASK3_GROUND_TRUTH,
    ISIC2018_TASK3_INPUT,
    ISIC2018_TASK3_SUBSETS,
    ISIC2019_GROUND_TRUTH,
    ISIC2019_INPUT,
    ISIC2019_METADATA,
    DatasetInfo,
)
from utils.data.table import clean_values, finish_table, parse_numbers
from utils.data.validation import Problem
from utils.errors import ConfigError, DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
HAM_COLUMNS = ("lesion_id", "image_id", "dx")
CHECK_HINT = "Run `python -m utils check <data dir>` for the full report (it also decodes images)."


# ---------------------------------------------------------------------------------------------
# small helpers


def _read_text_table(path: Path) -> pd.DataFrame:
    """A CSV or tab-separated file (Dataverse .tab / no extension), every value as a string."""
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        header = handle.readline()
    separator = "\t" if "\t" in header else ","
    try:
        frame = pd.read_csv(path, sep=separator, dtype=str, keep_default_na=False,
                            encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty file (no header, no rows); download it again") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as error:
        reason = " ".join(str(error).split())[:200]
        raise DataError(f"{path}: cannot be parsed as a table ({reason}); use the file as "
                        "distributed") from None
    if not isinstance(frame.index, pd.RangeIndex):  # pandas took a first column as the index
        raise DataError(f"{path}: its rows have more fields than its header "
                        f"({len(frame.columns)} columns); use the file as distributed")
    frame.columns = [str(column).strip() for column in frame.columns]
    return frame.fillna("").astype(str).apply(lambda column: column.str.strip())


def _require_rows(frame: pd.DataFrame, path: Path) -> None:
    """A table with a header and no row is an error, not an empty dataset."""
    if len(frame) == 0:
        raise DataError(f"{path}: has a header but no rows (an incomplete download or a "
                        "truncated copy); download it again or restore the file as distributed")


def _require_usable(kept: pd.DataFrame, problems: list[Problem], n_rows: int, path: Path,
                    folders: list[Path], found_any: bool) -> None:
    """Every listed image missing, or every row invalid: one error saying what to do."""
    if len(kept):
        return
    if not found_any:
        searched = ", ".join(str(folder) for folder in folders)
        raise DataError(
            f"{path}: none of its {n_rows} listed image(s) has a file (no .jpg/.jpeg/.png under "
            f"{searched}): the images are not there yet. Download and unzip the image archives "
            f"into {path.parent} (see data/README.md), or point at the folder that holds them")
    listed = "\n  ".join(str(problem) for problem in problems[:validation.MAX_LISTED])
    more = len(problems) - validation.MAX_LISTED
    raise DataError(
        f"{path}: no usable row: every one of its {n_rows} row(s) has a problem; fix the file "
        "or use it as distributed. First problems:\n  " + listed
        + (f"\n  ... and {more} more" if more > 0 else ""))


def index_images(folders: list[Path]) -> dict[str, str]:
    """{image id (file stem): absolute path} of every image under `folders` (recursive).

    The same id found twice (Kaggle ships lower-case copies of the HAM10000 folders) resolves to
    the lexicographically smallest path, so the official upper-case folder wins, deterministically.
    """
    found: dict[str, str] = {}
    for folder in folders:
        for directory, _, files in os.walk(folder):
            for name in files:
                stem, extension = os.path.splitext(name)
                if extension.lower() not in IMAGE_EXTENSIONS or name.startswith("."):
                    continue
                path = os.path.abspath(os.path.join(directory, name))
                if stem not in found or path < found[stem]:
                    found[stem] = path
    return found


def _image_folders(root: Path, patterns: tuple[str, ...]) -> list[Path]:
    """Sub-folders of root matching one of `patterns` (case-insensitive prefix), else [root]."""
    matches = sorted(
        child for child in root.iterdir()
        if child.is_dir() and child.name.lower().startswith(tuple(p.lower() for p in patterns))
    )
    return matches or [root]


def _describe(folders: list[Path]) -> str:
    return ", ".join(f"{folder.name}/" for folder in folders)


def _scan_rows(
    rows: pd.DataFrame, info: DatasetInfo, path: Path, root: Path, folders: list[Path],
    n_rows: int, earlier: Sequence[Problem] = (),
) -> tuple[pd.DataFrame, list[Problem]]:
    """Shared checks on rows holding image_id and label: ids, duplicates, labels, files.

    `rows.index` holds each row's 0-based position in the table file `path` (for line numbers;
    `n_rows` rows in all, `earlier` the problems found before). Rows with a problem are dropped
    from the returned frame; the problems name them. DataError when no row is usable."""
    source = path.name
    ids, labels, positions = rows["image_id"].tolist(), rows["label"].tolist(), rows.index.tolist()
    found = index_images(folders)
    problems = list(earlier) + (
        validation.check_image_ids(ids, source, positions)
        + validation.check_duplicates(ids, source, positions)
        + validation.check_labels(labels, ids, info.classes, source, positions)
        + validation.check_missing_images(ids, found, source, _describe(folders), positions)
    )
    duplicated = pd.Series(ids).duplicated().to_numpy()
    keep = [
        i for i, (image_id, label) in enumerate(zip(ids, labels))
        if not validation.unsafe_image_id(image_id) and not duplicated[i]
        and label in info.classes and image_id in found
    ]
    kept = rows.iloc[keep].copy()
    kept["path"] = [found[image_id] for image_id in kept["image_id"]]
    problems += validation.check_inside(kept["path"].tolist(), root, source, kept.index.tolist())
    inside = np.array([validation.is_inside(path, root) for path in kept["path"]], dtype=bool)
    kept = kept.loc[inside]  # a boolean array: an empty one selects zero rows, not zero columns
    problems = validation.sort_problems(problems)
    _require_usable(kept, problems, n_rows, path, folders, bool(found))
    return kept, problems


# ---------------------------------------------------------------------------------------------
# HAM10000


def find_ham_metadata(root: Path) -> Path | None:
    """The HAM10000 metadata file in `root` (CSV, Dataverse tab file without extension, .tab)."""
    for name in HAM_METADATA_NAMES:
        if (root / name).is_file():
            return root / name
    return None


def scan_ham10000(root: str | os.PathLike) -> tuple[pd.DataFrame, list[Problem]]:
    """HAM10000 TABLE of the valid rows and the list of problems (raises only on layout errors)."""
    root = _existing_folder(root)
    metadata = find_ham_metadata(root)
    if metadata is None:
        raise DataError(f"{root}: no HAM10000 metadata file; looked for "
                        f"{', '.join(HAM_METADATA_NAMES)}. Download it (python -m utils download "
                        "ham10000) or point at the folder that holds it.")
    frame = _read_text_table(metadata)
    validation.require_columns(frame.columns, HAM_COLUMNS, metadata.name)
    _require_rows(frame, metadata)
    rows = pd.DataFrame({
        "image_id": frame["image_id"],
        "label": frame["dx"].str.lower(),
        "lesion_id": frame["lesion_id"].where(frame["lesion_id"] != "", frame["image_id"]),
        "age": frame["age"] if "age" in frame else np.nan,
        "sex": clean_values(frame["sex"]) if "sex" in frame else np.nan,
        "site": clean_values(frame["localization"]) if "localization" in frame else np.nan,
    })
    if "dx_type" in frame:
        rows["dx_type"] = frame["dx_type"]
    folders = _image_folders(root, (HAM_IMAGE_PREFIX,))
    kept, problems = _scan_rows(rows, datasets.HAM10000, metadata, root, folders, len(frame))
    return finish_table(kept, datasets.HAM10000, source=str(metadata)), problems


def read_ham10000(root: str | os.PathLike) -> pd.DataFrame:
    """HAM10000 as distributed (see module docstring); raises DataError listing every problem."""
    table, problems = scan_ham10000(root)
    validation.raise_problems(problems, f"HAM10000 at {root}", CHECK_HINT)
    return table


# ---------------------------------------------------------------------------------------------
# ISIC 2019 training


def scan_isic2019(root: str | os.PathLike) -> tuple[pd.DataFrame, list[Problem]]:
    """ISIC 2019 training TABLE of the valid rows and the problems."""
    root = _existing_folder(root)
    truth_path = root / ISIC2019_GROUND_TRUTH
    if not truth_path.is_file():
        raise DataError(f"{root}: no {ISIC2019_GROUND_TRUTH}; download the ISIC 2019 training "
                        "ground truth (python -m utils download isic2019).")
    truth = _read_text_table(truth_path)
    one_hot_columns = datasets.ISIC2019.classes + datasets.ISIC2019_EXTRA_CLASSES
    validation.require_columns(truth.columns, ("image",) + datasets.ISIC2019.classes,
                               truth_path.name)
    _require_rows(truth, truth_path)
    columns = tuple(c for c in one_hot_columns if c in truth.columns)
    labels, problems = validation.one_hot_labels(truth, columns, truth_path.name)
    rows = pd.DataFrame({"image_id": truth["image"], "label": labels})
    rows["lesion_id"], rows["age"], rows["sex"], rows["site"] = (
        rows["image_id"], np.nan, np.nan, np.nan)
    rows = _merge_isic2019_metadata(rows, root / ISIC2019_METADATA)
    rows = rows[rows["label"].notna()]  # one-hot problems are reported already
    folders = _image_folders(root, (ISIC2019_INPUT,))
    kept, problems = _scan_rows(rows, datasets.ISIC2019, truth_path, root, folders, len(truth),
                                problems)
    return finish_table(kept, datasets.ISIC2019, source=str(truth_path)), problems


def _merge_isic2019_metadata(rows: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Add lesion_id / age / sex / site from the optional metadata CSV (empty lesion -> image)."""
    if not path.is_file():
        warnings.warn(f"{path.name} not found beside the ground truth: lesion_id falls back to "
                      "the image id (no lesion grouping) and age/sex/site are unknown",
                      stacklevel=3)
        return rows
    meta = _read_text_table(path)
    validation.require_columns(meta.columns, ("image",), path.name)
    meta = meta.drop_duplicates("image").set_index("image")
    aligned = meta.reindex(rows["image_id"])
    if "lesion_id" in aligned:
        lesion = aligned["lesion_id"].fillna("").to_numpy(dtype=object)
        rows["lesion_id"] = np.where(lesion == "", rows["image_id"].to_numpy(dtype=object), lesion)
    if "age_approx" in aligned:
        rows["age"] = parse_numbers(aligned["age_approx"])
    if "sex" in aligned:
        rows["sex"] = clean_values(aligned["sex"]).to_numpy(dtype=object)
    if "anatom_site_general" in aligned:
        rows["site"] = clean_values(aligned["anatom_site_general"]).to_numpy(dtype=object)
    return rows


def read_isic2019(root: str | os.PathLike) -> pd.DataFrame:
    """ISIC 2019 training set (8 classes); raises DataError listing every problem."""
    table, problems = scan_isic2019(root)
    validation.raise_problems(problems, f"ISIC 2019 at {root}", CHECK_HINT)
    return table


# ---------------------------------------------------------------------------------------------
# ISIC 2018 Task 3 validation / test


def isic2018_ground_truth(root: Path, subset: str) -> Path:
    key = subset.lower()
    if key not in ISIC2018_TASK3_SUBSETS:
        raise ConfigError(f"unknown ISIC 2018 Task 3 subset {subset!r}; use one of "
                         f"{', '.join(ISIC2018_TASK3_SUBSETS)}")
    return root / ISIC2018_TASK3_GROUND_TRUTH.format(subset=ISIC2018_TASK3_SUBSETS[key])


def scan_isic2018_test(
    root: str | os.PathLike, subset: str = "test"
) -> tuple[pd.DataFrame, list[Problem]]:
    """ISIC 2018 Task 3 TABLE (HAM10000 codes) of the valid rows and the problems."""
    root = _existing_folder(root)
    truth_path = isic2018_ground_truth(root, subset)
    if not truth_path.is_file():
        nested = root / truth_path.stem  # the ground-truth zip unpacks into a folder of its name
        if (nested / truth_path.name).is_file():
            truth_path = nested / truth_path.name
        else:
            raise DataError(f"{root}: no {truth_path.name}; download the ISIC 2018 Task 3 "
                            f"{subset} ground truth (python -m utils download isic2018).")
    truth = _read_text_table(truth_path)
    columns = datasets.ISIC2018_TASK3_COLUMNS
    validation.require_columns(truth.columns, ("image",) + columns, truth_path.name)
    _require_rows(truth, truth_path)
    labels, problems = validation.one_hot_labels(truth, columns, truth_path.name)
    positions = [i for i, label in enumerate(labels) if label is not None]
    rows = pd.DataFrame({
        "image_id": truth["image"].iloc[positions].to_numpy(),
        "label": [datasets.ISIC2018_TASK3_TO_HAM[labels[i]] for i in positions],
    }, index=positions)
    rows["lesion_id"], rows["age"], rows["sex"], rows["site"] = (
        rows["image_id"], np.nan, np.nan, np.nan)
    subset_name = ISIC2018_TASK3_SUBSETS[subset.lower()]
    folders = _image_folders(root, (ISIC2018_TASK3_INPUT.format(subset=subset_name),))
    kept, problems = _scan_rows(rows, datasets.ISIC2018_TASK3, truth_path, root, folders,
                                len(truth), problems)
    table = finish_table(
        kept, datasets.ISIC2018_TASK3, source=str(truth_path), subset=subset.lower()
    )
    return table, problems


def read_isic2018_test(
    root: str | os.PathLike, subset: str = "test", exclude: bool = False
) -> pd.DataFrame:
    """ISIC 2018 Task 3 test (or validation) set with HAM10000 class codes.

    ISIC_0035068 stays in the table unless `exclude` (the official scorer ignores it): see
    `exclude_isic2018_scoring`."""
    table, problems = scan_isic2018_test(root, subset)
    validation.raise_problems(problems, f"ISIC 2018 Task 3 {subset} at {root}", CHECK_HINT)
    return exclude_isic2018_scoring(table) if exclude else table


def exclude_isic2018_scoring(table: pd.DataFrame) -> pd.DataFrame:
    """The table without the images the official ISIC 2018 scorer excludes."""
    kept = table[~table["image_id"].isin(datasets.ISIC2018_TASK3_EXCLUDED)].reset_index(drop=True)
    kept.attrs = dict(table.attrs)
    return kept


# ---------------------------------------------------------------------------------------------
# DermaMNIST (.npz, numpy only)

# ---------------------------------------------------------------------------------------------
# layout detection


def _existing_folder(root: str | os.PathLike) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found; download the dataset (see "
                        "data/README.md) or set SKIN_DATA_DIR / pass the right folder.")
    return root.resolve()


def _isic2018_scan(subset: str) -> Callable[[Path], tuple[pd.DataFrame, list[Problem]]]:
    return lambda root: scan_isic2018_test(root, subset)


SCANNERS: Mapping[str, Callable[[Path], tuple[pd.DataFrame, list[Problem]]]] = {
    "ham10000": scan_ham10000,
    "isic2019": scan_isic2019,
    "isic2018_task3_test": _isic2018_scan("test"),
    "isic2018_task3_validation": _isic2018_scan("validation"),
}
ALIASES = {"ham": "ham10000", "isic2018": "isic2018_task3_test",
           "isic2018test": "isic2018_task3_test", "isic2018validation": "isic2018_task3_validation"}
LOOKED_FOR = (
    f"{' / '.join(HAM_METADATA_NAMES)} (HAM10000), {ISIC2019_GROUND_TRUTH} (ISIC 2019), "
    f"{' / '.join(isic2018_ground_truth(Path(), s).name for s in ISIC2018_TASK3_SUBSETS)} "
    "(ISIC 2018 Task 3), dermamnist*.npz (DermaMNIST)"
)


def dataset_key(name: str) -> str:
    """Normalise a --dataset name to a SCANNERS key (or 'dermamnist')."""
    key = name.lower().replace("-", "_")
    compact = key.replace("_", "")
    if compact in ALIASES:
        return ALIASES[compact]
    for known in (*SCANNERS, "dermamnist"):
        if known.replace("_", "") == compact:
            return known
    raise ConfigError(f"unknown dataset {name!r}; known: {', '.join((*SCANNERS, 'dermamnist'))}")


def detect_layout(root: str | os.PathLike) -> str:
    """The dataset key of the layout found in `root`; DataError listing what it looked for."""
    root = Path(root)
    if root.is_file() and root.suffix == ".npz":
        return "dermamnist"
    root = _existing_folder(root)
    found = []
    if find_ham_metadata(root):
        found.append("ham10000")
    if (root / ISIC2019_GROUND_TRUTH).is_file():
        found.append("isic2019")
    for subset, key in (("test", "isic2018_task3_test"),
                        ("validation", "isic2018_task3_validation")):
        truth = isic2018_ground_truth(root, subset)
        if truth.is_file() or (root / truth.stem / truth.name).is_file():
            found.append(key)
    if not found and sorted(root.glob("dermamnist*.npz")):
        found.append("dermamnist")
    if not found:
        raise DataError(f"{root}: no known dataset layout; looked for {LOOKED_FOR}. "
                        "See data/README.md for the expected folder trees.")
    if len(found) > 1:
        raise DataError(f"{root}: several layouts found ({', '.join(found)}); pass --dataset "
                        "(or dataset=) to choose one.")
    return found[0]


def scan_table(
    root: str | os.PathLike, dataset: str | None = None
) -> tuple[pd.DataFrame, list[Problem]]:
    """TABLE of the valid rows and every cheap problem, for any supported layout."""
    key = dataset_key(dataset) if dataset else detect_layout(root)
    if key == "dermamnist":
        return dermamnist.read_dermamnist(dermamnist.find_npz(Path(root))), []
    return SCANNERS[key](Path(root))


def read_table(root: str | os.PathLike, dataset: str | None = None) -> pd.DataFrame:
    """TABLE of the dataset in `root` (layout auto-detected unless `dataset` names it)."""
    table, problems = scan_table(root, dataset)
    validation.raise_problems(problems, f"{table.attrs.get('dataset', 'dataset')} at {root}",
                              CHECK_HINT)
    return table

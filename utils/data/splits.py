"""Leakage-free splits: lesion-grouped, class-stratified train/val/test and k-fold manifests.

HAM10000 holds 2-6 images of many lesions (`lesion_id`); a split by image puts photographs of
one lesion on both sides and inflates every metric. Here a whole lesion goes to one set, and
every class appears in every set.

A SPLIT MANIFEST is the TABLE (utils.data.readers) plus a column `split` in {"train", "val", "test"}
(and `fold` for k-fold). `paper_counter_split` reproduces the published protocol of
Villa-Pulgarin et al. (2022) for the leakage audit only: it ignores lesions and leaks.

Command: `python -m utils split <data dir> <out manifest.csv> [--seed] [--fractions ...]
[--kfold K] [--protocol lesion|paper]`.
"""
from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from utils import paths
from utils.arguments import Fractions, checked, non_negative_int, positive_int
from utils.data import datasets
from utils.data.manifest import SPLITS, save_manifest
from utils.errors import ConfigError, DataError

DEFAULT_FRACTIONS: tuple[float, float, float] = (0.7, 0.15, 0.15)


# ---------------------------------------------------------------------------------------------
# lesion-level view


def _class_streams(table: pd.DataFrame) -> list[tuple[str, int]]:
    """(label, random-stream id) per class: the stream is the dataset class index where known,
    so one class's shuffle does not change when another class is absent."""
    order = datasets.class_order(table["label"])
    if "label_index" in table:
        index = table.drop_duplicates("label").set_index("label")["label_index"]
        return [(label, int(index[label])) for label in order]
    return [(label, rank) for rank, label in enumerate(order)]


def lesion_labels(table: pd.DataFrame) -> pd.DataFrame:
    """One row per lesion: lesion_id, label (majority of its images), n_images; sorted by id.

    Lesions are single-class in HAM10000; a mixed lesion takes its majority label (ties: the
    earlier class in dataset order) and a warning names how many lesions were mixed."""
    for column in ("lesion_id", "label"):
        if column not in table:
            raise DataError(f"table has no {column!r} column; read it with utils.data.readers")
    order = {label: rank for rank, label in enumerate(datasets.class_order(table["label"]))}
    counts = table.groupby(["lesion_id", "label"], sort=False).size().reset_index(name="n")
    counts["rank"] = counts["label"].map(order)
    counts = counts.sort_values(["lesion_id", "n", "rank"], ascending=[True, False, True])
    mixed = counts["lesion_id"].duplicated(keep=False)
    if mixed.any():
        examples = counts.loc[mixed, "lesion_id"].unique()
        warnings.warn(f"{len(examples)} lesion(s) have images with different labels (e.g. "
                      f"{', '.join(map(str, examples[:3]))}); each goes to one set with its "
                      "majority label", stacklevel=2)
    lesions = counts.drop_duplicates("lesion_id").set_index("lesion_id")["label"]
    sizes = table.groupby("lesion_id").size()
    frame = pd.DataFrame({"lesion_id": lesions.index, "label": lesions.to_numpy(),
                          "n_images": sizes.reindex(lesions.index).to_numpy()})
    return frame.sort_values("lesion_id", kind="stable").reset_index(drop=True)


def _check_fractions(fractions: Sequence[float]) -> np.ndarray:
    values = np.asarray(fractions, dtype=float)
    if values.shape != (3,) or (values < 0).any() or not np.isclose(values.sum(), 1.0) \
            or values[0] <= 0:
        raise ConfigError(f"fractions must be three non-negative numbers (train, val, test) "
                         f"summing to 1 with train > 0, got {list(fractions)}")
    return values


def _allocate_class(
    sizes: np.ndarray, fractions: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Set index (position in `fractions`: train, val, test -- or k folds) per lesion of one class.

    Lesions are shuffled; the first ones seed each active set (smallest fraction first) so every
    set gets the class; each further lesion goes to the set furthest below its image-count target.
    """
    active = [s for s in np.argsort(fractions, kind="stable") if fractions[s] > 0]
    targets = fractions * sizes.sum()
    assigned = np.zeros(len(fractions))
    result = np.empty(len(sizes), dtype=np.int64)
    for step, lesion in enumerate(rng.permutation(len(sizes))):
        if step < len(active):
            chosen = active[step]
        else:
            deficit = np.where(fractions > 0, targets - assigned, -np.inf)
            chosen = int(np.argmax(deficit))
        result[lesion] = chosen
        assigned[chosen] += sizes[lesion]
    return result


def lesion_split(
    table: pd.DataFrame, fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0,
    group_by: str = "lesion_id",
) -> pd.DataFrame:
    """The table with a `split` column: lesion-grouped, every class in every set, about
    `fractions` of each class's images per set. Deterministic for a seed, whatever the row order.

    group_by: the column whose values are kept together (default lesion_id; e.g.
    "duplicate_group" from utils.data.duplicates also joins lesions with near-identical images).
    Raises DataError naming the class when it has fewer lesions than sets to fill."""
    values = _check_fractions(fractions)
    if group_by not in table:
        raise DataError(f"table has no {group_by!r} column to group the split by")
    units = table.assign(lesion_id=table[group_by].astype(str))
    lesions = lesion_labels(units)
    needed = int((values > 0).sum())
    where: dict[str, str] = {}
    for label, stream in _class_streams(table):
        members = lesions[lesions["label"] == label]
        if members.empty:
            continue
        if len(members) < needed:
            raise DataError(
                f"class {label!r} has {len(members)} lesion(s) ({members['n_images'].sum()} "
                f"image(s)); a lesion-grouped split needs at least {needed} to put the class in "
                "every set. Add data, drop the class, or use fewer sets "
                "(e.g. --fractions 0.8 0.2 0)."
            )
        rng = np.random.default_rng([seed, stream])
        sets = _allocate_class(members["n_images"].to_numpy(), values, rng)
        where.update(zip(members["lesion_id"], (SPLITS[s] for s in sets)))
    out = table.copy()
    out["split"] = units["lesion_id"].map(where).to_numpy(dtype=object)
    out.attrs = dict(table.attrs, protocol="lesion", seed=seed, fractions=list(values),
                     group_by=group_by)
    return out


# ---------------------------------------------------------------------------------------------
# k-fold


def lesion_kfold(
    table: pd.DataFrame, k: int = 5, seed: int = 0, test_fraction: float = 0.0
) -> pd.DataFrame:
    """The table with `fold` (0..k-1) and `split`: lesion-grouped, class-stratified k folds.

    Same allocation as `lesion_split` with k equal fractions: per class, lesions shuffled with
    the seed, one lesion seeds each fold, the rest go to the fold furthest below its image
    target -- so every class is in every fold (DataError naming the class when it has < k
    lesions). With `test_fraction` > 0 a lesion-grouped test set is held out first (split
    "test", fold -1); every other row has split "train" -- `fold_view(manifest, f)` turns fold f
    into "val"."""
    if k < 2:
        raise ConfigError(f"k must be at least 2, got {k}")
    if test_fraction > 0:
        base = lesion_split(table, (1.0 - test_fraction, 0.0, test_fraction), seed)
    else:
        base = table.copy()
        base["split"] = "train"
    pool = base[base["split"] == "train"]
    lesions = lesion_labels(pool)
    fold_of: dict[str, int] = {}
    for label, stream in _class_streams(pool):
        members = lesions[lesions["label"] == label]
        if members.empty:
            continue
        if len(members) < k:
            raise DataError(f"class {label!r} has {len(members)} lesion(s) outside the test set; "
                            f"{k} folds need at least {k}. Use a smaller --kfold or drop the "
                            "class.")
        rng = np.random.default_rng([seed, stream, k])
        folds = _allocate_class(members["n_images"].to_numpy(), np.full(k, 1.0 / k), rng)
        fold_of.update(zip(members["lesion_id"], folds.tolist()))
    out = base.copy()
    out["fold"] = np.array([fold_of[lesion] if split == "train" else -1
                            for lesion, split in zip(out["lesion_id"], out["split"])],
                           dtype=np.int64)
    out.attrs = dict(table.attrs, protocol="lesion_kfold", seed=seed, k=k)
    return out


def fold_view(manifest: pd.DataFrame, fold: int) -> pd.DataFrame:
    """A k-fold manifest with fold `fold` as split "val" and the other folds as "train"."""
    if "fold" not in manifest:
        raise DataError("manifest has no 'fold' column; write it with lesion_kfold / --kfold")
    out = manifest.copy()
    training = out["split"] != "test"
    out.loc[training, "split"] = np.where(out.loc[training, "fold"] == fold, "val", "train")
    return out


# ---------------------------------------------------------------------------------------------
# the published protocol (leaks: audit only)


def paper_counter(n_files: int) -> list[str]:
    """The published split of one class folder of `n_files` files, in listing order.

    Villa-Pulgarin et al. (2022) increment two counters b and c for every file; a file goes to
    train while b != 6 and c != 12; when b == 6 and c == 12 they decrement b (so the file goes
    to test and the NEXT file, with b == 6 again, to validation); b == 6 sends a file to
    validation (b restarts), c == 12 to test (c restarts). About 75 / 16.7 / 8.3 % of a folder
    goes to train / val / test; e.g. 6705 files -> 5030 / 1117 / 558 (their printed counts)."""
    b = c = 0
    sets = []
    for _ in range(n_files):
        b += 1
        c += 1
        chosen = "train" if b != 6 and c != 12 else None
        if b == 6 and c == 12:
            b -= 1
        if b == 6:
            b, chosen = 0, "val"
        if c == 12:
            c, chosen = 0, "test"
        sets.append(chosen)
    return sets


def paper_counter_split(files: pd.DataFrame | Sequence[str | os.PathLike]) -> pd.DataFrame:
    """The published counter split (`paper_counter`) over each class folder, for the LEAKAGE
    AUDIT ONLY: it ignores lesion_id, so images of one lesion (and, after the published
    whole-folder augmentation, augmented copies of one image) land in train and val/test.

    `files`: a TABLE or manifest (uses `label`) whose rows, per class, are in FOLDER ORDER (the
    published order was Google Drive's listing; utils.augmentation.published documents the
    order this repository uses), or a list of paths whose parent folder names the class, in
    listing order. Returns the rows in their input order with `split` and `paper_counter`
    (1-based position of the file in its class folder) added."""
    if isinstance(files, pd.DataFrame):
        frame = files.copy()
    else:
        listed = [Path(f) for f in files]
        frame = pd.DataFrame({"path": [str(f) for f in listed],
                              "label": [f.parent.name for f in listed]})
    if "label" not in frame:
        raise DataError("paper_counter_split needs a 'label' column (the class folder)")
    position = frame.groupby("label", sort=False).cumcount()
    frame["paper_counter"] = (position + 1).astype(np.int64)
    split = pd.Series("", index=frame.index, dtype=object)
    for _, rows in frame.groupby("label", sort=False):
        split[rows.index] = paper_counter(len(rows))
    frame["split"] = split
    frame.attrs = dict(getattr(files, "attrs", {}), protocol="paper_counter_LEAKS")
    return frame


# ---------------------------------------------------------------------------------------------
# summaries


def summarise(manifest: pd.DataFrame) -> pd.DataFrame:
    """Images and lesions per class and split (for printing)."""
    groups = manifest.groupby(["label", "split"])
    table = pd.DataFrame({"images": groups.size(), "lesions": groups["lesion_id"].nunique()})
    wide = table.unstack("split", fill_value=0)
    columns = [(m, s) for m in ("images", "lesions") for s in SPLITS if (m, s) in wide.columns]
    wide = wide[columns]
    return wide.reindex(datasets.class_order(manifest["label"]))


# ---------------------------------------------------------------------------------------------
# command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data_dir", type=Path, help="dataset folder (read only)")
    parser.add_argument("out", type=Path, help="manifest CSV to write (outside the data folder)")
    parser.add_argument("--dataset", default=None, type=checked(dataset_key, "dataset"),
                        help="layout (default: detected)")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--fractions", type=float, nargs=3, default=list(DEFAULT_FRACTIONS),
                        action=Fractions, metavar=("TRAIN", "VAL", "TEST"),
                        help="image fractions per set")
    parser.add_argument("--kfold", type=at_least_two, default=None, metavar="K",
                        help="K lesion-grouped folds over train+val; TEST fraction held out")
    parser.add_argument("--protocol", choices=("lesion", "paper"), default="lesion",
                        help="'paper' = the published counter split (LEAKS: audit only)")
    parser.add_argument("--group-by", choices=("lesion", "near_duplicates"), default="lesion",
                        help="split unit: lesions, or lesions joined by near-identical images "
                             "(utils.data.duplicates; reads every image once)")


def at_least_two(text: str) -> int:
    """--kfold: an integer >= 2."""
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"{value} folds: use 2 or more")
    return value


def dataset_key(name: str) -> str:
    from utils.data import readers

    return readers.dataset_key(name)


def run(args: argparse.Namespace) -> int:
    manifest, out = _make_manifest(args)
    print(summarise(manifest).to_string())
    print(f"{len(manifest)} images, {manifest['lesion_id'].nunique()} lesions -> "
          f"{paths.display(out)}")
    return 0


def _make_manifest(args: argparse.Namespace) -> tuple[pd.DataFrame, Path]:
    from utils.data import readers

    data_dir, out = Path(args.data_dir).resolve(), Path(args.out).resolve()
    if data_dir == out or data_dir in out.parents:
        raise DataError(f"{out}: refusing to write inside the raw data folder {data_dir}; "
                        "write the manifest under data/interim/ or a run folder")
    table = readers.read_table(data_dir, args.dataset)
    if args.protocol == "paper":
        warnings.warn("--protocol paper ignores lesion_id and leaks (audit only)", stacklevel=1)
        manifest = paper_counter_split(table)
    elif args.kfold:
        manifest = lesion_kfold(table, args.kfold, args.seed, test_fraction=args.fractions[2])
    elif args.group_by == "near_duplicates":
        from utils.data import duplicates

        grouped, _ = duplicates.with_duplicate_groups(table)
        manifest = lesion_split(grouped, args.fractions, args.seed,
                                group_by=duplicates.GROUP_COLUMN)
    else:
        manifest = lesion_split(table, args.fractions, args.seed)
    save_manifest(manifest, out)
    return manifest, out

"""Offline class balancing: augment the TRAINING split only, per class, up to a target.

`python -m utils balance <manifest.csv> <out_dir> [--target max|N|cls=N,...] [--seed S]
[--image-size N] [--workers W]` reads a split manifest (utils.data.manifest), draws augmented
copies of
training images only, and writes into `out_dir` (raw data is never touched):

- `images/<label>/<source_image_id>__aug<j>.jpg`: the j-th augmented copy (j = 0, 1, ...) of that
  training image (JPEG, quality 95). Names are unique because image ids are.
- `balanced_manifest.csv`: the BALANCED MANIFEST: every row of the split manifest (augmented=False)
  then one row per augmented image (split="train", augmented=True, source_image_id, transforms =
  JSON list of the transforms applied, lesion_id/age/sex/site copied from the source).
- `balance.json`: the settings (seed, augmentation config, targets) the images were made with.

How the k-th new image (k = 0, 1, ...) of a class is made: the class's training images are sorted by
image_id and shuffled with a generator seeded by (seed, class); the source is image k mod n of that
order (round robin, so every training image is used before any is used twice) and the transforms
are drawn from a generator seeded by (seed, class, k). Everything is therefore fixed by the seed:
workers may finish in any order and the output is byte-identical. Each image is written atomically;
a re-run skips the images already on disk (idempotent) and a killed run resumes where it stopped.
The manifest is written last, once every image exists, and only if its content changed. The
same out_dir accepts another target (a larger one adds images, a smaller one deletes the extra
ones) but refuses another seed, augmentation config or training set.
"""
from __future__ import annotations

import argparse
import json
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from utils import fileio, paths
from utils.arguments import checked, non_negative_int, positive_int
from utils.augmentation.transforms import (
    AugmentConfig,
    apply_augmentation,
    sample_augmentation,
    transforms_json,
)
from utils.data import datasets, images
from utils.data.manifest import augmented_mask, check_manifest, load_manifest
from utils.errors import DataError

BALANCE_COLUMNS: tuple[str, ...] = ("augmented", "source_image_id", "transforms")
MANIFEST_NAME = "balanced_manifest.csv"
SETTINGS_NAME = "balance.json"
IMAGES_DIR = "images"
JPEG_QUALITY = 95
# Below this many images one thread does it (a pool is not worth starting).
MIN_PARALLEL_TASKS = 16

Target = int | str | Mapping[str, int]  # N, "max", or {class: N}


# --- reading and checking ------------------------------------------------------------------------

def parse_target(text: str) -> Target:
    """CLI target: "max", "N", or "cls=N,cls=N"."""
    text = text.strip()
    if text == "max":
        return "max"
    if text.isdigit():
        return int(text)
    targets: dict[str, int] = {}
    for item in text.split(","):
        name, _, number = item.partition("=")
        if not number.strip().isdigit():
            raise ValueError(f"bad --target {text!r}: use max, a number, or cls=N,cls=N")
        targets[name.strip()] = int(number)
    return targets


def resolve_targets(train_counts: Mapping[str, int], target: Target) -> dict[str, int]:
    """Per-class target counts; raise DataError for a target below a class's training count."""
    if target == "max":
        wanted = {c: max(train_counts.values()) for c in train_counts}
    elif isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        wanted = {c: int(target) for c in train_counts}
    elif isinstance(target, Mapping):
        unknown = sorted(set(target) - set(train_counts))
        if unknown:
            raise DataError(f"target names unknown class(es) {unknown}; "
                            f"classes: {list(train_counts)}")
        wanted = {c: int(target.get(c, n)) for c, n in train_counts.items()}
    else:
        raise ValueError(f"target must be 'max', an int or a {{class: int}} dict, got {target!r}")
    for name, count in train_counts.items():
        if wanted[name] < count:
            raise DataError(
                f"target {wanted[name]} for class {name!r} is below its {count} training images; "
                "balancing only adds images: raise the target, use 'max', or give per-class "
                "targets (cls=N,...) for the classes to grow"
            )
    return wanted


def train_counts_of(frame: pd.DataFrame, source: str = "manifest") -> dict[str, int]:
    """Training images per class (original rows only), in class order; every class must have one."""
    original = frame.loc[~augmented_mask(frame)]
    counts = original.loc[original["split"] == "train", "label"].value_counts()
    classes = datasets.class_order(original["label"])
    empty = [c for c in classes if counts.get(c, 0) == 0]
    if empty:
        raise DataError(
            f"{source}: class(es) {empty} have no training image, so nothing can be augmented for "
            "them; re-split with more data for these classes or drop them"
        )
    return {c: int(counts[c]) for c in classes}


# --- the plan: which image is made from which source with which transforms ----------------------

def _class_key(label: str) -> int:
    return zlib.crc32(label.encode("utf-8"))  # stable across processes (unlike hash())


def source_order(train_ids: Sequence[str], label: str, seed: int) -> list[str]:
    """Training image ids of one class in the seeded round-robin order."""
    ordered = sorted(train_ids)
    rng = np.random.default_rng([seed, _class_key(label)])
    return [ordered[i] for i in rng.permutation(len(ordered))]


def image_rng(seed: int, label: str, k: int) -> np.random.Generator:
    """The generator of the k-th augmented image of a class."""
    return np.random.default_rng([seed, _class_key(label), k])


def plan_rows(frame: pd.DataFrame, targets: Mapping[str, int], out_dir: Path, seed: int,
              config: AugmentConfig) -> pd.DataFrame:
    """The augmented rows (deterministic, no pixels read), in class order then k."""
    original = frame.loc[~augmented_mask(frame)]
    train = original.loc[original["split"] == "train"]
    records = {r["image_id"]: r for r in train.to_dict("records")}
    rows = []
    for label, target in targets.items():
        order = source_order(train.loc[train["label"] == label, "image_id"].tolist(), label, seed)
        for k in range(target - len(order)):
            source_id = order[k % len(order)]
            image_id = f"{source_id}__aug{k // len(order)}"
            row = dict(records[source_id])
            row.update(
                image_id=image_id,
                path=str(out_dir / IMAGES_DIR / label / f"{image_id}.jpg"),
                split="train", augmented=True, source_image_id=source_id,
                transforms=transforms_json(sample_augmentation(image_rng(seed, label, k), config)),
            )
            rows.append(row)
    return pd.DataFrame(rows, columns=list(original.columns) + [
        c for c in BALANCE_COLUMNS if c not in original.columns])


def balanced_frame(frame: pd.DataFrame, augmented_rows: pd.DataFrame) -> pd.DataFrame:
    """Original rows (augmented=False) followed by the augmented rows."""
    original = frame.loc[~augmented_mask(frame)].copy()
    original["augmented"] = False
    original["source_image_id"] = ""
    original["transforms"] = ""
    parts = [original] + ([augmented_rows[original.columns]] if len(augmented_rows) else [])
    combined = pd.concat(parts, ignore_index=True)
    combined["augmented"] = combined["augmented"].astype(bool)
    return combined


# --- making the images ---------------------------------------------------------------------------

@contextmanager
def _opencv_threads(count: int) -> Iterator[None]:
    """OpenCV's own thread pool limited to `count` while our pool runs (one worker per core
    already); the caller's setting is restored after."""
    import cv2

    previous = cv2.getNumThreads()
    cv2.setNumThreads(count)
    try:
        yield
    finally:
        cv2.setNumThreads(previous)


def make_image(task: tuple[str, str, str]) -> str:
    """Read the source, apply the recorded transforms, write the JPEG atomically
    (fileio.replace_with_bytes: never a half-written image; `remove_partial_files` clears the
    `.part` files of a killed run). The destination folder exists (run_tasks makes them).
    Decoding, warping and encoding run in OpenCV without the GIL, so threads scale."""
    import cv2

    source, destination, transforms = task
    rgb = apply_augmentation(images.read_rgb_fast(source), json.loads(transforms))
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise DataError(f"{destination}: JPEG encoding failed")
    fileio.replace_with_bytes(destination, encoded.data)
    return destination


def remove_partial_files(folder: Path) -> int:
    """Delete leftover `.part` files of a killed run; return how many."""
    leftovers = list(folder.rglob(".*.part")) if folder.is_dir() else []
    for path in leftovers:
        path.unlink()
    return len(leftovers)


def remove_stray_images(folder: Path, planned: set[str]) -> int:
    """Delete augmented images of an earlier, larger target that the plan no longer holds."""
    stray = [p for p in folder.rglob("*__aug*.jpg") if str(p) not in planned] \
        if folder.is_dir() else []
    for path in stray:
        path.unlink()
    return len(stray)


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_tasks(tasks: list[tuple[str, str, str]], workers: int, progress: bool = True) -> int:
    """Make the images over `workers` threads (OpenCV decodes, warps and encodes without the
    GIL, so threads use every core with no process start-up: 2 processes were slower than 1 on
    600 small images because spawning interpreters cost more than the work). The output does not
    depend on `workers`: every task is fixed by the plan."""
    from tqdm.auto import tqdm

    for folder in {os.path.dirname(destination) for _, destination, _ in tasks}:
        os.makedirs(folder, exist_ok=True)
    bar = tqdm(total=len(tasks), desc="balance", unit="img", disable=not progress or not tasks)
    done = 0
    with _opencv_threads(1):
        if workers <= 1 or len(tasks) < MIN_PARALLEL_TASKS:
            for task in tasks:
                make_image(task)
                done += 1
                bar.update()
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="balance") as pool:
                for _ in pool.map(make_image, tasks):
                    done += 1
                    bar.update()
    bar.close()
    return done


# --- the command ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class BalanceResult:
    """What one `balance` call did."""

    out_dir: Path
    manifest_path: Path | None  # None while incomplete (max_new stopped it early)
    targets: dict[str, int]  # training images per class after balancing
    created: int  # images written by this call
    skipped: int  # images already on disk
    complete: bool


def _check_settings(out_dir: Path, settings: dict[str, Any]) -> None:
    path = out_dir / SETTINGS_NAME
    if path.is_file():
        previous = json.loads(path.read_text())
        if previous != settings:
            changed = sorted(k for k in settings if previous.get(k) != settings[k])
            raise DataError(
                f"{path}: {paths.display(out_dir)} holds a balance made with other settings "
                f"({', '.join(changed)} differ); choose another out_dir or delete this one"
            )


def _write_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text() != text:
        fileio.write_text(path, text)


def balance(manifest: pd.DataFrame | str | os.PathLike, out_dir: str | os.PathLike | None = None,
            target: Target = "max", seed: int = 0, image_size: int | None = None,
            config: AugmentConfig | None = None, workers: int | None = None,
            max_new: int | None = None, progress: bool = True,
            name: str = "balanced") -> BalanceResult:
    """Balance the training split of `manifest` into `out_dir` (see the module docstring).

    `out_dir` defaults to data/processed/<name>. `image_size` (shorter side, pixels) overrides
    config.image_size. `max_new` stops after that many new images (the run stays resumable).
    """
    source = str(manifest) if not isinstance(manifest, pd.DataFrame) else \
        manifest.attrs.get("source", "manifest")
    frame = manifest if isinstance(manifest, pd.DataFrame) else load_manifest(manifest)
    check_manifest(frame, source)
    config = config or AugmentConfig()
    if image_size is not None:
        config = AugmentConfig.from_dict({**config.to_dict(), "image_size": image_size})
    out_dir = Path(out_dir) if out_dir is not None else paths.processed_dir() / name
    out_dir = out_dir.resolve()
    _refuse_raw_folder(frame, out_dir)
    targets = resolve_targets(train_counts_of(frame, source), target)

    is_train = (frame["split"] == "train") & ~augmented_mask(frame)
    train_ids = frame.loc[is_train, ["image_id", "label"]]
    settings = {"seed": seed, "config": config.to_dict(), "jpeg_quality": JPEG_QUALITY,
                "train_digest": _digest(train_ids)}
    _check_settings(out_dir, settings)
    rows = plan_rows(frame, targets, out_dir, seed, config)
    check_sources(frame, rows, source)  # before anything is written
    if not (out_dir / SETTINGS_NAME).is_file():
        fileio.write_json(out_dir / SETTINGS_NAME, settings)

    remove_partial_files(out_dir / IMAGES_DIR)
    todo = [task for task in _tasks(frame, rows) if not Path(task[1]).is_file()]
    skipped = len(rows) - len(todo)
    if max_new is not None:
        todo = todo[:max_new]
    created = run_tasks(todo, workers or default_workers(), progress)

    complete = skipped + created == len(rows)
    manifest_path = None
    if complete:
        remove_stray_images(out_dir / IMAGES_DIR, set(rows["path"]))
        manifest_path = out_dir / MANIFEST_NAME
        combined = balanced_frame(frame, rows)
        audit_balanced_manifest(combined, check_files=False)
        if "dataset" not in combined.columns and frame.attrs.get("dataset"):
            combined["dataset"] = frame.attrs["dataset"]  # as utils.data.splits.save_manifest does
        _write_if_changed(manifest_path, combined.to_csv(index=False, lineterminator="\n"))
    return BalanceResult(out_dir, manifest_path, targets, created, skipped, complete)


def balance_manifest(manifest: pd.DataFrame | str | os.PathLike, out_dir: str | os.PathLike | None,
                     target: Target | None = "max", seed: int = 0, **options: Any) -> pd.DataFrame:
    """`balance(...)` then the balanced manifest as a DataFrame (target None means "max")."""
    result = balance(manifest, out_dir, target="max" if target is None else target, seed=seed,
                     **options)
    if result.manifest_path is None:
        raise DataError(f"{result.out_dir}: balancing stopped early (max_new); "
                        "run it again to finish")
    frame = load_manifest(result.manifest_path)
    if isinstance(manifest, pd.DataFrame):
        frame.attrs.update(manifest.attrs)
    return frame


def check_sources(frame: pd.DataFrame, rows: pd.DataFrame, source: str) -> None:
    """One DataError listing every source image of the plan that the image gate refuses."""
    from utils.data import images, validation

    if not len(rows):
        return
    paths_of = frame.set_index("image_id")["path"]
    used = sorted({str(paths_of[s]) for s in rows["source_image_id"]})
    _, problems = images.screen(used, progress=False)
    validation.raise_problems(
        problems, f"the training images of {source} to augment",
        "Restore these files, or remove their rows and split again; nothing was written.")


def _tasks(frame: pd.DataFrame, rows: pd.DataFrame) -> list[tuple[str, str, str]]:
    source_path = frame.set_index("image_id")["path"]
    return [(str(source_path[s]), p, t) for s, p, t in
            zip(rows["source_image_id"], rows["path"], rows["transforms"])]


def _digest(frame: pd.DataFrame) -> str:
    text = frame.sort_values("image_id").to_csv(index=False)
    return f"{zlib.crc32(text.encode()):08x}"


def _refuse_raw_folder(frame: pd.DataFrame, out_dir: Path) -> None:
    """out_dir must not contain the source images (raw data is never written into)."""
    for folder in {Path(p).resolve().parent for p in frame["path"]}:
        if folder == out_dir or out_dir in folder.parents:
            raise DataError(f"out_dir {out_dir} contains the source images ({folder}); raw data is "
                            "never written into: choose a folder under data/processed")


# --- checks and summaries for notebooks and tests ------------------------------------------------

def audit_balanced_manifest(frame: pd.DataFrame, check_files: bool = True) -> dict[str, int]:
    """Raise DataError unless every augmented row derives from a training image and lesion.

    Checks: augmented rows are split="train"; their source is an original training row with the
    same label and lesion; no validation/test image or lesion contributed; no lesion spans
    splits among originals; ids and paths are unique; (check_files) every augmented file exists.
    Returns counts for display.
    """
    check_manifest(frame, "balanced manifest")
    is_aug = augmented_mask(frame)
    original, augmented = frame.loc[~is_aug], frame.loc[is_aug]
    if (augmented["split"] != "train").any():
        first = augmented.loc[augmented["split"] != "train", "image_id"].iloc[0]
        raise DataError(f"augmented row {first!r} is not in the training split")
    by_id = original.set_index("image_id")
    unknown = sorted(set(augmented["source_image_id"]) - set(by_id.index))
    if unknown:
        raise DataError(f"augmented images come from unknown source image(s) {unknown[:5]}")
    sources = by_id.loc[augmented["source_image_id"]]
    held_out = original.loc[original["split"] != "train"]
    bad = sources.index[sources["split"].to_numpy() != "train"]
    if len(bad):
        raise DataError(f"{len(bad)} augmented image(s) derive from validation/test image(s), e.g. "
                        f"{bad[0]!r}: rebalance from a clean split manifest")
    leaked = set(augmented["lesion_id"]) & set(held_out["lesion_id"])
    leaked |= set(sources["lesion_id"]) & set(held_out["lesion_id"])
    if leaked:
        raise DataError(f"lesion(s) {sorted(leaked)[:5]} appear both in augmented training "
                        "images and in validation/test: the split is not lesion-grouped; "
                        "re-split by lesion_id")
    if (sources["label"].to_numpy() != augmented["label"].to_numpy()).any() or \
            (sources["lesion_id"].to_numpy() != augmented["lesion_id"].to_numpy()).any():
        raise DataError("an augmented row's label or lesion_id differs from its source image's")
    spans = original.groupby("lesion_id")["split"].nunique()
    if (spans > 1).any():
        raise DataError(f"lesion {spans.index[spans > 1][0]!r} spans several splits; "
                        "re-split by lesion_id")
    if frame["path"].duplicated().any():
        duplicate = frame.loc[frame["path"].duplicated(), "path"].iloc[0]
        raise DataError(f"path {duplicate} appears twice in the manifest")
    if check_files:
        missing = [p for p in augmented["path"] if not Path(p).is_file()]
        if missing:
            raise DataError(f"{len(missing)} augmented image(s) missing, e.g. {missing[0]}; re-run "
                            "`python -m utils balance` with the same settings to resume")
    return {"original": len(original), "augmented": len(augmented),
            "sources": int(augmented["source_image_id"].nunique()),
            "held_out_lesions": int(held_out["lesion_id"].nunique())}


def class_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """Per class: train_original, train_augmented, train_total, val, test (class order)."""
    is_aug = augmented_mask(frame)
    table = pd.DataFrame({
        "train_original": frame.loc[~is_aug & (frame["split"] == "train"), "label"].value_counts(),
        "train_augmented": frame.loc[is_aug, "label"].value_counts(),
        "val": frame.loc[frame["split"] == "val", "label"].value_counts(),
        "test": frame.loc[frame["split"] == "test", "label"].value_counts(),
    }).reindex(datasets.class_order(frame["label"])).fillna(0).astype(int)
    table.insert(2, "train_total", table["train_original"] + table["train_augmented"])
    table.index.name = "label"
    return table


# --- CLI -----------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", help="split manifest CSV (from `python -m utils split`)")
    parser.add_argument("out_dir", help="output folder, e.g. data/processed/ham10000-balanced")
    parser.add_argument("--target", default="max", type=checked(parse_target, "target"),
                        help="max (match the largest training class), N, or cls=N,cls=N "
                             "(default max)")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--image-size", type=positive_int, default=None,
                        help="resize so the shorter side has this many pixels before augmenting")
    parser.add_argument("--workers", type=positive_int, default=None,
                        help="threads (default: all cores)")
    parser.add_argument("--colour-constancy", action="store_true",
                        help="apply Shades of Gray (p=6) before augmenting")


def run(args: argparse.Namespace) -> int:
    config = AugmentConfig(colour_constancy=args.colour_constancy)
    result = balance(args.manifest, args.out_dir, target=args.target, seed=args.seed,
                     image_size=args.image_size, config=config, workers=args.workers)
    frame = load_manifest(result.manifest_path)
    print(class_counts(frame).to_string())
    print(f"created {result.created}, already present {result.skipped}; manifest: "
          f"{paths.display(result.manifest_path)}")
    return 0

"""The embedded default dataset: seeded, dermoscopy-like synthetic lesions in the exact HAM10000
(Harvard Dataverse) and ISIC 2019 training layouts.

Used on a fresh clone and in CI, where the real data (non-commercial licence, gigabytes) is
absent. This module writes the folders, CSV files and masks of each layout, resumes an
interrupted run and is the `python -m utils synthetic` command. utils.data.synthetic_plan plans
the lesions (class proportions, 1-4 images per lesion as in HAM10000), utils.data.synthetic_looks
sets how hard the classes are (look-alike blending, label noise: stated in each folder's
README.md), utils.data.synthetic_drawing draws the pixels (each class's look is described there)
and utils.data.synthetic_metadata draws the metadata columns. Two runs with one seed write
byte-identical files;
per-lesion seeds derive from (seed, index), so the work is split over threads without changing
the output.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from itertools import repeat
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from utils import fileio, paths
from utils.arguments import non_negative_int, positive_int
from utils.data import synthetic_looks as looks
from utils.data.datasets import (
    HAM10000,
    ISIC2019,
    ISIC2019_EXTRA_CLASSES,
    ISIC2019_TO_HAM,
    MASK_SUFFIX,
)
from utils.data.datasets import HAM_IMAGE_PARTS as HAM_PARTS
from utils.data.datasets import HAM_MASKS_SYNTHETIC as HAM_MASKS
from utils.data.datasets import HAM_METADATA_CSV as HAM_METADATA
from utils.data.datasets import ISIC2019_GROUND_TRUTH as ISIC_GROUND_TRUTH
from utils.data.datasets import ISIC2019_INPUT as ISIC_INPUT
from utils.data.datasets import ISIC2019_METADATA as ISIC_METADATA
from utils.data.synthetic_drawing import (
    draw_lesion,
    encode_jpeg,
    encode_png,
    render_view,
    seeded_rng,
)
from utils.data.synthetic_metadata import HAM_DX_TYPES, HAM_SEXES, HAM_SITES, ISIC_SITES, choice
from utils.data.synthetic_metadata import age as draw_age
from utils.data.synthetic_plan import Lesion, assign_looks, plan_lesions
from utils.errors import ConfigError, DataError

GENERATOR_VERSION = 2  # bump whenever the drawing changes: stamps of older folders stop matching
STAMP_NAME = "synthetic.json"  # parameters of the run that wrote the folder (enables resume)

# Layout names (HAM_PARTS, HAM_MASKS, HAM_METADATA, ISIC_*) come from utils.data.datasets.
HAM_METADATA_COLUMNS = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization")
ISIC_METADATA_COLUMNS = ("image", "age_approx", "anatom_site_general", "lesion_id", "sex")

# ----------------------------------------------------------------------------------------------
# Writing: one task per lesion, run in worker threads
# ----------------------------------------------------------------------------------------------
def _write(path: str, data: bytes) -> None:
    """Atomic write (temporary file + rename) without fsync: a crash leaves no half file, and a
    dataset this cheap to regenerate does not need 2,000 disk flushes."""
    with fileio.atomic_path(path) as tmp:
        tmp.write_bytes(data)


@dataclass(frozen=True)
class Target:
    """Where one dataset's files go and how its views are rendered."""

    seed: int
    image_size: tuple[int, int]  # (width, height)
    image_path: Callable[[int, str], Path]  # (image index, image id) -> JPEG path
    mask_path: Callable[[str], Path] | None  # image id -> mask PNG path; None: no masks
    resume: bool  # skip a lesion whose files all exist (written with the same parameters)


def write_lesion(lesion: Lesion, target: Target) -> int:
    """Render every view of a lesion and write it atomically; returns the number of images."""
    ids = zip(lesion.image_indices, lesion.image_ids, strict=True)
    images = [target.image_path(index, image_id) for index, image_id in ids]
    masks = [target.mask_path(i) for i in lesion.image_ids] if target.mask_path else []
    if target.resume and all(path.exists() for path in (*images, *masks)):
        return len(images)
    frame_size = max(64, min(target.image_size))
    look = lesion.look or looks.Look(lesion.style, None, 0.0, False)
    drawing = draw_lesion(look.look, seeded_rng(target.seed, 1, lesion.index), frame_size,
                          look.mix, look.mix_weight, seeded_rng(target.seed, 4, lesion.index))
    for view, (index, image_path) in enumerate(zip(lesion.image_indices, images, strict=True)):
        view_rng = seeded_rng(target.seed, 2, index)
        rgb, mask = render_view(drawing, view_rng, target.image_size, first=view == 0)
        _write(image_path, encode_jpeg(rgb))
        if masks:
            _write(masks[view], encode_png(mask))
    return len(images)


def write_lesions(
    lesions: list[Lesion], target: Target, workers: int, desc: str, progress: bool
) -> None:
    """Write all lesions in `workers` threads (OpenCV and NumPy release the GIL for the pixel
    work), with a progress bar. Threads rather than processes: no start-up cost, no
    `if __name__ == "__main__"` guard needed in the caller's script, nothing forked from a
    process running TensorFlow. The output does not depend on `workers`."""
    n_images = sum(len(lesion.image_ids) for lesion in lesions)
    with tqdm(total=n_images, desc=desc, unit="img", disable=not progress) as bar:
        if workers <= 1:
            for lesion in lesions:
                bar.update(write_lesion(lesion, target))
            return
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for done in pool.map(write_lesion, lesions, repeat(target)):
                bar.update(done)


def _prepare_root(root: Path, stamp: dict) -> bool:
    """Create `root` or check it holds an earlier run with the same parameters; True to resume."""
    stamp_path = root / STAMP_NAME
    if stamp_path.is_file():
        previous = json.loads(stamp_path.read_text(encoding="utf-8"))
        previous.pop("complete", None)
        if previous != stamp:
            raise DataError(
                f"{paths.display(root)} holds a synthetic dataset made with other parameters "
                f"({previous}); choose another folder or delete this one"
            )
        return True
    if root.exists() and any(root.iterdir()):
        raise DataError(
            f"{paths.display(root)} is not empty and holds no {STAMP_NAME}: refusing to write a "
            "synthetic dataset over other files; choose an empty or new folder"
        )
    root.mkdir(parents=True, exist_ok=True)
    return False


def _check_size(image_size: Sequence[int]) -> tuple[int, int]:
    width, height = (int(x) for x in image_size)
    if width < 32 or height < 32:
        raise ConfigError(
            f"image_size must be at least 32x32 pixels (width, height), got {image_size}"
        )
    return width, height


def _generate(
    root: Path,
    kind: str,
    lesions: list[Lesion],
    target: Target,
    difficulty: dict[str, float],
    workers: int | None,
    progress: bool,
    write_tables: Callable[[], None],
) -> Path:
    """Write the images (resuming an earlier run with the same parameters), then the tables,
    the looks of the images and the folder's README, then mark the folder complete."""
    stamp = {
        "generator": "utils.data.synthetic",
        "version": GENERATOR_VERSION,
        "dataset": kind,
        "n_images": sum(len(lesion.image_ids) for lesion in lesions),
        "seed": target.seed,
        "image_size": list(target.image_size),
        **difficulty,
    }
    resume = _prepare_root(root, stamp)
    fileio.write_json(root / STAMP_NAME, {**stamp, "complete": False})
    workers = min(os.cpu_count() or 1, 2) if workers is None else max(1, workers)
    write_lesions(lesions, replace(target, resume=resume), workers, f"synthetic {kind}", progress)
    write_tables()
    table = looks.looks_table(lesions, [lesion.look for lesion in lesions])
    fileio.write_csv(root / looks.LOOKS_CSV, table)
    fileio.write_text(root / looks.README_NAME, looks.readme(kind, stamp, table))
    fileio.write_json(root / STAMP_NAME, {**stamp, "complete": True})
    return root


def generate_ham10000(
    root: str | os.PathLike,
    n_images: int = 1000,
    seed: int = 0,
    image_size: tuple[int, int] = (200, 150),
    workers: int | None = None,
    progress: bool = True,
    label_noise: float = looks.LABEL_NOISE,
    overlap: float = looks.OVERLAP,
    min_class_share: float = looks.MIN_CLASS_SHARE,
) -> Path:
    """Write a synthetic dataset in the exact HAM10000 layout; returns `root`.

    root/HAM10000_metadata.csv (lesion_id,image_id,dx,dx_type,age,sex,localization),
    JPEGs split over root/HAM10000_images_part_1/ and _part_2/, binary lesion masks in
    root/HAM10000_segmentations_lesion/<image_id>_segmentation.png. `image_size` is
    (width, height); `workers` (threads) defaults to min(2, CPUs). Re-running with the same
    arguments skips the images already written (a killed run resumes). `label_noise` and
    `overlap` set how hard the classes are, `min_class_share` the smallest share of images a class
    gets (utils.data.synthetic_looks; looks.EASY: separable classes in the official
    proportions). The folder's README.md states them and the realised noise;
    synthetic_looks.csv lists the look of every image."""
    root = Path(root)
    image_size = _check_size(image_size)
    looks.check_difficulty(label_noise, overlap, min_class_share)
    first_part = (n_images + 1) // 2

    def image_path(index: int, image_id: str) -> Path:
        return root / HAM_PARTS[0 if index < first_part else 1] / f"{image_id}.jpg"

    def mask_path(image_id: str) -> Path:
        return root / HAM_MASKS / f"{image_id}{MASK_SUFFIX}"

    def write_tables(lesions: list[Lesion], rng: np.random.Generator) -> None:
        rows = []
        for lesion in lesions:
            dx_type, sex = choice(rng, HAM_DX_TYPES[lesion.label]), choice(rng, HAM_SEXES)
            age, site = draw_age(rng, lesion.style), choice(rng, HAM_SITES)
            rows += [
                (lesion.lesion_id, i, lesion.label, dx_type, age, sex, site)
                for i in lesion.image_ids
            ]
        frame = pd.DataFrame(rows, columns=list(HAM_METADATA_COLUMNS))
        frame["age"] = frame["age"].astype("Int64")
        fileio.write_csv(root / HAM_METADATA, frame)

    rng = seeded_rng(seed, 0, 0)
    lesions = plan_lesions(HAM10000.counts, {c: c for c in HAM10000.classes}, n_images, rng,
                           min_class_share)
    lesions = assign_looks(lesions, seed, label_noise, overlap)
    target = Target(seed, image_size, image_path, mask_path, resume=False)
    difficulty = looks.stamp_settings(label_noise, overlap, min_class_share)
    return _generate(root, "ham10000", lesions, target, difficulty, workers, progress,
                     lambda: write_tables(lesions, rng))


def generate_isic2019(
    root: str | os.PathLike,
    n_images: int = 400,
    seed: int = 0,
    image_size: tuple[int, int] = (200, 150),
    workers: int | None = None,
    progress: bool = True,
    label_noise: float = looks.LABEL_NOISE,
    overlap: float = looks.OVERLAP,
    min_class_share: float = looks.MIN_CLASS_SHARE,
) -> Path:
    """Write a synthetic dataset in the ISIC 2019 training layout; returns `root`.

    root/ISIC_2019_Training_Input/<image>.jpg, ISIC_2019_Training_GroundTruth.csv (one-hot
    floats over ISIC2019.classes + UNK, UNK always 0.0) and ISIC_2019_Training_Metadata.csv
    (image,age_approx,anatom_site_general,lesion_id,sex; some lesion_id empty, as in the real
    file). Classes follow ISIC 2019's proportions; each reuses the look of its HAM10000 class
    (SCC has its own). `label_noise`, `overlap`, `min_class_share`: as in generate_ham10000."""
    root = Path(root)
    image_size = _check_size(image_size)
    looks.check_difficulty(label_noise, overlap, min_class_share)
    styles = {c: "scc" if c == "SCC" else ISIC2019_TO_HAM[c] for c in ISIC2019.classes}

    def image_path(index: int, image_id: str) -> Path:
        return root / ISIC_INPUT / f"{image_id}.jpg"

    def write_tables(lesions: list[Lesion], rng: np.random.Generator) -> None:
        truth, meta = [], []
        columns = [*ISIC2019.classes, *ISIC2019_EXTRA_CLASSES]
        for lesion in lesions:
            sex = choice(rng, {"male": 0.52, "female": 0.45, "": 0.03})
            age, site = draw_age(rng, lesion.style), choice(rng, ISIC_SITES)
            lesion_id = (
                "" if len(lesion.image_ids) == 1 and rng.random() < 0.1 else lesion.lesion_id
            )
            for image_id in lesion.image_ids:
                truth.append([image_id] + [1.0 if c == lesion.label else 0.0 for c in columns])
                meta.append((image_id, age, site, lesion_id, sex))
        # lesions hold consecutive image numbers in order: the rows are sorted by image id
        fileio.write_csv(root / ISIC_GROUND_TRUTH, pd.DataFrame(truth, columns=["image", *columns]))
        fileio.write_csv(
            root / ISIC_METADATA, pd.DataFrame(meta, columns=list(ISIC_METADATA_COLUMNS))
        )

    rng = seeded_rng(seed, 0, 0)
    lesions = assign_looks(plan_lesions(ISIC2019.counts, styles, n_images, rng, min_class_share),
                           seed, label_noise, overlap)
    target = Target(seed, image_size, image_path, None, resume=False)
    difficulty = looks.stamp_settings(label_noise, overlap, min_class_share)
    return _generate(root, "isic2019", lesions, target, difficulty, workers, progress,
                     lambda: write_tables(lesions, rng))


GENERATORS: Mapping[str, tuple[Callable[..., Path], str, int]] = {
    # --dataset -> (generator, default folder name, default number of images)
    "ham10000": (generate_ham10000, "HAM10000", 1000),
    "isic2019": (generate_isic2019, "ISIC_2019", 400),
}


# ----------------------------------------------------------------------------------------------
# Command line: python -m utils synthetic
# ----------------------------------------------------------------------------------------------
def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(x) for x in text.lower().split("x"))
        if min(width, height) < 1:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected WIDTHxHEIGHT such as 200x150, got {text!r}"
        ) from None
    return width, height


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dest",
        nargs="?",
        type=Path,
        default=None,
        help="output folder (default: data/synthetic/HAM10000 or data/synthetic/ISIC_2019)",
    )
    parser.add_argument(
        "--dataset",
        choices=sorted(GENERATORS),
        default="ham10000",
        help="layout to write (default: ham10000)",
    )
    parser.add_argument(
        "--n-images",
        type=positive_int,
        default=None,
        help="number of images (default: 1000 for ham10000, 400 for isic2019)",
    )
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="random seed (default: 0)")
    parser.add_argument(
        "--image-size",
        type=_size,
        default=(200, 150),
        metavar="WxH",
        help="image width x height in pixels (default: 200x150)",
    )
    parser.add_argument("--workers", type=positive_int, default=None,
                        help="threads (default: min(2, CPUs))")
    parser.add_argument(
        "--label-noise",
        type=_fraction,
        default=looks.LABEL_NOISE,
        help="probability that a lesion is drawn in a look-alike class's look, keeping its label "
        f"(default: {looks.LABEL_NOISE})",
    )
    parser.add_argument(
        "--overlap",
        type=_fraction,
        default=looks.OVERLAP,
        help="largest weight of a look-alike class's look blended into each lesion "
        f"(default: {looks.OVERLAP})",
    )
    parser.add_argument(
        "--min-class-share",
        type=_fraction,
        default=looks.MIN_CLASS_SHARE,
        help="smallest share of the images any class gets; 0 keeps the official proportions "
        f"(default: {looks.MIN_CLASS_SHARE})",
    )
    parser.add_argument(
        "--easy",
        action="store_true",
        help="separable classes in the official proportions: --label-noise 0 --overlap 0 "
        "--min-class-share 0 (tests, demonstrations)",
    )


def run(args: argparse.Namespace) -> int:
    generate, folder, default_n = GENERATORS[args.dataset]
    dest = args.dest if args.dest is not None else paths.synthetic_dir() / folder
    n_images = args.n_images if args.n_images is not None else default_n
    difficulty = dict(looks.EASY) if args.easy else dict(
        label_noise=args.label_noise, overlap=args.overlap, min_class_share=args.min_class_share)
    root = generate(
        dest, n_images=n_images, seed=args.seed, image_size=args.image_size, workers=args.workers,
        **difficulty,
    )
    print(f"wrote {n_images} synthetic {args.dataset} images to {paths.display(root)}")
    return 0

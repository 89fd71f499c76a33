"""The embedded default dataset: seeded, dermoscopy-like synthetic lesions in the exact HAM10000
(Harvard Dataverse) and ISIC 2019 training layouts.

Used on a fresh clone and in CI, where the real data (non-commercial licence, gigabytes) is
absent. This module plans the lesions (classes in the official proportions, 1-4 images per lesion
as in HAM10000), writes the folders, CSV files and masks of each layout, resumes an interrupted
run and is the `python -m utils synthetic` command; utils.data.synthetic_drawing draws the pixels
(each class's look is described there). Two runs with one seed write byte-identical files;
per-lesion seeds derive from (seed, index), so the work is split over threads without changing
the output.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from itertools import repeat
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from utils import fileio, paths
from utils.arguments import non_negative_int, positive_int
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
from utils.errors import ConfigError, DataError

GENERATOR_VERSION = 1  # bump whenever the drawing changes: stamps of older folders stop matching
STAMP_NAME = "synthetic.json"  # parameters of the run that wrote the folder (enables resume)
MIN_LESIONS_PER_CLASS = 5  # where n_images allows: rare classes still reach every split
IMAGE_PREFIX = "SYN_"
LESION_PREFIX = "SYNL_"

# Layout names (HAM_PARTS, HAM_MASKS, HAM_METADATA, ISIC_*) come from utils.data.datasets.
HAM_METADATA_COLUMNS = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization")
ISIC_METADATA_COLUMNS = ("image", "age_approx", "anatom_site_general", "lesion_id", "sex")

# Images per lesion in HAM10000 (1: 5514, 2: 1423, 3: 490, 4+: 43 lesions), capped at 4.
GROUP_SIZE_PROBS = (0.738, 0.190, 0.066, 0.006)

# Metadata distributions measured on the official HAM10000_metadata.csv.
HAM_DX_TYPES: Mapping[str, Mapping[str, float]] = MappingProxyType(
    {
        "akiec": {"histo": 1.0},
        "bcc": {"histo": 1.0},
        "bkl": {"histo": 0.70, "consensus": 0.24, "confocal": 0.06},
        "df": {"consensus": 0.52, "histo": 0.48},
        "mel": {"histo": 1.0},
        "nv": {"follow_up": 0.55, "histo": 0.37, "consensus": 0.08},
        "vasc": {"consensus": 0.53, "histo": 0.47},
    }
)
HAM_SEXES: Mapping[str, float] = MappingProxyType({"male": 0.54, "female": 0.455, "unknown": 0.005})
HAM_SITES: Mapping[str, float] = MappingProxyType(
    {
        "back": 2192,
        "lower extremity": 2077,
        "trunk": 1404,
        "upper extremity": 1118,
        "abdomen": 1022,
        "face": 745,
        "chest": 407,
        "foot": 319,
        "unknown": 234,
        "neck": 168,
        "scalp": 128,
        "hand": 90,
        "ear": 56,
        "genital": 48,
        "acral": 7,
    }
)
ISIC_SITES: Mapping[str, float] = MappingProxyType(
    {
        "anterior torso": 0.25,
        "lower extremity": 0.2,
        "head/neck": 0.18,
        "upper extremity": 0.15,
        "posterior torso": 0.12,
        "lateral torso": 0.02,
        "palms/soles": 0.02,
        "oral/genital": 0.01,
        "": 0.05,
    }
)
# Mean age by appearance style (HAM10000 overall: 52 +- 17).
MEAN_AGE: Mapping[str, float] = MappingProxyType(
    {"akiec": 67, "bcc": 66, "bkl": 64, "df": 52, "mel": 61, "nv": 47, "vasc": 50, "scc": 70}
)


# ----------------------------------------------------------------------------------------------
# Planning: which lesion has which class and how many images
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Lesion:
    """One synthetic lesion: its label, appearance style and the images (views) showing it."""

    index: int  # 0-based lesion number (seeds its appearance)
    lesion_id: str
    label: str  # class code of the dataset (e.g. "mel" or "MEL")
    style: str  # appearance key (a HAM10000 code, or "scc")
    image_indices: tuple[int, ...]  # 0-based image numbers (seed each view)
    image_ids: tuple[str, ...]


def allocate_counts(total: int, weights: Mapping[str, float], minimum: int) -> dict[str, int]:
    """Split `total` over classes in proportion to `weights` (largest remainder), with at least
    `minimum` per class (taken from the largest classes)."""
    if total < minimum * len(weights):
        raise ConfigError(
            f"{total} images cannot hold {minimum} per class for {len(weights)} classes"
        )
    labels = list(weights)
    share = np.array([weights[c] for c in labels], dtype=float)
    exact = share / share.sum() * total
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: total - counts.sum()]:
        counts[i] += 1
    for i in range(len(labels)):
        while counts[i] < minimum:
            counts[int(np.argmax(counts))] -= 1
            counts[i] += 1
    return dict(zip(labels, counts.tolist(), strict=True))


def split_into_groups(total: int, min_groups: int, rng: np.random.Generator) -> list[int]:
    """Group sizes (1-4, as in HAM10000) summing to `total`, at least `min_groups` groups."""
    sizes: list[int] = []
    remaining = total
    while remaining > 0:
        still_needed = max(0, min_groups - len(sizes) - 1)  # groups to keep room for after this one
        largest = max(1, min(len(GROUP_SIZE_PROBS), remaining - still_needed))
        size = int(rng.choice(len(GROUP_SIZE_PROBS), p=GROUP_SIZE_PROBS)) + 1
        sizes.append(min(size, largest))
        remaining -= sizes[-1]
    return sizes


def plan_lesions(
    counts: Mapping[str, int], styles: Mapping[str, str], n_images: int, rng: np.random.Generator
) -> list[Lesion]:
    """Lesions with HAM10000-like group sizes, class proportions from `counts`, shuffled."""
    minimum = min(MIN_LESIONS_PER_CLASS, n_images // len(counts))
    if minimum < 1:
        raise ConfigError(
            f"n_images={n_images} is too small: need at least one image for each of the "
            f"{len(counts)} classes"
        )
    per_class = allocate_counts(n_images, counts, minimum)
    groups = [
        (label, size)
        for label in counts
        for size in split_into_groups(per_class[label], minimum, rng)
    ]
    order = rng.permutation(len(groups))
    lesions, next_image = [], 0
    for number, g in enumerate(order):
        label, size = groups[g]
        indices = tuple(range(next_image, next_image + size))
        next_image += size
        lesions.append(
            Lesion(
                index=number,
                lesion_id=f"{LESION_PREFIX}{number + 1:07d}",
                label=label,
                style=styles[label],
                image_indices=indices,
                image_ids=tuple(f"{IMAGE_PREFIX}{i + 1:07d}" for i in indices),
            )
        )
    return lesions


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
    drawing = draw_lesion(lesion.style, seeded_rng(target.seed, 1, lesion.index), frame_size)
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


def _choice(rng: np.random.Generator, weights: Mapping[str, float]) -> str:
    keys = list(weights)
    p = np.array([weights[k] for k in keys], dtype=float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _age(rng: np.random.Generator, style: str) -> float:
    """Age in 5-year steps (as in HAM10000), 0-85; about 0.6 % unknown."""
    if rng.random() < 0.006:
        return math.nan
    return float(np.clip(round(rng.normal(MEAN_AGE[style], 14) / 5) * 5, 0, 85))


def _generate(
    root: Path,
    kind: str,
    lesions: list[Lesion],
    target: Target,
    workers: int | None,
    progress: bool,
    write_tables: Callable[[], None],
) -> Path:
    """Write the images (resuming an earlier run with the same parameters), then the tables,
    then mark the folder complete in its stamp."""
    stamp = {
        "generator": "utils.data.synthetic",
        "version": GENERATOR_VERSION,
        "dataset": kind,
        "n_images": sum(len(lesion.image_ids) for lesion in lesions),
        "seed": target.seed,
        "image_size": list(target.image_size),
    }
    resume = _prepare_root(root, stamp)
    fileio.write_json(root / STAMP_NAME, {**stamp, "complete": False})
    workers = min(os.cpu_count() or 1, 2) if workers is None else max(1, workers)
    write_lesions(lesions, replace(target, resume=resume), workers, f"synthetic {kind}", progress)
    write_tables()
    fileio.write_json(root / STAMP_NAME, {**stamp, "complete": True})
    return root


def generate_ham10000(
    root: str | os.PathLike,
    n_images: int = 1000,
    seed: int = 0,
    image_size: tuple[int, int] = (200, 150),
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Write a synthetic dataset in the exact HAM10000 layout; returns `root`.

    root/HAM10000_metadata.csv (lesion_id,image_id,dx,dx_type,age,sex,localization),
    JPEGs split over root/HAM10000_images_part_1/ and _part_2/, binary lesion masks in
    root/HAM10000_segmentations_lesion/<image_id>_segmentation.png. `image_size` is
    (width, height); `workers` (threads) defaults to min(2, CPUs). Re-running with the same
    arguments skips the images already written (a killed run resumes)."""
    root = Path(root)
    image_size = _check_size(image_size)
    first_part = (n_images + 1) // 2

    def image_path(index: int, image_id: str) -> Path:
        return root / HAM_PARTS[0 if index < first_part else 1] / f"{image_id}.jpg"

    def mask_path(image_id: str) -> Path:
        return root / HAM_MASKS / f"{image_id}{MASK_SUFFIX}"

    def write_tables(lesions: list[Lesion], rng: np.random.Generator) -> None:
        rows = []
        for lesion in lesions:
            dx_type, sex = _choice(rng, HAM_DX_TYPES[lesion.label]), _choice(rng, HAM_SEXES)
            age, site = _age(rng, lesion.style), _choice(rng, HAM_SITES)
            rows += [
                (lesion.lesion_id, i, lesion.label, dx_type, age, sex, site)
                for i in lesion.image_ids
            ]
        frame = pd.DataFrame(rows, columns=list(HAM_METADATA_COLUMNS))
        frame["age"] = frame["age"].astype("Int64")
        fileio.write_csv(root / HAM_METADATA, frame)

    rng = seeded_rng(seed, 0, 0)
    lesions = plan_lesions(HAM10000.counts, {c: c for c in HAM10000.classes}, n_images, rng)
    target = Target(seed, image_size, image_path, mask_path, resume=False)
    return _generate(
        root, "ham10000", lesions, target, workers, progress, lambda: write_tables(lesions, rng)
    )


def generate_isic2019(
    root: str | os.PathLike,
    n_images: int = 400,
    seed: int = 0,
    image_size: tuple[int, int] = (200, 150),
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Write a synthetic dataset in the ISIC 2019 training layout; returns `root`.

    root/ISIC_2019_Training_Input/<image>.jpg, ISIC_2019_Training_GroundTruth.csv (one-hot
    floats over ISIC2019.classes + UNK, UNK always 0.0) and ISIC_2019_Training_Metadata.csv
    (image,age_approx,anatom_site_general,lesion_id,sex; some lesion_id empty, as in the real
    file). Classes follow ISIC 2019's proportions; each reuses the look of its HAM10000 class
    (SCC has its own)."""
    root = Path(root)
    image_size = _check_size(image_size)
    styles = {c: "scc" if c == "SCC" else ISIC2019_TO_HAM[c] for c in ISIC2019.classes}

    def image_path(index: int, image_id: str) -> Path:
        return root / ISIC_INPUT / f"{image_id}.jpg"

    def write_tables(lesions: list[Lesion], rng: np.random.Generator) -> None:
        truth, meta = [], []
        columns = [*ISIC2019.classes, *ISIC2019_EXTRA_CLASSES]
        for lesion in lesions:
            sex = _choice(rng, {"male": 0.52, "female": 0.45, "": 0.03})
            age, site = _age(rng, lesion.style), _choice(rng, ISIC_SITES)
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
    lesions = plan_lesions(ISIC2019.counts, styles, n_images, rng)
    target = Target(seed, image_size, image_path, None, resume=False)
    return _generate(
        root, "isic2019", lesions, target, workers, progress, lambda: write_tables(lesions, rng)
    )


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


def run(args: argparse.Namespace) -> int:
    generate, folder, default_n = GENERATORS[args.dataset]
    dest = args.dest if args.dest is not None else paths.synthetic_dir() / folder
    n_images = args.n_images if args.n_images is not None else default_n
    root = generate(
        dest, n_images=n_images, seed=args.seed, image_size=args.image_size, workers=args.workers
    )
    print(f"wrote {n_images} synthetic {args.dataset} images to {paths.display(root)}")
    return 0

"""The published augmentation (Villa-Pulgarin et al. 2022), faithfully, with OpenCV - for the
leakage audit only.

What the published notebooks did to every class folder BEFORE splitting (see the audit report
for the source): Keras `ImageDataGenerator(rotation_range=180, zoom_range=0.2,
width_shift_range=0.2, height_shift_range=0.2, horizontal_flip=True, vertical_flip=True,
fill_mode="nearest")`, `flow(..., save_to_dir=..., save_format="png")` until `k` copies per source
image, each copy saved by `array_to_img(scale=True)` (a per-image min-max stretch to 0..255,
truncated to uint8) under the name `N_0_<randint(10**4)>.png`. Names therefore collide within a
class folder and later copies overwrite earlier ones: a folder of n written copies keeps about
10**4 (1 - exp(-n / 10**4)) of them. The originals were then copied into the same folder.

Here: `augment_image` reproduces one `random_transform` + `array_to_img(scale=True)` with
`cv2.warpAffine` (Keras' affine matrix about the image centre, bilinear, nearest-edge fill) and
`cv2.flip`; `surviving_copies` replays the name collisions with a seeded generator;
`build_pool` writes the surviving copies as PNG next to nothing of the raw data and returns the
POOL: every original and every surviving copy of each class folder, in FOLDER ORDER.

Folder order (the published split used Google Drive's listing, which the notebooks' logs show as
creation order): per class, the surviving copies in the order they were last written (source by
source, in metadata order), then the originals in metadata order. Classes without copies (nv) are
the originals in metadata order, as the notebooks wrote them (img1 ... imgN).
"""
from __future__ import annotations

import hashlib
import json
import math
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from utils import fileio
from utils.augmentation.transforms import read_rgb
from utils.data import datasets
from utils.errors import DataError

KERAS_NAME_SPACE = 10**4  # save_to_dir names copies N_0_<np.random.randint(1e4)>.png
IMAGES_DIR = "images"
POOL_NAME = "pool.csv"
SETTINGS_NAME = "published.json"

# Copies written per source image (the notebooks' `if total == k: break`). HAM10000: akiec is 25,
# not the 5 of the code cell: the printed folder size (5,592 augmented files from 327 images) is
# what 25 copies per image give after the name collisions (10**4 (1 - exp(-327 * 25 / 10**4)) =
# 5,585); the code cell shows a later edit. mel: the notebooks took 6,016 files of unknown origin
# from another project; we augment HAM10000's mel like the other classes with 6 copies per image,
# the number that gives the same folder size (1,113 + 10**4 (1 - exp(-1,113 * 6 / 10**4)) = 6,000).
# nv was not augmented. ISIC 2019: as in its notebook, NV not augmented.
PUBLISHED_COPIES: Mapping[str, Mapping[str, int]] = {
    "ham10000": {"akiec": 25, "bcc": 18, "bkl": 7, "df": 62, "mel": 6, "nv": 0, "vasc": 62},
    "isic2019": {"MEL": 3, "NV": 0, "BCC": 4, "AK": 14, "BKL": 5, "DF": 53, "VASC": 50,
                 "SCC": 20},
}


@dataclass(frozen=True)
class PublishedAugment:
    """The published ImageDataGenerator settings (the unused second generator is left out)."""

    rotation_range: float = 180.0  # degrees: angle ~ U(-r, r)
    zoom_range: float = 0.2  # zx and zy drawn independently from U(1 - z, 1 + z)
    width_shift_range: float = 0.2  # horizontal shift ~ U(-s, s) x width
    height_shift_range: float = 0.2  # vertical shift ~ U(-s, s) x height
    horizontal_flip: bool = True  # left-right mirror with probability 1/2
    vertical_flip: bool = True  # up-down mirror with probability 1/2
    minmax_rescale: bool = True  # array_to_img(scale=True): per-image min-max stretch, truncated


def copies_for(dataset: str, labels: list[str]) -> dict[str, int]:
    """The published copies per source image for the classes of a dataset's labels."""
    key = "isic2019" if dataset in ("isic2019", "synthetic_isic2019") else "ham10000"
    table = PUBLISHED_COPIES[key]
    unknown = sorted(set(labels) - set(table))
    if unknown:
        raise DataError(f"no published copies for class(es) {unknown} of {key}; pass copies="
                        "{class: k} explicitly")
    return {label: table[label] for label in labels}


def parse_copies(text: str) -> dict[str, int]:
    """'akiec=25,bcc=18' -> {"akiec": 25, "bcc": 18} (the CLI form of per-class copies)."""
    copies: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, number = item.partition("=")
        if not number.strip().isdigit():
            raise ValueError(f"bad copies {text!r}: use cls=N,cls=N (e.g. akiec=25,df=62)")
        copies[name.strip()] = int(number)
    return copies


# --- one copy -------------------------------------------------------------------------------------

def sample_transform(rng: np.random.Generator, config: PublishedAugment,
                     height: int, width: int) -> dict[str, float | bool]:
    """The random parameters of one Keras `random_transform`, drawn in Keras' order."""
    return {
        "theta": float(rng.uniform(-config.rotation_range, config.rotation_range)),
        "tx": float(rng.uniform(-config.height_shift_range, config.height_shift_range) * height),
        "ty": float(rng.uniform(-config.width_shift_range, config.width_shift_range) * width),
        "zx": float(rng.uniform(1 - config.zoom_range, 1 + config.zoom_range)),
        "zy": float(rng.uniform(1 - config.zoom_range, 1 + config.zoom_range)),
        "flip_horizontal": bool(rng.random() < 0.5) and config.horizontal_flip,
        "flip_vertical": bool(rng.random() < 0.5) and config.vertical_flip,
    }


def keras_affine_matrix(height: int, width: int, theta: float, tx: float, ty: float, zx: float,
                        zy: float) -> np.ndarray:
    """Keras' apply_affine_transform matrix (output -> input coordinates, centred as Keras
    centres it: transform_matrix_offset_center(matrix, height, width))."""
    angle = np.deg2rad(theta)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                         [0, 0, 1]])
    shift = np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]])
    zoom = np.array([[zx, 0, 0], [0, zy, 0], [0, 0, 1]])
    o_x, o_y = height / 2 - 0.5, width / 2 - 0.5
    offset = np.array([[1, 0, o_x], [0, 1, o_y], [0, 0, 1]])
    reset = np.array([[1, 0, -o_x], [0, 1, -o_y], [0, 0, 1]])
    return offset @ rotation @ shift @ zoom @ reset


def augment_image(image: np.ndarray, parameters: Mapping[str, float | bool],
                  config: PublishedAugment = PublishedAugment()) -> np.ndarray:
    """One published copy of a uint8 RGB image: affine warp, flips, min-max stretch."""
    height, width = image.shape[:2]
    matrix = keras_affine_matrix(height, width, *(parameters[k] for k in
                                                  ("theta", "tx", "ty", "zx", "zy")))
    # Keras builds the matrix in (x, y) order and permutes it for scipy's (row, col): in OpenCV's
    # (x, y) convention it is the inverse map as it stands.
    out = cv2.warpAffine(image, matrix[:2], (width, height),
                         flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_REPLICATE)
    if parameters["flip_horizontal"]:
        out = cv2.flip(out, 1)
    if parameters["flip_vertical"]:
        out = cv2.flip(out, 0)
    if config.minmax_rescale:
        pixels = out.astype(np.float64)
        pixels -= pixels.min()
        top = pixels.max()
        if top > 0:
            pixels /= top
        out = (pixels * 255.0).astype(np.uint8)  # PIL's uint8 conversion truncates
    return out


# --- the class folders ----------------------------------------------------------------------------

def surviving_copies(n_sources: int, copies: int, rng: np.random.Generator,
                     collisions: bool = True) -> list[tuple[int, int]]:
    """(source position, copy index) of the copies left in a class folder, in the order they
    were last written: every source writes `copies` files with a random name out of
    KERAS_NAME_SPACE; a later file of the same name replaces the earlier one."""
    writes = [(source, copy) for source in range(n_sources) for copy in range(copies)]
    if not collisions:
        return writes
    names = rng.integers(KERAS_NAME_SPACE, size=len(writes))
    last = {int(name): index for index, name in enumerate(names)}
    return [writes[index] for index in sorted(last.values())]


def expected_folder_size(n_sources: int, copies: int) -> float:
    """Expected number of surviving copies: 10**4 (1 - exp(-n k / 10**4)) (about)."""
    return KERAS_NAME_SPACE * (1 - math.exp(-n_sources * copies / KERAS_NAME_SPACE))


def _class_key(label: str) -> int:
    return zlib.crc32(label.encode("utf-8"))


def plan_pool(table: pd.DataFrame, copies: Mapping[str, int], seed: int,
              collisions: bool = True) -> pd.DataFrame:
    """The POOL without pixels: per class folder, surviving copies then originals, in folder
    order; columns of the table plus source_image_id, augmented, copy, folder_position."""
    frames = []
    for label in datasets.class_order(table["label"]):
        originals = table[table["label"] == label]
        k = int(copies.get(label, 0))
        rng = np.random.default_rng([seed, _class_key(label)])
        survivors = surviving_copies(len(originals), k, rng, collisions) if k else []
        rows = originals.iloc[[source for source, _ in survivors]].copy()
        rows["source_image_id"] = rows["image_id"]
        rows["copy"] = [copy for _, copy in survivors]
        rows["image_id"] = [f"{s}__pub{c}" for s, c in zip(rows["source_image_id"], rows["copy"])]
        rows["augmented"] = True
        plain = originals.assign(source_image_id=originals["image_id"], copy=-1, augmented=False)
        folder = pd.concat([rows, plain], ignore_index=True)
        folder["folder_position"] = np.arange(1, len(folder) + 1)
        frames.append(folder)
    pool = pd.concat(frames, ignore_index=True)
    pool.attrs = dict(table.attrs)
    return pool


def _copy_seed(seed: int, image_id: str, copy: int) -> list[int]:
    return [seed, zlib.crc32(image_id.encode("utf-8")), copy]


def _write_copy(row: pd.Series, out_dir: Path, seed: int, config: PublishedAugment) -> None:
    destination = out_dir / IMAGES_DIR / row["label"] / f"{row['image_id']}.png"
    if destination.is_file():
        return
    image = read_rgb(row["source_path"])
    rng = np.random.default_rng(_copy_seed(seed, row["source_image_id"], int(row["copy"])))
    parameters = sample_transform(rng, config, *image.shape[:2])
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(augment_image(image, parameters, config),
                                                    cv2.COLOR_RGB2BGR))
    if not ok:
        raise DataError(f"{destination}: PNG encoding failed")
    fileio.write_bytes(destination, encoded.tobytes())


def build_pool(table: pd.DataFrame, out_dir: str | Path, copies: Mapping[str, int], seed: int = 0,
               collisions: bool = True, config: PublishedAugment = PublishedAugment(),
               workers: int = 2) -> pd.DataFrame:
    """Write the surviving copies under out_dir/images/<class>/ (PNG, resumable, byte-identical
    per seed) and return the POOL (originals keep their raw path; raw data is only read)."""
    out_dir = Path(out_dir).resolve()
    ids = "\n".join(sorted(table["image_id"].astype(str)))
    settings = {"seed": seed, "copies": dict(copies), "collisions": collisions,
                "augment": asdict(config), "images": hashlib.sha256(ids.encode()).hexdigest()}
    saved = out_dir / SETTINGS_NAME
    if saved.is_file() and json.loads(saved.read_text()) != json.loads(json.dumps(settings)):
        raise DataError(f"{saved}: this folder holds a published pool made with other settings; "
                        "choose another folder or delete it")
    fileio.write_json(saved, settings)
    pool = plan_pool(table, copies, seed, collisions)
    augmented = pool[pool["augmented"]].assign(source_path=lambda f: f["path"])
    pool.loc[augmented.index, "path"] = [
        str(out_dir / IMAGES_DIR / label / f"{image_id}.png")
        for label, image_id in zip(augmented["label"], augmented["image_id"])]
    rows = [row for _, row in augmented.iterrows()]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as executor:  # OpenCV frees the GIL
        jobs = executor.map(lambda row: _write_copy(row, out_dir, seed, config), rows)
        for _ in tqdm(jobs, total=len(rows), desc="published augmentation", unit="img",
                      disable=len(rows) < 500, mininterval=2.0):
            pass
    fileio.write_csv(out_dir / POOL_NAME, pool)
    return pool

"""DermaMNIST (MedMNIST v2: HAM10000 resized, official split): read the .npz and export its
images once as files, since the rest of the repository reads image files."""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from utils import fileio, paths
from utils.data import datasets
from utils.data.manifest import save_manifest
from utils.data.table import finish_table
from utils.errors import DataError

DERMAMNIST_SPLITS = {"train": "train", "val": "val", "test": "test"}


def load_dermamnist(npz: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (images uint8 NHWC, labels int64 N)} from a MedMNIST dermamnist*.npz."""
    npz = Path(npz)
    if not npz.is_file():
        raise DataError(f"{npz}: DermaMNIST file not found; download dermamnist.npz (or "
                        "dermamnist_64/_128/_224.npz) with `python -m utils download dermamnist`.")
    out = {}
    try:
        with np.load(npz, allow_pickle=False) as archive:
            for split in DERMAMNIST_SPLITS:
                keys = (f"{split}_images", f"{split}_labels")
                missing = [key for key in keys if key not in archive.files]
                if missing:
                    raise DataError(f"{npz.name}: missing array(s) {', '.join(missing)}; found "
                                    f"{', '.join(archive.files)}. Use the MedMNIST file as "
                                    "distributed.")
                images = archive[keys[0]]
                labels = archive[keys[1]].reshape(-1).astype(np.int64)
                out[split] = (_as_nhwc(images, npz.name, split), labels)
                _check_dermamnist_labels(labels, len(out[split][0]), npz.name, split)
    except DataError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
        reason = " ".join(str(error).split())[:200]
        raise DataError(f"{npz}: not a readable .npz archive ({reason}); download it again "
                        "(`python -m utils download dermamnist`)") from None
    if not sum(len(labels) for _, labels in out.values()):
        raise DataError(f"{npz}: holds no image; download it again "
                        "(`python -m utils download dermamnist`)")
    return out


def _as_nhwc(images: np.ndarray, source: str, split: str) -> np.ndarray:
    if images.ndim == 3:  # grayscale MedMNIST variants: add the channel axis
        images = images[..., None]
    if images.ndim != 4 or images.dtype != np.uint8:
        raise DataError(f"{source}: {split}_images has shape {images.shape} and dtype "
                        f"{images.dtype}; expected uint8 N x H x W x 3")
    return images


def _check_dermamnist_labels(labels: np.ndarray, n_images: int, source: str, split: str) -> None:
    if len(labels) != n_images:
        raise DataError(f"{source}: {split}_labels has {len(labels)} labels for {n_images} images")
    bad = np.flatnonzero((labels < 0) | (labels >= datasets.DERMAMNIST.num_classes))
    if bad.size:
        raise DataError(f"{source}: {split}_labels[{bad[0]}] = {labels[bad[0]]} is not a class "
                        f"index 0-{datasets.DERMAMNIST.num_classes - 1} ({bad.size} such rows)")


def export_dermamnist(
    npz: str | os.PathLike, out_dir: str | os.PathLike, image_format: str = "jpg",
    quality: int = 95,
) -> pd.DataFrame:
    """Write every image of the npz as a file under out_dir/<split>/ and return the TABLE with
    the official split in column `split` (also saved as out_dir/manifest.csv).

    Resumes: files already present are kept. lesion_id = image_id (DermaMNIST carries no lesion
    ids; its official split is not lesion-grouped)."""
    from PIL import Image
    from tqdm.auto import tqdm

    if image_format not in ("jpg", "png"):
        raise ValueError(f"image_format must be 'jpg' or 'png', not {image_format!r}")
    out_dir = Path(out_dir).resolve()
    info = datasets.DERMAMNIST
    stem = Path(npz).stem
    rows = []
    for split, (images, labels) in load_dermamnist(npz).items():
        folder = out_dir / split
        folder.mkdir(parents=True, exist_ok=True)
        progress = tqdm(enumerate(zip(images, labels)), total=len(labels), unit="img",
                        desc=f"exporting {stem} {split}", disable=len(labels) < 2000)
        for index, (image, label) in progress:
            image_id = f"{stem}_{split}_{index:05d}"
            path = folder / f"{image_id}.{image_format}"
            if not path.is_file():
                with fileio.atomic_path(path) as tmp:
                    Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(
                        tmp, format="JPEG" if image_format == "jpg" else "PNG", quality=quality)
            rows.append((image_id, str(path), info.classes[int(label)], split))
    frame = pd.DataFrame(rows, columns=["image_id", "path", "label", "split"])
    frame["lesion_id"], frame["age"], frame["sex"], frame["site"] = (
        frame["image_id"], np.nan, np.nan, np.nan)
    table = finish_table(frame, info, source=str(Path(npz).resolve()))
    save_manifest(table, out_dir / "manifest.csv")
    return table


def read_dermamnist(
    npz: str | os.PathLike, out_dir: str | os.PathLike | None = None, image_format: str = "jpg"
) -> pd.DataFrame:
    """DermaMNIST as a TABLE with the official `split` column; the images are exported once to
    out_dir (default data/interim/<npz stem>/) because the rest of the repository reads files."""
    npz = Path(npz)
    out_dir = Path(out_dir) if out_dir is not None else paths.interim_dir() / npz.stem
    return export_dermamnist(npz, out_dir, image_format=image_format)


def find_npz(root: Path) -> Path:
    """The one dermamnist*.npz of a folder (or the file itself)."""
    if root.is_file():
        return root
    candidates = sorted(root.glob("dermamnist*.npz"))
    if len(candidates) != 1:
        raise DataError(f"{root}: expected one dermamnist*.npz, found "
                        f"{', '.join(c.name for c in candidates) or 'none'}; pass the file itself.")
    return candidates[0]

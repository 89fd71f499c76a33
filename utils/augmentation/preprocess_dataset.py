"""`python -m utils preprocess <data dir> [<out dir>] --steps colour,hair,fov`: an offline,
preprocessed copy of a dataset folder (utils.augmentation.preprocess).

The copy keeps the source's layout and metadata, so every reader and command reads it as it
reads the source (`check`, `split`, `train --data-dir <copy>`, the notebooks):

- each image of the dataset's TABLE (utils.data.readers.read_table) becomes its preprocessed
  pixels, PNG, at the same relative path with a `.png` suffix (the readers find images by file
  stem). PNG is lossless and the image is decoded with TensorFlow's decoder, the one of the input
  pipeline (`utils.training.pipeline.decode_full`), so the copy holds exactly the pixels that
  `--preprocess` computes on the fly (OpenCV's and PIL's JPEG decoders differ from TensorFlow's
  by a few grey levels);
- a lesion mask (`<image_id>_segmentation.png` in a mask folder of utils.data.datasets) is cropped
  with its image's field-of-view box, so image and mask stay aligned;
- every other file (metadata CSVs, stamps) is copied byte for byte;
- `preprocess.json`: the canonical preprocessing text, the source folder and the format;
- `preprocess_log.csv`: one row per image (image_id, source and output paths relative to their
  folders, sizes, crop box, share of pixels inpainted as hair): how each file was made.

The source is never written (an out dir inside it is refused). Every file is written atomically
and a re-run skips the finished ones (a killed run resumes; the per-image records of an
unfinished run live in `.preprocess_journal.jsonl`). The same settings give byte-identical files;
an out dir holding a copy made with other settings is refused. Default out dir:
data/processed/preprocessed/<source folder>-<steps>-<hash of the settings>/.

A run trained on a copy (`--data-dir <copy>`) records the copy's preprocessing in its config
(TrainConfig.resolve), so `predict` applies it to raw images, and its input pipeline does not
apply it a second time (utils.training.data.pipeline_preprocess).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import pandas as pd

from utils import fileio, paths
from utils.augmentation.preprocess import Preprocessing, crop, parse_preprocessing
from utils.data.datasets import MASK_FOLDERS, MASK_SUFFIX
from utils.errors import DataError

SETTINGS_NAME = "preprocess.json"
LOG_NAME = "preprocess_log.csv"
JOURNAL_NAME = ".preprocess_journal.jsonl"
FORMAT_VERSION = 1  # bump when the copy's files would change for the same settings
PNG_COMPRESSION = 3  # zlib level: lossless whatever the level; 3 is ~2x faster to write than 9
LOG_COLUMNS = ("image_id", "source", "output", "source_width", "source_height", "width",
               "height", "box", "hair_fraction")


def copy_spec(folder: str | os.PathLike | None) -> str | None:
    """The preprocessing text a folder was made with, if it is an offline copy (else None)."""
    if folder is None:
        return None
    settings = Path(folder).expanduser() / SETTINGS_NAME
    if not settings.is_file():
        return None
    try:
        return str(json.loads(settings.read_text(encoding="utf-8"))["preprocess"])
    except (json.JSONDecodeError, KeyError) as error:
        raise DataError(f"{settings}: not a valid preprocessing settings file ({error}); "
                        "delete the folder and preprocess again") from None


def default_out_dir(source: Path, steps: Preprocessing) -> Path:
    """data/processed/preprocessed/<source name>-<steps>-<8 hex digits of the settings>."""
    key = hashlib.sha256(f"{FORMAT_VERSION}|{steps.spec()}".encode()).hexdigest()[:8]
    return paths.processed_dir() / "preprocessed" / f"{source.name}-{steps.short_name()}-{key}"


def decode(data: bytes) -> np.ndarray:
    """Image bytes -> uint8 HxWx3 RGB with TensorFlow's decoder (the input pipeline's)."""
    import tensorflow as tf

    return tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8).numpy()


def encode_png(array: np.ndarray, rgb: bool = True) -> bytes:
    image = cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if rgb else array
    ok, encoded = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    if not ok:
        raise DataError("PNG encoding failed")
    return encoded.tobytes()


# --- planning: which file of the source becomes what --------------------------------------------

def plan(source: Path, out_dir: Path, table: pd.DataFrame) -> dict[str, list[tuple[Path, Path]]]:
    """{"images", "masks", "copies"}: (source file, output file) pairs, sorted."""
    images = {Path(p).resolve(): str(i) for p, i in zip(table["path"], table["image_id"])}
    ids = set(images.values())
    result: dict[str, list[tuple[Path, Path]]] = {"images": [], "masks": [], "copies": []}
    for directory, folders, files in os.walk(source):
        folders.sort()
        for name in sorted(files):
            path = Path(directory) / name
            relative = path.relative_to(source)
            if name.startswith(".") or name == SETTINGS_NAME:
                continue
            if path.resolve() in images:
                result["images"].append((path, out_dir / relative.with_suffix(".png")))
            elif relative.parent.name in MASK_FOLDERS and name.endswith(MASK_SUFFIX) \
                    and name[:-len(MASK_SUFFIX)] in ids:
                result["masks"].append((path, out_dir / relative))
            else:
                result["copies"].append((path, out_dir / relative))
    return result


# --- doing it ------------------------------------------------------------------------------------

def preprocess_image(source: Path, destination: Path, steps: Preprocessing) -> dict[str, Any]:
    """Decode, preprocess and write one image (atomically); returns its log record."""
    try:
        image = decode(source.read_bytes())
    except Exception as error:  # TensorFlow raises its own error types
        raise DataError(f"{source}: cannot decode this image ({type(error).__name__}); fix or "
                        "remove the file (python -m utils check lists such files)") from None
    result, info = steps.run(image)
    _write(destination, encode_png(result))
    box = info.get("box")
    return {"source_width": image.shape[1], "source_height": image.shape[0],
            "width": result.shape[1], "height": result.shape[0],
            "box": "" if box is None else " ".join(map(str, box)),
            "hair_fraction": info.get("hair_fraction")}


def crop_mask(source: Path, destination: Path, box: str, image_shape: tuple[int, int]) -> None:
    """Copy a lesion mask, cropped with its image's box (scaled to the mask's resolution)."""
    if not box:
        _write(destination, source.read_bytes())
        return
    mask = cv2.imread(str(source), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise DataError(f"{source}: cannot read this lesion mask; fix or remove it")
    cropped = crop(mask, tuple(int(v) for v in box.split()), like=image_shape)
    _write(destination, encode_png(cropped, rgb=False))


def _write(destination: Path, data: bytes) -> None:
    """Write atomically (rename on success: a killed run never leaves half a file); without the
    fsync of fileio.write_bytes, which costs more than the image on thousands of small files."""
    with fileio.atomic_path(destination) as tmp:
        tmp.write_bytes(data)


def _read_records(out_dir: Path) -> dict[str, dict[str, Any]]:
    """Per-image records of earlier runs: the finished log, then the journal (newest wins)."""
    records: dict[str, dict[str, Any]] = {}
    log = out_dir / LOG_NAME
    if log.is_file():
        frame = pd.read_csv(log, dtype={"image_id": str, "box": str}, keep_default_na=False)
        records.update({r["image_id"]: r for r in frame.to_dict("records")})
    journal = out_dir / JOURNAL_NAME
    if journal.is_file():
        for line in journal.read_text(encoding="utf-8").splitlines():
            try:  # a killed run may leave a cut last line: that image is made again
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            records[record["image_id"]] = record
    return records


def _check_settings(out_dir: Path, settings: dict[str, Any]) -> None:
    path = out_dir / SETTINGS_NAME
    if path.is_file():
        previous = json.loads(path.read_text(encoding="utf-8"))
        if previous != settings:
            changed = sorted(k for k in settings if previous.get(k) != settings[k])
            raise DataError(
                f"{path}: {paths.display(out_dir)} holds a copy made with other settings "
                f"({', '.join(changed)} differ); choose another out dir (the default is keyed by "
                "the settings) or delete this one")


def _refuse_source(source: Path, out_dir: Path) -> None:
    if out_dir == source or source in out_dir.parents or out_dir in source.parents:
        raise DataError(f"out dir {out_dir} overlaps the source {source}; the source is never "
                        "written: choose a folder outside it (default under data/processed/)")


def _parallel(function: Any, tasks: list, workers: int) -> Iterator:
    """Results of function(task) in task order, over `workers` threads (OpenCV and TensorFlow
    release the GIL in decoding, morphology, inpainting and PNG encoding)."""
    if workers <= 1 or len(tasks) < 8:
        yield from map(function, tasks)
        return
    cv2.setNumThreads(1)  # the threads already use every core
    with ThreadPoolExecutor(workers) as pool:
        yield from pool.map(function, tasks)


def preprocess_dataset(data_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                       steps: str | Preprocessing = "colour,hair,fov", workers: int | None = None,
                       progress: bool = True, limit: int | None = None) -> Path:
    """Write (or finish) the preprocessed copy of `data_dir`; returns the out dir.

    `limit` stops after that many new images (the copy stays resumable; for tests)."""
    from tqdm.auto import tqdm

    from utils.data import readers

    steps = parse_preprocessing(steps) if isinstance(steps, str) else steps
    if not steps:
        raise DataError("no preprocessing step given: --steps colour,hair,fov (or a subset)")
    source = Path(data_dir).expanduser().resolve()
    made_with = copy_spec(source)
    if made_with is not None:
        raise DataError(f"{source} is itself a preprocessed copy ({made_with}); preprocess its "
                        "source folder instead")
    out = (Path(out_dir).expanduser() if out_dir is not None
           else default_out_dir(source, steps)).resolve()
    _refuse_source(source, out)
    table = readers.read_table(source)
    settings = {"preprocess": steps.spec(), "source": str(source), "format": "png",
                "decoder": "tensorflow.io.decode_image", "version": FORMAT_VERSION}
    _check_settings(out, settings)
    if not (out / SETTINGS_NAME).is_file():
        fileio.write_json(out / SETTINGS_NAME, settings)
    jobs = plan(source, out, table)
    ids = {Path(p).resolve(): str(i) for p, i in zip(table["path"], table["image_id"])}
    records = _read_records(out)
    todo = [(s, d) for s, d in jobs["images"]
            if not (d.is_file() and ids[s.resolve()] in records)]
    if limit is not None:
        todo = todo[:limit]

    def make(job: tuple[Path, Path]) -> dict[str, Any]:
        source_file, destination = job
        return {"image_id": ids[source_file.resolve()], "source": str(source_file.relative_to(
            source)), "output": str(destination.relative_to(out)),
            **preprocess_image(source_file, destination, steps)}

    bar = tqdm(total=len(todo), desc="preprocess", unit="img", disable=not progress or not todo)
    with open(out / JOURNAL_NAME, "a", encoding="utf-8") as journal:
        for record in _parallel(make, todo, workers or _default_workers()):
            journal.write(json.dumps(record) + "\n")
            journal.flush()
            records[record["image_id"]] = record
            bar.update()
    bar.close()
    if any(not d.is_file() or ids[s.resolve()] not in records for s, d in jobs["images"]):
        return out  # stopped early (limit): a re-run finishes it
    for source_file, destination in jobs["masks"]:
        if not destination.is_file():
            record = records[source_file.name[:-len(MASK_SUFFIX)]]
            destination.parent.mkdir(parents=True, exist_ok=True)
            crop_mask(source_file, destination, str(record["box"] or ""),
                      (int(record["source_height"]), int(record["source_width"])))
    for source_file, destination in jobs["copies"]:
        if not destination.is_file() or destination.stat().st_size != source_file.stat().st_size:
            fileio.write_bytes(destination, source_file.read_bytes())
    log = pd.DataFrame([records[i] for i in sorted(records)], columns=list(LOG_COLUMNS))
    text = log.to_csv(index=False, lineterminator="\n")
    if not (out / LOG_NAME).is_file() or (out / LOG_NAME).read_text(encoding="utf-8") != text:
        fileio.write_text(out / LOG_NAME, text)
    (out / JOURNAL_NAME).unlink(missing_ok=True)
    return out


def _default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# --- CLI -----------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data_dir", help="dataset folder (read only)")
    parser.add_argument("out_dir", nargs="?", default=None,
                        help="output folder (default data/processed/preprocessed/<name>-<steps>-"
                             "<settings hash>)")
    parser.add_argument("--steps", default="colour,hair,fov",
                        help="comma list of colour, hair, fov, each optionally with settings "
                             "(hair:kernel_size=11:method=ns); see utils/augmentation/"
                             "preprocess.py (default colour,hair,fov)")
    from utils.arguments import positive_int

    parser.add_argument("--workers", type=positive_int, default=None,
                        help="threads (default: all cores)")


def run(args: argparse.Namespace) -> int:
    try:
        steps = parse_preprocessing(args.steps)
    except ValueError as error:
        raise DataError(str(error)) from None
    out = preprocess_dataset(args.data_dir, args.out_dir, steps, workers=args.workers)
    log = pd.read_csv(out / LOG_NAME, dtype={"box": str}, keep_default_na=False)
    summary = f"wrote {paths.display(out)}: {len(log)} images ({steps.spec()})"
    if "fov" in steps.steps:
        summary += f"; {int((log['box'] != '').sum())} cropped to their field of view"
    print(summary)
    print(f"train on it with: python -m utils train --data-dir {paths.display(out)} "
          "(the run records the preprocessing; predict applies it to raw images)")
    return 0

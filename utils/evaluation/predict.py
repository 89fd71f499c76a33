"""`python -m utils predict <model.keras> <image or folder> <out.csv>`: class probabilities.

Images are read and resized exactly as in evaluation (utils.training.pipeline.load_image:
decode, the run's dermoscopy preprocessing (config.json's `preprocess`: colour constancy, hair
removal, field-of-view crop), then the run's resize policy) and streamed through tf.data in
batches. Every file passes the image gate (utils.data.images: not an image whatever its
extension, empty, truncated, over the pixel cap), then TensorFlow's decoder; a file refused by
either is reported on stderr, naming the file, and skipped; the rest are still predicted. The
class codes come from the run's config.json beside the model (its dataset), else `--dataset`,
else the one class order of the known datasets with the model's number of outputs.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

from utils import fileio, paths
from utils.arguments import checked, positive_int
from utils.data import datasets, images
from utils.errors import DataError
from utils.training import runs

if TYPE_CHECKING:
    import tensorflow as tf

DEFAULT_BATCH_SIZE = 32
DATASET_ALIASES = {"synthetic": "ham10000", "synthetic_isic2019": "isic2019"}  # synthetic layouts


def run_config(model_path: str | os.PathLike) -> dict:
    """The raw config.json of the run folder holding the model ({} where there is none)."""
    config_file = Path(model_path).resolve().parent / runs.CONFIG
    if not config_file.is_file():
        return {}
    try:
        return json.loads(config_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataError(f"{config_file}: not valid JSON ({error}); fix or delete it") from None


def dataset_name(name: str) -> str:
    """A --dataset value: a known dataset (or synthetic layout) name; ConfigError otherwise."""
    datasets.get_dataset(DATASET_ALIASES.get(name, name))
    return name


def resolve_classes(num_outputs: int, config: dict, dataset: str | None = None) -> tuple[str, ...]:
    """Class codes of a model with `num_outputs` softmax outputs."""
    name = dataset or config.get("dataset")
    if name:
        info = datasets.get_dataset(DATASET_ALIASES.get(name, name))
        candidates = {info.classes}
    else:
        candidates = {d.classes for d in datasets.DATASETS.values() if d.num_classes == num_outputs}
    candidates = {c for c in candidates if len(c) == num_outputs}
    if len(candidates) != 1:
        raise ValueError(
            f"cannot tell the class codes of a model with {num_outputs} outputs"
            + (f" trained on {name!r}" if name else "")
            + "; pass --dataset (one of: " + ", ".join(datasets.DATASETS) + ")"
        )
    return next(iter(candidates))


def list_inputs(source: str | os.PathLike) -> list[Path]:
    """One file, or every non-hidden file in a folder (sorted, not recursive)."""
    source = Path(source)
    if source.is_file():
        return [source]
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise DataError(f"{source}: the folder holds no files to predict")
        return files
    raise DataError(f"{source}: no such image or folder")


def readable_images(files: Sequence[Path], image_size: int) -> tuple[list[Path], list[str]]:
    """The files the image gate accepts and TensorFlow can decode, and one message per file
    refused."""
    import tensorflow as tf
    from tqdm.auto import tqdm

    from utils.training import pipeline

    headers, refused = images.screen(files, progress=len(files) >= 1000)
    problems = [f"skipped {problem.where}: {problem.message}" for problem in refused]
    accepted = [path for path, header in zip(files, headers) if header is not None]
    good = []
    for path in tqdm(accepted, desc="checking images", disable=len(files) < 200, leave=False):
        try:
            pipeline.decode_image(tf.io.read_file(str(path)), image_size)
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError, OSError) as error:
            reason = re.sub(r"\{\{.*?\}\}\s*", "", str(error)).strip()[:160] or "unreadable"
            problems.append(f"skipped {path}: not a readable image ({reason})")
        else:
            good.append(path)
    return good, problems


def image_dataset(files: Sequence[Path], image_size: int, batch_size: int = DEFAULT_BATCH_SIZE,
                  resize_policy: str = "crop", preprocess: str | None = None
                  ) -> "tf.data.Dataset":
    """Batches of float32 [0, 255] images, in file order (preprocessed as the run was)."""
    import tensorflow as tf

    from utils.training import pipeline

    data = tf.data.Dataset.from_tensor_slices([str(p) for p in files])
    data = data.map(
        lambda p: tf.cast(pipeline.load_image(p, image_size, resize_policy, preprocess),
                          tf.float32),
        num_parallel_calls=tf.data.AUTOTUNE)
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def model_image_size(model) -> int:
    """The square input side of a model (ValueError if it accepts any size)."""
    shape = model.input_shape
    if shape[1] is None or shape[1] != shape[2]:
        raise ValueError(f"model input shape {shape} has no fixed square size; pass --image-size")
    return int(shape[1])


def predict_files(model, files: Sequence[Path], image_size: int | None = None,
                  batch_size: int = DEFAULT_BATCH_SIZE, resize_policy: str = "crop",
                  tta_views: Sequence[str] | None = None,
                  preprocess: str | None = None) -> np.ndarray:
    """Class probabilities (n, K) of readable image files (TTA over `tta_views` if given)."""
    from utils.evaluation import tta

    size = image_size or model_image_size(model)
    data = image_dataset(files, size, batch_size, resize_policy, preprocess)
    if tta_views:
        return tta.predict_tta(model, data, tta_views)
    return np.asarray(model.predict(data, verbose=0), dtype=np.float64)


def predict_path(model_path: str | os.PathLike, source: str | os.PathLike,
                 image_size: int | None = None, dataset: str | None = None,
                 tta_views: Sequence[str] | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                 report=None, preprocess: str | None = None,
                 metadata: str | os.PathLike | None = None) -> pd.DataFrame:
    """Probabilities of one image or every image in a folder: image_id, path, predicted, classes.

    preprocess: the dermoscopy preprocessing of raw images (default: the run's config.json).
    metadata: a CSV (image_id, age, sex, site) whose rows are fused into the probabilities by the
    run's metadata model (utils.scoring.metadata_fusion; fitted on the run's training split)."""
    from utils.training import models

    config = run_config(model_path)
    model = models.load_model(model_path, compile=False)
    classes = resolve_classes(int(model.output_shape[-1]), config, dataset)
    size = image_size or config.get("image_size") or model_image_size(model)
    files, problems = readable_images(list_inputs(source), int(size))
    for message in problems:
        print(message, file=report or sys.stderr)
    if not files:
        raise DataError(f"{source}: none of the files is a readable image")
    preprocess = preprocess if preprocess is not None else config.get("preprocess")
    probs = predict_files(model, files, int(size), batch_size,
                          config.get("resize_policy", "crop"), tta_views, preprocess)
    if metadata is not None:
        probs = fused_probabilities(model_path, probs, [p.stem for p in files], classes,
                                    metadata)
    frame = pd.DataFrame({"image_id": [p.stem for p in files],
                          "path": [str(p.resolve()) for p in files],
                          "predicted": [classes[k] for k in probs.argmax(axis=1)]})
    return pd.concat([frame, pd.DataFrame(probs, columns=list(classes))], axis=1)


def fused_probabilities(model_path: str | os.PathLike, probs: np.ndarray,
                        image_ids: Sequence[str], classes: Sequence[str],
                        metadata: str | os.PathLike) -> np.ndarray:
    """`probs` fused with the metadata rows of `image_ids` by the run folder's metadata model."""
    from utils.data.manifest import load_manifest
    from utils.scoring import metadata_fusion

    run_dir = Path(model_path).resolve().parent
    if not (run_dir / runs.MANIFEST).is_file():
        raise DataError(f"{paths.display(run_dir)}: --metadata needs the run folder beside the "
                        f"model ({runs.MANIFEST}: the training images the metadata model is "
                        "fitted on)")
    model = metadata_fusion.run_model(run_dir, load_manifest(run_dir / runs.MANIFEST), classes)
    return metadata_fusion.fuse_images(probs, image_ids,
                                       metadata_fusion.read_metadata_csv(metadata), model,
                                       str(metadata))


# --------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a .keras model (a run folder's model.keras)")
    parser.add_argument("source", help="one image file or a folder of images")
    parser.add_argument("out", help="output CSV (image_id, path, predicted, one column per class)")
    parser.add_argument("--image-size", type=positive_int, default=None,
                        help="input side in pixels (default: the run's config, else the model's)")
    parser.add_argument("--dataset", default=None, type=checked(dataset_name, "dataset"),
                        help="dataset whose class codes the model predicts "
                             "(default: from config.json)")
    views = parser.add_mutually_exclusive_group()
    views.add_argument("--tta", action="store_true", default=None,
                       help="average over the 8 flips/rotations (utils.evaluation.tta); the "
                            "default where the run's config.json says predict_tta")
    views.add_argument("--no-tta", dest="tta", action="store_false",
                       help="one view, even where the run's recipe predicts with TTA")
    parser.add_argument("--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--metadata", default=None, metavar="CSV",
                        help="patient metadata of the images (columns image_id, age, sex, site; "
                             "values may be empty), fused into the probabilities by the run's "
                             "metadata model: the result of a recipe with metadata_fusion")
    parser.add_argument("--preprocess", default=None,
                        help="dermoscopy preprocessing of the images (default: the run's "
                             "config.json; none without one), e.g. colour,hair,fov")


def run(args: argparse.Namespace) -> int:
    from utils.evaluation import tta

    config = run_config(args.model)
    use_tta = bool(config.get("predict_tta", False)) if args.tta is None else args.tta
    frame = predict_path(args.model, args.source, args.image_size, args.dataset,
                         tuple(tta.DIHEDRAL_VIEWS) if use_tta else None, args.batch_size,
                         preprocess=args.preprocess, metadata=args.metadata)
    fileio.write_csv(args.out, frame)
    counts = frame["predicted"].value_counts().to_dict()
    fused = " fused with metadata" if args.metadata else ""
    print(f"wrote {paths.display(args.out)}: {len(frame)} images "
          f"({'8-view TTA' if use_tta else 'one view'}{fused}); predicted classes {counts}")
    if args.metadata is None and config.get("metadata_fusion"):
        print("note: this run's recipe fuses patient metadata (metadata_fusion); these are the "
              "image model's probabilities alone. Pass --metadata CSV (image_id, age, sex, "
              "site) for the recipe's result.")
    return 0

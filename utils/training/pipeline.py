"""tf.data input pipeline: manifest rows -> batches of (float32 [0, 255] images, one-hot labels).

Images are streamed from disk (never one array of the whole dataset): parallel decode (JPEGs
decoded at 1/2, 1/4 or 1/8 scale when much larger than the target, about 2x faster), resize by a
policy, optional on-disk cache of the resized images (written completely once when the dataset
is made, then only read: no partially read cache is ever discarded), seeded shuffle re-done every
epoch, online augmentation before batching, batching and prefetch.

With a run's dermoscopy preprocessing (`preprocess`, utils.augmentation.preprocess: colour
constancy, hair removal, field-of-view crop) `load_image` decodes at full resolution and applies
it (tf.numpy_function) before resizing; training, evaluation, TTA, Grad-CAM and `predict` all read
images through `load_image`, so every one of them sees the same preprocessed pixels.
"""
from __future__ import annotations

import hashlib
import inspect
import math
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import tensorflow as tf

from utils import paths
from utils.augmentation.preprocess import parse_preprocessing
from utils.data import images

AUTOTUNE = tf.data.AUTOTUNE
RESIZE_POLICIES = ("crop", "pad", "squash")
CACHE_SHUFFLE_BUFFER = 2048  # shuffle buffer (of decoded images) after an on-disk cache


def decode_image(data: tf.Tensor, image_size: int) -> tf.Tensor:
    """Decode JPEG/PNG/BMP/GIF bytes to uint8 HxWx3; JPEGs at the largest 1/ratio scale whose
    shorter side still covers `image_size`."""

    def jpeg() -> tf.Tensor:
        shape = tf.image.extract_jpeg_shape(data)
        shorter = tf.minimum(shape[0], shape[1])
        ratio_index = tf.cast(shorter >= 8 * image_size, tf.int32) + tf.cast(
            shorter >= 4 * image_size, tf.int32) + tf.cast(shorter >= 2 * image_size, tf.int32)
        branches = [lambda r=r: tf.io.decode_jpeg(data, channels=3, ratio=r) for r in (1, 2, 4, 8)]
        return tf.switch_case(ratio_index, branches)

    def other() -> tf.Tensor:
        return tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)

    is_jpeg = tf.equal(tf.strings.substr(data, 0, 2), b"\xff\xd8")
    image = tf.cond(is_jpeg, jpeg, other)
    image.set_shape([None, None, 3])
    return image


def resize_image(image: tf.Tensor, image_size: int, policy: str = "crop") -> tf.Tensor:
    """Resize uint8 HxWx3 to image_size^2 uint8: crop (keep aspect, centre crop), pad (keep
    aspect, centre on black) or squash (ignore aspect)."""
    if policy not in RESIZE_POLICIES:
        raise ValueError(f"resize_policy={policy!r}; choose one of {', '.join(RESIZE_POLICIES)}")
    size = tf.constant(image_size, tf.float32)
    if policy == "squash":
        target = tf.constant([image_size, image_size])
    else:
        hw = tf.cast(tf.shape(image)[:2], tf.float32)
        side = tf.reduce_min(hw) if policy == "crop" else tf.reduce_max(hw)
        target = tf.cast(tf.math.round(hw * size / side), tf.int32)
        target = tf.maximum(target, 1)
    resized = tf.image.resize(image, target, method="bilinear", antialias=True)
    if policy != "squash":
        resized = tf.image.resize_with_crop_or_pad(resized, image_size, image_size)
    resized = tf.cast(tf.round(tf.clip_by_value(resized, 0.0, 255.0)), tf.uint8)
    resized.set_shape([image_size, image_size, 3])
    return resized


def decode_full(data: tf.Tensor) -> tf.Tensor:
    """Decode image bytes to uint8 HxWx3 at full resolution (the decoder the offline copy of
    utils.augmentation.preprocess_dataset uses too, so both give the same pixels)."""
    image = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
    image.set_shape([None, None, 3])
    return image


def active_preprocess(preprocess: str | None) -> str | None:
    """The canonical preprocessing text to apply, or None for none/empty."""
    steps = parse_preprocessing(preprocess)
    return steps.spec() if steps else None


def apply_preprocess(image: tf.Tensor, preprocess: str) -> tf.Tensor:
    """Apply a preprocessing text (utils.augmentation.preprocess) to one uint8 HxWx3 image."""
    steps = parse_preprocessing(preprocess)

    def run(array: np.ndarray) -> np.ndarray:
        return steps(np.ascontiguousarray(array))

    result = tf.numpy_function(run, [image], tf.uint8, stateful=False)
    result.set_shape([None, None, 3])
    return result


def load_image(path: tf.Tensor, image_size: int, policy: str = "crop",
               preprocess: str | None = None) -> tf.Tensor:
    """Read, decode and resize one image file to uint8 image_size x image_size x 3; with a
    `preprocess` text, decode at full resolution and preprocess before resizing."""
    data = tf.io.read_file(path)
    preprocess = active_preprocess(preprocess)
    if preprocess is None:
        return resize_image(decode_image(data, image_size), image_size, policy)
    return resize_image(apply_preprocess(decode_full(data), preprocess), image_size, policy)


def cache_path(frame: pd.DataFrame, image_size: int, policy: str,
               cache_dir: str | os.PathLike | None = None, preprocess: str | None = None) -> Path:
    """Cache file keyed by a hash of the image paths (in order), size, resize policy and
    preprocessing."""
    digest = hashlib.sha256()
    for path in frame["path"].astype(str):
        digest.update(path.encode("utf-8") + b"\n")
    digest.update(f"{image_size}|{policy}".encode())
    spec = active_preprocess(preprocess)
    if spec:  # none keeps the key of caches written before preprocessing existed
        digest.update(f"|{spec}".encode())
    folder = Path(cache_dir) if cache_dir is not None else paths.interim_dir() / "cache"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"images-{image_size}-{policy}-{digest.hexdigest()[:16]}.tfdata"


def cache_order(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The seeded row order a training split is cached in (its cache key follows the order):
    manifests list images class by class, and the bounded shuffle after the cache would
    otherwise draw batches of one or two classes."""
    return frame.sample(frac=1.0, random_state=seed % 2**32)


def cache_complete(path: Path) -> bool:
    """True when the cache at `path` was written completely (cached_images renames it into
    place only then)."""
    return (Path(path) / "dataset_spec.pb").is_file()


def cached_images(dataset: tf.data.Dataset, path: Path, n_images: int) -> tf.data.Dataset:
    """The (image, label) elements of `dataset` from an on-disk cache at `path`, written once.

    The cache is written completely before anything reads it (tf.data's Dataset.save into a
    temporary folder, renamed into place: a killed run leaves no half cache) and then read with
    Dataset.load in the same order. `Dataset.cache(filename)` is not used: it keeps its file only
    when an iterator reads it to the end (a run with steps_per_epoch, a balanced stream or a
    benchmark's partial read discards it, "the calling iterator did not fully read the dataset
    being cached", and decodes again every epoch), and it warns so even after a complete read."""
    path = Path(path)
    if not cache_complete(path):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
        if tmp.exists():
            shutil.rmtree(tmp)
        from tqdm.auto import tqdm

        with tqdm(total=n_images, desc="caching resized images", unit="img",
                  disable=n_images < 2000) as bar:

            def tick(label: np.ndarray) -> np.int64:
                bar.update(1)
                return np.int64(0)

            def counted(image: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
                done = tf.numpy_function(tick, [label], tf.int64, stateful=True)
                with tf.control_dependencies([done]):
                    return tf.identity(image), tf.identity(label)

            def shard(image: tf.Tensor, label: tf.Tensor) -> tf.Tensor:
                return tf.constant(0, tf.int64)  # one shard: Dataset.load keeps the order

            dataset.map(counted).save(str(tmp), shard_func=shard)
        try:
            os.replace(tmp, path)
        except OSError:  # another process wrote the same cache first: use theirs
            shutil.rmtree(tmp, ignore_errors=True)
    return tf.data.Dataset.load(str(path))


def _is_keras_layer(augment: Any) -> bool:
    import keras

    return isinstance(augment, keras.layers.Layer)


def _image_dataset(frame: pd.DataFrame, image_size: int, training: bool, seed: int,
                   resize_policy: str, cache_dir: str | os.PathLike | None,
                   cache: bool, preprocess: str | None = None) -> tf.data.Dataset:
    """(uint8 image, int label) pairs; shuffled (seeded, every epoch) when training."""
    if cache and training:
        frame = cache_order(frame, seed)
    files = frame["path"].astype(str).to_numpy()
    labels = frame["label_index"].astype("int32").to_numpy()
    dataset = tf.data.Dataset.from_tensor_slices((files, labels))

    def load(path: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return load_image(path, image_size, resize_policy, preprocess), label

    if cache:
        # Cache the decoded, resized images in file order (filled once, completely, here), then
        # shuffle a bounded buffer.
        dataset = dataset.map(load, num_parallel_calls=AUTOTUNE)
        dataset = cached_images(dataset, cache_path(frame, image_size, resize_policy, cache_dir,
                                                    preprocess), len(frame))
        if training:
            dataset = dataset.shuffle(min(len(frame), CACHE_SHUFFLE_BUFFER), seed=seed,
                                      reshuffle_each_iteration=True)
        return dataset
    if training:
        # Shuffle file names (small) over the whole split before decoding: memory stays flat.
        dataset = dataset.shuffle(len(frame), seed=seed, reshuffle_each_iteration=True)
    return dataset.map(load, num_parallel_calls=AUTOTUNE)


def _balanced_dataset(frame: pd.DataFrame, image_size: int, seed: int, resize_policy: str,
                      cache_dir: str | os.PathLike | None, cache: bool,
                      preprocess: str | None = None) -> tf.data.Dataset:
    """An endless stream drawing every present class with equal probability."""
    per_class = []
    for offset, (_, rows) in enumerate(sorted(frame.groupby("label_index"))):
        per_class.append(
            _image_dataset(rows, image_size, True, seed + offset, resize_policy, cache_dir,
                           cache, preprocess).repeat()
        )
    weights = [1.0 / len(per_class)] * len(per_class)
    return tf.data.Dataset.sample_from_datasets(per_class, weights=weights, seed=seed)


def _takes_element_seed(augment: Callable) -> bool:
    try:
        return "element_seed" in inspect.signature(augment).parameters
    except (TypeError, ValueError):
        return False


def _apply_augment(dataset: tf.data.Dataset, augment: Callable, seed: int) -> tf.data.Dataset:
    """Map `augment` over (image, label); a callable taking `element_seed` gets one per element
    from a seeded random stream (new each epoch), so parallel maps stay reproducible."""
    if not _takes_element_seed(augment):
        return dataset.map(lambda image, label: (augment(image), label),
                           num_parallel_calls=AUTOTUNE)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    return tf.data.Dataset.zip((dataset, seeds)).map(
        lambda pair, element_seed: (augment(pair[0], element_seed=element_seed), pair[1]),
        num_parallel_calls=AUTOTUNE)


def make_dataset(
    frame: pd.DataFrame,
    image_size: int,
    batch_size: int,
    training: bool,
    num_classes: int,
    seed: int = 0,
    augment: Callable[[tf.Tensor], tf.Tensor] | Any | None = None,
    resize_policy: str = "crop",
    cache_dir: str | os.PathLike | None = None,
    cache: bool | None = None,
    balanced: bool = False,
    deterministic: bool = True,
    check_images: bool = True,
    preprocess: str | None = None,
) -> tf.data.Dataset:
    """Batches of (float32 images in [0, 255], one-hot float32 labels) from manifest rows.

    training: shuffle every epoch (seeded) and apply `augment`; evaluation keeps the row order.
    augment: a callable on one uint8 HxWx3 image (applied before batching), or a Keras layer /
        model (applied to float batches in-graph). Ignored when not training.
    cache / cache_dir: cache the resized images on disk (default folder data/interim/cache/);
        `cache` defaults to True when `cache_dir` is given.
    balanced: training only - an endless stream with equal class probabilities (give
        `steps_per_epoch` to fit); the alternative to class weights.
    check_images: pass every file through the image gate first (utils.data.images: header
        reads; 0.4 s for HAM10000's 10,015 files, reports/image_gate.md) and raise one
        DataError listing every refused file -- TF's
        decoder would otherwise stop mid-epoch, or decode a huge header as a grey canvas. Skipped
        when a complete on-disk cache of these rows exists (the files are not read then).
    preprocess: dermoscopy preprocessing text applied to every image before resizing
        (utils.augmentation.preprocess; None or "none": no preprocessing).
    """
    if len(frame) == 0:
        raise ValueError("make_dataset: the manifest selection is empty (no rows to load)")
    bad = frame.loc[(frame["label_index"] < 0) | (frame["label_index"] >= num_classes)]
    if len(bad):
        raise ValueError(
            f"make_dataset: label_index {int(bad['label_index'].iloc[0])} of image "
            f"{bad.iloc[0].get('image_id', bad.index[0])!r} is outside 0..{num_classes - 1}"
        )
    use_cache = bool(cache) if cache is not None else cache_dir is not None
    cached = use_cache and not balanced and cache_complete(cache_path(
        cache_order(frame, seed) if training else frame, image_size, resize_policy, cache_dir,
        preprocess))
    if check_images and not cached:
        require_images(frame)
    if balanced and training:
        dataset = _balanced_dataset(frame, image_size, seed, resize_policy, cache_dir, use_cache,
                                    preprocess)
    else:
        dataset = _image_dataset(frame, image_size, training, seed, resize_policy, cache_dir,
                                 use_cache, preprocess)
    layer_augment = augment is not None and _is_keras_layer(augment)
    if training and augment is not None and not layer_augment:
        dataset = _apply_augment(dataset, augment, seed)

    def to_float(image: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.cast(image, tf.float32), tf.one_hot(label, num_classes, dtype=tf.float32)

    dataset = dataset.map(to_float, num_parallel_calls=AUTOTUNE).batch(batch_size)
    if training and layer_augment:
        dataset = dataset.map(
            lambda images, labels: (
                tf.clip_by_value(tf.cast(augment(images, training=True), tf.float32), 0.0, 255.0),
                labels),
            num_parallel_calls=AUTOTUNE,
        )
    options = tf.data.Options()
    options.deterministic = deterministic
    return dataset.with_options(options).prefetch(AUTOTUNE)


def require_images(frame: pd.DataFrame) -> None:
    """DataError listing every file of the manifest rows that the image gate refuses."""
    source = frame.attrs.get("source", "the manifest")
    images.require_images(
        frame["path"].astype(str).tolist(), f"the images of {source}",
        "Run `python -m utils check <data folder>` for every problem; restore these files or "
        "remove their rows from the manifest.")


def steps_for(n_images: int, batch_size: int) -> int:
    """Batches per epoch covering n_images once."""
    return max(1, math.ceil(n_images / batch_size))


def class_weights(labels: Any, num_classes: int) -> dict[int, float]:
    """sklearn-style balanced weights n / (k * count_c) over the k classes present; absent
    classes get 1.0 (they never occur, the value is irrelevant)."""
    labels = np.asarray(labels, dtype=int)
    if labels.size == 0:
        raise ValueError("class_weights: no labels (empty training split)")
    counts = np.bincount(labels, minlength=num_classes)
    present = int((counts > 0).sum())
    return {
        index: (float(labels.size / (present * counts[index])) if counts[index] else 1.0)
        for index in range(num_classes)
    }

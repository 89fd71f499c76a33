"""Corruption robustness: how balanced accuracy degrades on blurred, noisy, compressed, badly
exposed or colour-shifted photos.

Six corruptions at five severities each, in the spirit of ImageNet-C (Hendrycks & Dietterich,
ICLR 2019, whose severity parameters are used where one exists), implemented with OpenCV (blur,
JPEG, HSV brightness and hue) and scikit-image (noise) on the uint8 image the model sees: each
test image is read and resized exactly as in training (utils.training.pipeline.load_image, the
run's size and resize policy), corrupted on the fly inside tf.data, and fed to the saved model
(whose preprocessing is inside it). Nothing is written to disk. Spatial parameters (blur sigma)
scale with the input side (given at 224 px), so a blur means the same share of the lesion at any
input size; at 64 px the mildest blur (sigma 0.3 px) barely changes a pixel.

Per corruption and severity: balanced accuracy with a lesion-bootstrap 95 % CI, and its ratio to
the clean balanced accuracy (paired: the same bootstrap draws); then the mean over severities
and over all corruptions. Noise is seeded per image and severity, so runs repeat exactly.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import cv2
import numpy as np
import pandas as pd
from skimage import util

from utils.scoring import metrics

SEVERITIES = 5
REFERENCE_SIDE = 224  # blur sigmas below are given for a 224 px input


def gaussian_blur(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """OpenCV Gaussian blur; sigma in pixels of a 224 px image, scaled to this one."""
    scaled = sigma * image.shape[0] / REFERENCE_SIDE
    return cv2.GaussianBlur(image, (0, 0), sigmaX=scaled, borderType=cv2.BORDER_REFLECT_101)


def gaussian_noise(image: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """scikit-image additive Gaussian noise of standard deviation `std` (of the 0-1 range)."""
    noisy = util.random_noise(image, mode="gaussian", var=std ** 2, rng=rng)
    return util.img_as_ubyte(noisy)


def jpeg_compression(image: np.ndarray, quality: float, rng: np.random.Generator) -> np.ndarray:
    """OpenCV JPEG encode/decode round trip at `quality` (0-100)."""
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("OpenCV could not JPEG-encode an image")
    return cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _hsv(image: np.ndarray) -> np.ndarray:
    """OpenCV float HSV: hue in degrees [0, 360), saturation and value in [0, 1]."""
    return cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)


def _rgb(hsv: np.ndarray) -> np.ndarray:
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def brightness(image: np.ndarray, shift: float, rng: np.random.Generator) -> np.ndarray:
    """OpenCV HSV: add `shift` to the value channel (over-exposure)."""
    hsv = _hsv(image)
    hsv[..., 2] = np.clip(hsv[..., 2] + shift, 0.0, 1.0)
    return _rgb(hsv)


def contrast(image: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """Scale the distance of every pixel from the image mean by `factor` (< 1: flatter)."""
    values = image.astype(np.float32)
    mean = values.mean(axis=(0, 1), keepdims=True)
    return np.clip(np.rint((values - mean) * factor + mean), 0, 255).astype(np.uint8)


def hue_shift(image: np.ndarray, shift: float, rng: np.random.Generator) -> np.ndarray:
    """OpenCV HSV: rotate the hue by `shift` of the colour circle."""
    hsv = _hsv(image)
    hsv[..., 0] = np.mod(hsv[..., 0] + 360.0 * shift, 360.0)
    return _rgb(hsv)


Corruption = Callable[[np.ndarray, float, np.random.Generator], np.ndarray]
# name -> (function, parameter at severities 1..5, what the parameter is)
CORRUPTIONS: dict[str, tuple[Corruption, tuple[float, ...], str]] = {
    "gaussian_blur": (gaussian_blur, (1.0, 2.0, 3.0, 4.0, 6.0), "sigma (px at 224 px)"),
    "gaussian_noise": (gaussian_noise, (0.08, 0.12, 0.18, 0.26, 0.38), "noise std (0-1 range)"),
    "jpeg_compression": (jpeg_compression, (25, 18, 15, 10, 7), "JPEG quality"),
    "brightness": (brightness, (0.1, 0.2, 0.3, 0.4, 0.5), "HSV value shift"),
    "contrast": (contrast, (0.4, 0.3, 0.2, 0.1, 0.05), "contrast factor"),
    "hue_shift": (hue_shift, (0.02, 0.04, 0.06, 0.08, 0.10), "hue rotation (turns)"),
}


def conditions(names: Sequence[str] | None = None) -> list[tuple[str, int]]:
    """[("clean", 0), (corruption, severity 1..5), ...] in a fixed order."""
    names = list(CORRUPTIONS) if names is None else list(names)
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown:
        raise ValueError(f"unknown corruption(s) {unknown}; known: {', '.join(CORRUPTIONS)}")
    return [("clean", 0)] + [(n, s) for n in names for s in range(1, SEVERITIES + 1)]


def corrupt(image: np.ndarray, name: str, severity: int, seed: int = 0,
            index: int = 0) -> np.ndarray:
    """One uint8 RGB image under corruption `name` at `severity` (1-5; "clean"/0: unchanged)."""
    if name == "clean" or severity == 0:
        return image
    function, levels, _ = CORRUPTIONS[name]
    if not 1 <= severity <= SEVERITIES:
        raise ValueError(f"severity must be 1..{SEVERITIES}, got {severity}")
    rng = np.random.default_rng([seed, list(CORRUPTIONS).index(name), severity, index])
    return np.ascontiguousarray(function(np.asarray(image, dtype=np.uint8), levels[severity - 1],
                                         rng), dtype=np.uint8)


def corrupted_dataset(paths: Sequence[str], image_size: int, resize_policy: str,
                      plan: list[tuple[str, int]], batch_size: int = 32, seed: int = 0):
    """tf.data batches of float32 images: every image under every condition of `plan`, condition
    by condition, in path order (read and resized as in training, then corrupted)."""
    import tensorflow as tf

    from utils.training import pipeline

    n = len(paths)
    condition = np.repeat(np.arange(len(plan)), n).astype(np.int32)
    index = np.tile(np.arange(n), len(plan)).astype(np.int32)
    files = np.tile(np.asarray(paths, dtype=str), len(plan))

    def apply(image: np.ndarray, which: np.int32, row: np.int32) -> np.ndarray:
        name, severity = plan[int(which)]
        return corrupt(image, name, severity, seed, int(row))

    def load(path, which, row):
        image = pipeline.load_image(path, image_size, resize_policy)
        image = tf.numpy_function(apply, [image, which, row], tf.uint8)
        image.set_shape([image_size, image_size, 3])
        return tf.cast(image, tf.float32)

    data = tf.data.Dataset.from_tensor_slices((files, condition, index))
    data = data.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def predict_conditions(model, rows: pd.DataFrame, image_size: int, resize_policy: str,
                       plan: list[tuple[str, int]], batch_size: int = 32,
                       seed: int = 0) -> np.ndarray:
    """Probabilities (conditions, n, K) of the manifest rows under every condition of `plan`."""
    data = corrupted_dataset(rows["path"].astype(str).tolist(), image_size, resize_policy, plan,
                             batch_size, seed)
    probs = np.asarray(model.predict(data, verbose=0), dtype=np.float64)
    return probs.reshape(len(plan), len(rows), -1)


def _balanced_accuracy(y_true: np.ndarray, probs: np.ndarray, weights: np.ndarray | None,
                       num_classes: int) -> np.ndarray:
    matrices = metrics.confusion_matrices(y_true, metrics.predicted_labels(probs), num_classes,
                                          weights)
    return metrics.rates_from_confusion(matrices)["balanced_accuracy"]


def score_conditions(y_true: np.ndarray, probs: np.ndarray, plan: list[tuple[str, int]],
                     groups: np.ndarray | None, n_boot: int = metrics.DEFAULT_N_BOOT,
                     seed: int = 0) -> pd.DataFrame:
    """Balanced accuracy per condition and its ratio to clean (paired bootstrap CIs)."""
    num_classes = probs.shape[2]
    weights = metrics.bootstrap_weights(groups, len(y_true), n_boot, seed) if n_boot else None
    clean_at = plan.index(("clean", 0))
    point = np.array([_balanced_accuracy(y_true, p, None, num_classes)[0] for p in probs])
    reps = (np.stack([_balanced_accuracy(y_true, p, weights, num_classes) for p in probs])
            if n_boot else None)
    rows = []
    for c, (name, severity) in enumerate(plan):
        ratio = point[c] / point[clean_at] if point[clean_at] > 0 else np.nan
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio_reps = reps[c] / reps[clean_at] if reps is not None else None
        ba = metrics.interval(point[c], reps[c] if reps is not None else None)
        rel = metrics.interval(ratio, ratio_reps)
        parameter = CORRUPTIONS[name][1][severity - 1] if severity else None
        rows.append({"corruption": name, "severity": severity, "parameter": parameter,
                     "balanced_accuracy": ba["value"], "ci_low": ba["ci_low"],
                     "ci_high": ba["ci_high"], "relative_to_clean": rel["value"],
                     "relative_ci_low": rel["ci_low"], "relative_ci_high": rel["ci_high"]})
    return pd.DataFrame(rows)


def summary(table: pd.DataFrame) -> dict[str, Any]:
    """Clean balanced accuracy, mean per corruption over severities, and the overall mean."""
    corrupted = table[table["corruption"] != "clean"]
    per = corrupted.groupby("corruption", sort=False)[["balanced_accuracy",
                                                       "relative_to_clean"]].mean()
    return {
        "clean_balanced_accuracy": float(table.loc[table["corruption"] == "clean",
                                                   "balanced_accuracy"].iloc[0]),
        "mean_balanced_accuracy": float(corrupted["balanced_accuracy"].mean()),
        "mean_relative_to_clean": float(corrupted["relative_to_clean"].mean()),
        "per_corruption": {name: {"mean_balanced_accuracy": float(row.balanced_accuracy),
                                  "mean_relative_to_clean": float(row.relative_to_clean)}
                           for name, row in per.iterrows()},
    }


def corruption_section(model, rows: pd.DataFrame, classes: Sequence[str], image_size: int,
                       resize_policy: str, n_boot: int = metrics.DEFAULT_N_BOOT, seed: int = 0,
                       names: Sequence[str] | None = None,
                       batch_size: int = 32) -> tuple[dict[str, Any], pd.DataFrame]:
    """Predict the manifest `rows` (the test split) under every corruption; returns the
    metrics.json section and the per-condition table (corruptions.csv)."""
    plan = conditions(names)
    probs = predict_conditions(model, rows, image_size, resize_policy, plan, batch_size, seed)
    y_true = rows["label_index"].to_numpy(dtype=int)
    lesions = rows["lesion_id"].fillna(rows["image_id"]).astype(str).to_numpy()
    groups = lesions if (lesions != rows["image_id"].astype(str).to_numpy()).any() else None
    table = score_conditions(y_true, probs, plan, groups, n_boot, seed)
    section = {"n_images": int(len(rows)), "image_size": int(image_size),
               "resize_policy": resize_policy, "severities": SEVERITIES,
               "parameters": {n: {"values": list(CORRUPTIONS[n][1]), "meaning": CORRUPTIONS[n][2]}
                              for n in (names or CORRUPTIONS)},
               **summary(table), "table": table.to_dict(orient="records")}
    return section, table


def plot(table: pd.DataFrame, path: str | os.PathLike | None = None):
    """Balanced accuracy against severity, one line per corruption; clean as a dashed line."""
    from utils.evaluation.plots import finish_figure, new_figure

    figure, (ax,) = new_figure(6.5, 4.5)
    clean = float(table.loc[table["corruption"] == "clean", "balanced_accuracy"].iloc[0])
    for name, rows in table[table["corruption"] != "clean"].groupby("corruption", sort=False):
        ax.plot(rows["severity"], rows["balanced_accuracy"], marker="o", label=name)
    ax.axhline(clean, linestyle="--", color="black", label=f"clean ({clean:.3f})")
    ax.set(xlabel="severity", ylabel="balanced accuracy (test)", ylim=(0, 1.02),
           xticks=range(1, SEVERITIES + 1), title="Balanced accuracy under corruptions")
    ax.legend(fontsize=8, loc="lower left")
    return finish_figure(figure, path)

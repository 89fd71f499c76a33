"""Grad-CAM heatmaps for classifiers built by utils.training.models, and how well they fall on
the lesion.

    heatmaps = gradcam(model, images)                    # (N, H, W) in [0, 1], input resolution
    picture = overlay(images[0], heatmaps[0])            # RGB uint8, for plotting
    energy_inside(heatmaps[0], mask)                     # share of CAM energy inside the lesion
    pointing_game(heatmaps[0], mask, tolerance=5)        # is the peak on the lesion (+- 5 px)?
    scores = localisation_scores(model, test_frame, ham_root, image_size=224)
    summarise_localisation(scores)                       # per-class table

Grad-CAM (Selvaraju et al. 2017): the activations A of the backbone's last convolutional layer
(Backbone.last_conv_layer) are weighted by the spatial mean of d score / d A, summed over channels,
passed through a ReLU, scaled to [0, 1] per image and resized to the input resolution. The score
differentiated is the chosen class's logit, the class score before the softmax, as in the paper: the
head Dense(softmax) is replayed without its activation (same, shared kernel and bias). The softmax
probability would saturate on a confident model (p = 1 - 1e-9), its gradients vanish and the maps
turn blank or uniform. With the models' GAP -> Dense head this is exactly CAM (Zhou et al. 2016).

Masks: HAM10000 lesion segmentations at <root>/<folder>/<image_id>_segmentation.png, where folder
is one of utils.data.datasets.MASK_FOLDERS: the 200x150 masks, the Tschandl masks that
`python -m utils download ham10000 --masks` extracts, or the synthetic dataset's (mask_path_for
finds any of them). Images and masks go through utils.training.pipeline's resize
(`resize_policy`: "crop", "pad", "squash"; the run's config.resize_policy) before scoring.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from scipy import ndimage
from tqdm.auto import tqdm

from utils.data import images as image_files
from utils.data.datasets import HAM_MASKS_TSCHANDL, MASK_FOLDERS, MASK_SUFFIX
from utils.errors import DataError
from utils.training import pipeline
from utils.training.models import backbone_of, backbone_spec_of

POLICY_ALIASES = {"stretch": "squash"}  # older name of pipeline's "squash"


def grad_model(model: keras.Model, layer_name: str | None = None) -> keras.Model:
    """A model returning (activations of `layer_name` in the backbone, class logits (float32)).

    The backbone is a nested sub-model, so its inner layer cannot be reached from the outer graph
    directly (Keras 3): the backbone is re-wrapped with two outputs and the classifier's chain of
    layers (preprocessing -> backbone -> head) is replayed around it. The last layer, the
    Dense(softmax) head, is replayed as features @ kernel + bias on its own variables (no
    activation), so the logits follow the model's weights; softmax(logits) are its predictions.
    """
    head = _logit_head(model)
    base = backbone_of(model)
    layer_name = layer_name or backbone_spec_of(model).last_conv_layer
    inner = keras.Model(base.inputs, [base.get_layer(layer_name).output, base.output])
    inputs = keras.Input(shape=model.input_shape[1:], dtype="float32")
    x, activations = inputs, None
    for layer in model.layers[:-1]:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if layer is base:
            activations, x = inner(x)
        else:
            x = layer(x)
    # the variables themselves (float32, also under mixed precision), not copies: a later
    # training step or load_weights shows in the explainer's logits
    logits = keras.ops.matmul(keras.ops.cast(x, head.kernel.dtype), head.kernel)
    if head.use_bias:
        logits = keras.ops.add(logits, head.bias)
    return keras.Model(inputs, [activations, logits])


def _logit_head(model: keras.Model) -> keras.layers.Dense:
    """The classifier's last layer, a Dense with a softmax (or no) activation, whose pre-activation
    output is the logits."""
    head = model.layers[-1]
    activation = getattr(getattr(head, "activation", None), "__name__", None)
    if not isinstance(head, keras.layers.Dense) or activation not in ("softmax", "linear"):
        raise ValueError(
            f"Grad-CAM needs a classifier ending in a Dense softmax head (build_classifier); the "
            f"last layer of {model.name!r} is {head.name!r} ({type(head).__name__}, activation "
            f"{activation})"
        )
    return head


def _class_indices(class_index, scores: np.ndarray) -> np.ndarray:
    n = scores.shape[0]
    if class_index is None:
        return scores.argmax(axis=1)
    indices = np.broadcast_to(np.asarray(class_index, dtype=int), (n,))
    if indices.min() < 0 or indices.max() >= scores.shape[1]:
        raise ValueError(f"class_index {class_index!r} outside 0..{scores.shape[1] - 1}")
    return indices


def gradcam(
    model: keras.Model,
    images: np.ndarray,
    class_index: int | Sequence[int] | None = None,
    layer_name: str | None = None,
    explainer: keras.Model | None = None,
) -> np.ndarray:
    """Grad-CAM heatmaps in [0, 1] at input resolution, shape (N, H, W) ((H, W) for one image).

    images: (N, H, W, 3) or (H, W, 3) RGB in [0, 255] at the model's input size.
    class_index: None = each image's predicted class; an int = that class for all; a sequence = one
    per image. layer_name: default the registry's last convolutional layer. explainer: a
    grad_model(model, layer_name) to reuse across batches. An all-zero map (no positive evidence)
    stays zero.
    """
    batch = np.asarray(images, dtype="float32")
    single = batch.ndim == 3
    if single:
        batch = batch[None]
    if batch.ndim != 4 or batch.shape[1:] != tuple(model.input_shape[1:]):
        raise ValueError(
            f"images of shape {np.shape(images)} do not match the model input {model.input_shape}"
        )
    heatmaps, _ = _explain(explainer or grad_model(model, layer_name), batch, class_index)
    return heatmaps[0] if single else heatmaps


def _explain(
    explainer: keras.Model, batch: np.ndarray, class_index
) -> tuple[np.ndarray, np.ndarray]:
    """(heatmaps (N, H, W) in [0, 1], predictions (N, classes)) for one batch, one forward pass;
    the score differentiated is the chosen class's logit, the predictions are softmax(logits)."""
    with tf.GradientTape() as tape:
        activations, logits = explainer(tf.convert_to_tensor(batch), training=False)
        logits = tf.cast(logits, tf.float32)
        chosen = _class_indices(class_index, logits.numpy())
        scores = tf.gather(logits, chosen, axis=1, batch_dims=1)
    gradients = tf.cast(tape.gradient(scores, activations), tf.float32)
    activations = tf.cast(activations, tf.float32)
    channel_weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
    cams = tf.nn.relu(tf.reduce_sum(channel_weights * activations, axis=-1))
    peak = tf.reduce_max(cams, axis=(1, 2), keepdims=True)
    cams = tf.math.divide_no_nan(cams, peak)
    heatmaps = tf.image.resize(cams[..., None], batch.shape[1:3], method="bilinear")[..., 0]
    return np.clip(heatmaps.numpy(), 0.0, 1.0), tf.nn.softmax(logits).numpy()


def overlay(
    image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4, colormap: str = "jet"
) -> np.ndarray:
    """The image with the heatmap blended on top, RGB uint8 (heatmap resized to the image)."""
    from matplotlib import colormaps

    rgb = np.clip(np.asarray(image, dtype="float32"), 0, 255)
    heat = np.asarray(heatmap, dtype="float32")
    if heat.shape != rgb.shape[:2]:
        heat = tf.image.resize(heat[..., None], rgb.shape[:2], method="bilinear").numpy()[..., 0]
    colours = colormaps[colormap](np.clip(heat, 0.0, 1.0))[..., :3] * 255.0
    return np.clip((1.0 - alpha) * rgb + alpha * colours, 0, 255).round().astype(np.uint8)


def _check_pair(heatmap: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    heat = np.asarray(heatmap, dtype="float64")
    region = np.asarray(mask).astype(bool)
    if heat.shape != region.shape or heat.ndim != 2:
        raise ValueError(
            f"heatmap {heat.shape} and mask {region.shape} must be 2-D and the same shape"
        )
    return heat, region


def energy_inside(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Share of the heatmap's total energy (its sum) inside the mask; NaN for an all-zero map."""
    heat, region = _check_pair(heatmap, mask)
    total = heat.sum()
    return float(heat[region].sum() / total) if total > 0 else float("nan")


def pointing_game(heatmap: np.ndarray, mask: np.ndarray, tolerance: float = 5.0) -> bool:
    """True when the heatmap's maximum (first one in row-major order) lies within `tolerance`
    pixels (Euclidean) of the mask; False for an empty mask or an all-zero heatmap (no peak)."""
    heat, region = _check_pair(heatmap, mask)
    if not region.any() or not heat.max() > 0:
        return False
    peak = np.unravel_index(np.argmax(heat), heat.shape)
    distance = ndimage.distance_transform_edt(~region)
    return bool(distance[peak] <= tolerance)


def mask_path_for(image_id: str, root: str | os.PathLike) -> Path:
    """The lesion mask of `image_id` in a HAM10000 folder (first found of MASK_FOLDERS)."""
    root = Path(root)
    candidates = [root / folder / f"{image_id}{MASK_SUFFIX}" for folder in MASK_FOLDERS]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise DataError(
        f"no lesion mask for {image_id}: looked for {' and '.join(map(str, candidates))}; "
        f"download the masks with `python -m utils download ham10000 {root} --masks` (they go "
        f"into {HAM_MASKS_TSCHANDL}/) or put the ISIC 2018 task 1 masks in one of those folders"
    )


def _policy(resize_policy: str) -> str:
    policy = POLICY_ALIASES.get(resize_policy, resize_policy)
    if policy not in pipeline.RESIZE_POLICIES:
        valid = ", ".join((*pipeline.RESIZE_POLICIES, *POLICY_ALIASES))
        raise ValueError(f"unknown resize_policy {resize_policy!r}; valid: {valid}")
    return policy


def load_resized(
    path: str | os.PathLike, image_size: int, resize_policy: str = "crop", mask: bool = False
) -> np.ndarray:
    """An image as float32 RGB (size, size, 3) in [0, 255], or a mask as bool (size, size), resized
    by utils.training.pipeline.resize_image (the geometry the model saw: "crop", "pad" or "squash").

    A mask goes through the same resize as a grey image and is thresholded at half intensity, so
    image and mask stay aligned whatever their resolutions (600x450 images, 200x150 masks).
    The file passes the image gate first (utils.data.images): DataError naming a refused file.
    """
    policy = _policy(resize_policy)
    image_files.probe(path)
    if not mask:
        image = pipeline.load_image(tf.constant(str(path)), image_size, policy)
        return image.numpy().astype("float32")
    grey = tf.io.decode_image(
        tf.io.read_file(str(path)), channels=1, expand_animations=False, dtype=tf.uint8
    )
    resized = pipeline.resize_image(tf.image.grayscale_to_rgb(grey), image_size, policy)
    return resized.numpy()[..., 0] > 127


def localisation_scores(
    model: keras.Model,
    frame: pd.DataFrame,
    mask_root: str | os.PathLike,
    image_size: int | None = None,
    resize_policy: str = "crop",
    batch_size: int = 16,
    tolerance: float = 5.0,
    class_index: str = "true",
    layer_name: str | None = None,
) -> pd.DataFrame:
    """Per-image Grad-CAM localisation: image_id, label, label_index, predicted_index,
    energy_inside, pointing_hit.

    frame: a TABLE (image_id, path, label, label_index). class_index "true" explains the true class,
    "predicted" the predicted one. Images without a mask raise DataError (filter the frame first).
    """
    if class_index not in ("true", "predicted"):
        raise ValueError(f"class_index must be 'true' or 'predicted', got {class_index!r}")
    missing = {"image_id", "path", "label", "label_index"} - set(frame.columns)
    if missing:
        raise DataError(
            f"localisation_scores needs a TABLE with columns {sorted(missing)} (missing)"
        )
    size = image_size or int(model.input_shape[1])
    frame = _gated(frame, mask_root)
    explainer = grad_model(model, layer_name)  # default: the registry's last conv layer
    rows = []
    for start in tqdm(range(0, len(frame), batch_size), desc="Grad-CAM", unit="batch", leave=False):
        chunk = frame.iloc[start : start + batch_size]
        images = np.stack([load_resized(path, size, resize_policy) for path in chunk["path"]])
        masks = [
            load_resized(mask_path_for(i, mask_root), size, resize_policy, mask=True)
            for i in chunk["image_id"]
        ]
        target = chunk["label_index"].to_numpy(int) if class_index == "true" else None
        heatmaps, predictions = _explain(explainer, images, target)
        predicted = predictions.argmax(axis=1)
        for (_, row), pred, heat, region in zip(
            chunk.iterrows(), predicted, heatmaps, masks, strict=True
        ):
            rows.append(
                {
                    "image_id": row["image_id"],
                    "label": row["label"],
                    "label_index": int(row["label_index"]),
                    "predicted_index": int(pred),
                    "energy_inside": energy_inside(heat, region),
                    "pointing_hit": pointing_game(heat, region, tolerance),
                    "mask_fraction": float(region.mean()),
                }
            )
    return pd.DataFrame(rows, columns=["image_id", "label", "label_index", "predicted_index",
                                       "energy_inside", "pointing_hit", "mask_fraction"])


def _gated(frame: pd.DataFrame, mask_root: str | os.PathLike) -> pd.DataFrame:
    """The rows whose image and lesion mask pass the image gate; a warning names every file
    refused (the rest of the job goes on)."""
    import warnings

    masks = [mask_path_for(image_id, mask_root) for image_id in frame["image_id"]]
    image_headers, image_problems = image_files.screen(frame["path"].tolist(), progress=False)
    mask_headers, mask_problems = image_files.screen(masks, progress=False)
    for problem in image_problems + mask_problems:
        warnings.warn(f"Grad-CAM skips {problem}", stacklevel=3)
    keep = np.array([a is not None and b is not None
                     for a, b in zip(image_headers, mask_headers)], dtype=bool)
    return frame.loc[keep]


def summarise_localisation(scores: pd.DataFrame) -> pd.DataFrame:
    """Per-class means of localisation_scores, in label_index order, plus an "all" row.

    Columns: label, n_images, energy_inside (mean over non-blank maps), pointing_game (hit rate;
    a blank map misses), mask_fraction (mean lesion share of the image: the energy_inside a
    uniform heatmap would get), blank_maps (all-zero heatmaps: no positive evidence).
    """

    def summary(group: pd.DataFrame, label: str) -> dict:
        return {
            "label": label,
            "n_images": len(group),
            "energy_inside": group["energy_inside"].mean(),
            "pointing_game": group["pointing_hit"].astype(float).mean(),
            "mask_fraction": group["mask_fraction"].mean(),
            "blank_maps": int(group["energy_inside"].isna().sum()),
        }

    ordered = scores.sort_values("label_index", kind="stable")
    rows = [summary(group, label) for label, group in ordered.groupby("label", sort=False)]
    rows.append(summary(scores, "all"))
    return pd.DataFrame(rows)


def overlay_figure(
    model: keras.Model,
    frame: pd.DataFrame,
    classes: Sequence[str],
    image_size: int | None = None,
    resize_policy: str = "crop",
    mask_root: str | os.PathLike | None = None,
    per_class: int = 1,
):
    """A figure of Grad-CAM overlays: for the first `per_class` rows of each class in `frame`
    (a TABLE or manifest: image_id, path, label_index), the image as the model saw it (with the
    lesion mask's outline where `mask_root` holds one) above the heatmap of the predicted class,
    titled true -> predicted (probability). Returns a matplotlib Figure (shown by notebooks)."""
    from utils.evaluation.plots import DisplayFigure

    size = image_size or int(model.input_shape[1])
    chosen = frame.groupby("label_index", sort=True).head(per_class).sort_values("label_index")
    if chosen.empty:
        raise DataError("overlay_figure: no rows to explain")
    images = np.stack([load_resized(path, size, resize_policy) for path in chosen["path"]])
    heatmaps, predictions = _explain(grad_model(model), images, None)
    figure = DisplayFigure(figsize=(2.0 * len(chosen), 4.4))
    for column, (row, image, heat, probs) in enumerate(
        zip(chosen.itertuples(), images, heatmaps, predictions, strict=True)
    ):
        top = figure.add_subplot(2, len(chosen), column + 1)
        top.imshow(image.astype(np.uint8))
        mask = _mask_or_none(row.image_id, mask_root, size, resize_policy)
        if mask is not None:
            top.contour(mask, levels=[0.5], colors="white", linewidths=0.8)
        predicted = int(probs.argmax())
        top.set_title(f"{classes[int(row.label_index)]} -> {classes[predicted]}\n"
                      f"(p = {probs[predicted]:.2f})", fontsize=8)
        bottom = figure.add_subplot(2, len(chosen), len(chosen) + column + 1)
        bottom.imshow(overlay(image, heat))
        for axis in (top, bottom):
            axis.set_xticks([])
            axis.set_yticks([])
    figure.suptitle("Grad-CAM of the predicted class (top: true -> predicted; white: lesion mask)",
                    fontsize=9)
    figure.tight_layout()
    return figure


def _mask_or_none(image_id: str, root: str | os.PathLike | None, size: int,
                  resize_policy: str) -> np.ndarray | None:
    if root is None:
        return None
    try:
        path = mask_path_for(image_id, root)
    except DataError:
        return None
    return load_resized(path, size, resize_policy, mask=True).astype(float)

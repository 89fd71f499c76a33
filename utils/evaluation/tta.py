"""Test-time augmentation: average the class probabilities over dihedral views of each image.

Dermoscopy images have no canonical orientation, so the 8 symmetries of the square (4 rotations
by 90 degrees, each with and without a horizontal flip) are all plausible views. Each view is
applied in the input pipeline (tf.data map), then `model.predict` runs once per view: the model
itself is unchanged (no Lambda layer). The dataset must yield batches in a fixed order (no
shuffling) so the views line up row by row; non-square images need a square model input, since
a 90-degree rotation swaps height and width.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

# view name -> (number of 90-degree counter-clockwise rotations, horizontal flip first)
DIHEDRAL_VIEWS: dict[str, tuple[int, bool]] = {
    "identity": (0, False),
    "rot90": (1, False),
    "rot180": (2, False),
    "rot270": (3, False),
    "flip": (0, True),
    "flip_rot90": (1, True),
    "flip_rot180": (2, True),
    "flip_rot270": (3, True),
}
FLIP_VIEWS: tuple[str, ...] = ("identity", "flip")


def check_views(views: Sequence[str]) -> tuple[str, ...]:
    """Validate view names (raises ValueError listing the valid ones)."""
    views = tuple(views)
    unknown = [v for v in views if v not in DIHEDRAL_VIEWS]
    if unknown or not views:
        raise ValueError(
            f"unknown or empty TTA views {unknown or views}; "
            f"valid views: {', '.join(DIHEDRAL_VIEWS)}"
        )
    return views


def apply_view(images: tf.Tensor, view: str) -> tf.Tensor:
    """One dihedral view of a batch of images (N, H, W, C) or of one image (H, W, C)."""
    rotations, flip = DIHEDRAL_VIEWS[check_views([view])[0]]
    if flip:
        images = tf.image.flip_left_right(images)
    return tf.image.rot90(images, k=rotations) if rotations else images


def _images_only(element: tf.Tensor | tuple) -> tf.Tensor:
    """The images of a dataset element: (images, labels[, weights]) or images alone."""
    return element[0] if isinstance(element, (tuple, list)) else element


def predict_tta(
    model: "tf.keras.Model",
    dataset: tf.data.Dataset,
    views: Sequence[str] = tuple(DIHEDRAL_VIEWS),
    verbose: int = 0,
) -> np.ndarray:
    """Mean class probabilities over `views` (N, K); the dataset yields image batches in order."""
    views = check_views(views)
    total: np.ndarray | None = None
    for view in views:
        view_data = dataset.map(
            lambda *element, v=view: apply_view(_images_only(element), v),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        probs = np.asarray(model.predict(view_data, verbose=verbose), dtype=np.float64)
        if total is not None and probs.shape != total.shape:
            raise ValueError(
                f"view {view!r} gave {probs.shape} predictions, the first view {total.shape}: "
                "the dataset must yield the same batches in the same order every pass"
            )
        total = probs if total is None else total + probs
    return total / len(views)

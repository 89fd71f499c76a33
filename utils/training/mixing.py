"""Mixup and CutMix of training batches, in the tf.data graph (no Lambda layer in the model).

    dataset = mix_batches(dataset, mixup_alpha=0.2, cutmix_alpha=1.0, prob=1.0, seed=0)
    dataset = add_class_weights(dataset, {0: 2.3, 1: 0.4, ...})   # (x, y) -> (x, y, w)

Each batch of (float images, one-hot labels) is mixed with the same batch in reverse order (as
timm does): mixup blends whole images, x = l * x + (1 - l) * x_rev; CutMix pastes a box of
x_rev covering a fraction 1 - l of the image; the labels are blended with the same l (CutMix:
the box's exact area). l ~ Beta(a, a), one draw per batch, from a seeded stream that is new every
epoch (reproducible whatever tf.data's parallelism). With both alphas set, each mixed batch uses
one of the two with equal probability; `prob` is the chance a batch is mixed at all.

Class weights with soft labels: the weight of an example is its label vector times the class
weights (equal to Keras' class_weight on one-hot labels, and the blend of the two weights for a
mixed example), so the pipeline emits it as a sample weight.
"""
from __future__ import annotations

from typing import Mapping

import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE


def _beta(seed: tf.Tensor, alpha: float) -> tf.Tensor:
    """One draw of Beta(alpha, alpha) from a stateless seed (two gamma draws)."""
    gammas = tf.random.stateless_gamma([2], seed=seed, alpha=float(alpha))
    return gammas[0] / tf.maximum(gammas[0] + gammas[1], 1e-12)


def mixup(images: tf.Tensor, labels: tf.Tensor, lam: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Blend each example with the batch reversed: l * a + (1 - l) * b (images and labels)."""
    lam = tf.cast(lam, images.dtype)
    mixed = lam * images + (1.0 - lam) * tf.reverse(images, axis=[0])
    lam_y = tf.cast(lam, labels.dtype)
    return mixed, lam_y * labels + (1.0 - lam_y) * tf.reverse(labels, axis=[0])


def cutmix_box(height: tf.Tensor, width: tf.Tensor, lam: tf.Tensor,
               seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """(top, left, bottom, right) of a box of about (1 - lam) of the image, centre uniform,
    clipped to the image."""
    ratio = tf.sqrt(1.0 - tf.cast(lam, tf.float32))
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    centre = tf.random.stateless_uniform([2], seed=seed)
    cy, cx = centre[0] * h, centre[1] * w
    half_h, half_w = ratio * h / 2.0, ratio * w / 2.0
    top = tf.cast(tf.clip_by_value(tf.round(cy - half_h), 0.0, h), tf.int32)
    bottom = tf.cast(tf.clip_by_value(tf.round(cy + half_h), 0.0, h), tf.int32)
    left = tf.cast(tf.clip_by_value(tf.round(cx - half_w), 0.0, w), tf.int32)
    right = tf.cast(tf.clip_by_value(tf.round(cx + half_w), 0.0, w), tf.int32)
    return top, left, bottom, right


def cutmix(images: tf.Tensor, labels: tf.Tensor, lam: tf.Tensor,
           seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Paste a box of the reversed batch into each image; labels blended by the box's area."""
    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    top, left, bottom, right = cutmix_box(height, width, lam, seed)
    rows = tf.range(height)[:, None]
    cols = tf.range(width)[None, :]
    inside = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
    mask = tf.cast(inside, images.dtype)[None, :, :, None]
    mixed = images * (1.0 - mask) + tf.reverse(images, axis=[0]) * mask
    area = tf.cast((bottom - top) * (right - left), labels.dtype)
    kept = 1.0 - area / tf.cast(height * width, labels.dtype)
    return mixed, kept * labels + (1.0 - kept) * tf.reverse(labels, axis=[0])


def mix_batches(dataset: tf.data.Dataset, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0,
                prob: float = 1.0, seed: int = 0) -> tf.data.Dataset:
    """Mixup and/or CutMix over a dataset of (images, one-hot labels) batches; unchanged when
    both alphas are 0."""
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return dataset
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)

    def mix(batch: tuple[tf.Tensor, tf.Tensor], draw: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        images, labels = batch
        base = tf.stack([draw, tf.constant(0, tf.int64)])
        coins = tf.random.stateless_uniform([2], seed=base + [0, 1])
        use_cutmix = (coins[1] < 0.5) if (mixup_alpha > 0 and cutmix_alpha > 0) else \
            tf.constant(cutmix_alpha > 0)

        def do_mixup() -> tuple[tf.Tensor, tf.Tensor]:
            return mixup(images, labels, _beta(base + [0, 2], mixup_alpha or 1.0))

        def do_cutmix() -> tuple[tf.Tensor, tf.Tensor]:
            return cutmix(images, labels, _beta(base + [0, 3], cutmix_alpha or 1.0),
                          base + [0, 4])

        def mixed() -> tuple[tf.Tensor, tf.Tensor]:
            return tf.cond(use_cutmix, do_cutmix, do_mixup)

        return tf.cond(coins[0] < prob, mixed, lambda: (images, labels))

    return tf.data.Dataset.zip((dataset, seeds)).map(mix, num_parallel_calls=AUTOTUNE)


def add_class_weights(dataset: tf.data.Dataset,
                      class_weight: Mapping[int, float]) -> tf.data.Dataset:
    """(images, labels) -> (images, labels, labels @ weights): class weights as sample weights
    that also hold for soft (mixed) labels."""
    vector = tf.constant([float(class_weight[k]) for k in range(len(class_weight))], tf.float32)

    def weigh(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        return images, labels, tf.linalg.matvec(tf.cast(labels, tf.float32), vector)

    return dataset.map(weigh, num_parallel_calls=AUTOTUNE)


def mixes(config: object) -> bool:
    """True when a TrainConfig turns mixup or CutMix on."""
    return float(getattr(config, "mixup_alpha", 0.0)) > 0 or \
        float(getattr(config, "cutmix_alpha", 0.0)) > 0

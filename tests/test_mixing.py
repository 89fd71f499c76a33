"""utils.training.mixing: mixup and CutMix in the tf.data graph (labels blended by exactly the
image share they got, seeded per batch, new every epoch) and class weights as sample weights."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

tf = pytest.importorskip("tensorflow")

from utils.training import mixing  # noqa: E402


def _batch(n: int = 6, size: int = 8, classes: int = 3):
    images = np.stack([np.full((size, size, 3), 10.0 * (i + 1), np.float32) for i in range(n)])
    labels = np.eye(classes, dtype=np.float32)[np.arange(n) % classes]
    return tf.constant(images), tf.constant(labels)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(lam=st.floats(0.0, 1.0))
def test_mixup_blends_images_and_labels_with_the_same_weight(lam):
    images, labels = _batch()
    mixed, soft = mixing.mixup(images, labels, tf.constant(lam))
    np.testing.assert_allclose(mixed.numpy(), lam * images.numpy() + (1 - lam) *
                               images.numpy()[::-1], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(soft.numpy().sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(soft.numpy(), lam * labels.numpy() + (1 - lam) *
                               labels.numpy()[::-1], atol=1e-6)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(lam=st.floats(0.0, 1.0), seed=st.integers(0, 1000))
def test_cutmix_label_weight_is_the_pasted_area(lam, seed):
    images, labels = _batch(size=10)
    mixed, soft = mixing.cutmix(images, labels, tf.constant(lam),
                                tf.constant([seed, 0], tf.int64))
    pasted = (mixed.numpy() != images.numpy())[0, :, :, 0].mean()  # image 0 and 5 differ
    kept = soft.numpy()[0, 0]  # image 0 is class 0; its partner (image 5) is class 2
    assert kept == pytest.approx(1.0 - pasted, abs=1e-6)
    np.testing.assert_allclose(soft.numpy().sum(1), 1.0, atol=1e-6)


def test_mix_batches_is_seeded_and_changes_every_epoch():
    images, labels = _batch(n=8)
    data = tf.data.Dataset.from_tensors((images, labels)).repeat(3)

    def epochs(seed):
        mixed = mixing.mix_batches(data, mixup_alpha=0.4, cutmix_alpha=1.0, seed=seed)
        return [np.concatenate([b[1] for b in mixed.as_numpy_iterator()]) for _ in range(2)]

    first, again, other = epochs(1), epochs(1), epochs(2)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], first[1])  # a new draw every epoch
    assert not np.array_equal(first[0], other[0])
    assert mixing.mix_batches(data) is data  # both alphas 0: untouched
    untouched = mixing.mix_batches(data, mixup_alpha=0.4, prob=0.0, seed=1)
    np.testing.assert_array_equal(next(untouched.as_numpy_iterator())[1], labels.numpy())


def test_class_weights_travel_as_sample_weights_for_soft_labels():
    images, labels = _batch(n=3)
    soft = tf.constant([[1.0, 0.0, 0.0], [0.0, 0.25, 0.75], [0.0, 1.0, 0.0]])
    data = tf.data.Dataset.from_tensors((images, soft))
    weighted = next(mixing.add_class_weights(data, {0: 2.0, 1: 0.5, 2: 4.0})
                    .as_numpy_iterator())
    np.testing.assert_allclose(weighted[2], [2.0, 0.25 * 0.5 + 0.75 * 4.0, 0.5])

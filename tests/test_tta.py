"""Test-time augmentation over dihedral views."""
from __future__ import annotations

import numpy as np
import pytest

from utils.evaluation import tta

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")


def tiny_model(invariant: bool, seed: int = 0) -> "keras.Model":
    """Global average pooling is invariant to every flip and rotation; Flatten is not."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    pooled = (
        keras.layers.GlobalAveragePooling2D()(inputs)
        if invariant
        else keras.layers.Flatten()(inputs)
    )
    outputs = keras.layers.Dense(4, activation="softmax")(pooled)
    return keras.Model(inputs, outputs)


def image_dataset(with_labels: bool) -> "tf.data.Dataset":
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, size=(10, 8, 8, 3)).astype("float32")
    labels = np.eye(4, dtype="float32")[rng.integers(0, 4, 10)]
    data = (images, labels) if with_labels else images
    return tf.data.Dataset.from_tensor_slices(data).batch(4)


def test_views_are_the_eight_symmetries_of_the_square():
    image = tf.reshape(tf.range(16, dtype=tf.float32), (4, 4, 1))
    views = {name: tta.apply_view(image, name).numpy().tobytes() for name in tta.DIHEDRAL_VIEWS}
    assert len(set(views.values())) == 8
    np.testing.assert_array_equal(tta.apply_view(image, "flip_rot180"),
                                  tf.image.flip_up_down(image))
    with pytest.raises(ValueError, match="valid views"):
        tta.check_views(["rot45"])


@pytest.mark.parametrize("with_labels", [True, False])
def test_invariant_model_gives_plain_predictions(with_labels):
    model = tiny_model(invariant=True)
    data = image_dataset(with_labels)
    plain = model.predict(data, verbose=0)
    averaged = tta.predict_tta(model, data)
    np.testing.assert_allclose(averaged, plain, rtol=1e-5, atol=1e-6)


def test_non_invariant_model_differs_and_identity_view_is_plain():
    model = tiny_model(invariant=False)
    data = image_dataset(True)
    plain = model.predict(data, verbose=0)
    averaged = tta.predict_tta(model, data)
    assert np.abs(averaged - plain).max() > 1e-3
    np.testing.assert_allclose(averaged.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(tta.predict_tta(model, data, views=["identity"]), plain, rtol=1e-6)
    flips = tta.predict_tta(model, data, views=tta.FLIP_VIEWS)
    flipped = model.predict(data.map(lambda x, y: tf.image.flip_left_right(x)), verbose=0)
    np.testing.assert_allclose(flips, (plain + flipped) / 2, rtol=1e-5, atol=1e-6)

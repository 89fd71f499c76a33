"""Transforms of utils.augmentation.transforms: shape/dtype, determinism, reflected borders,
colour constancy,
composition records, online (tf.numpy_function) and Keras-layer augmentation, augment modes."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from utils.augmentation import modes
from utils.augmentation import transforms as augment
from utils.augmentation.transforms import AugmentConfig
from utils.errors import DataError


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A 90x120 textured RGB image with a dark blob, all values in [40, 230]."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:90, 0:120]
    blob = np.exp(-(((yy - 40) / 20.0) ** 2 + ((xx - 70) / 28.0) ** 2))
    base = np.stack([200 - 120 * blob, 170 - 110 * blob, 150 - 100 * blob], axis=-1)
    base += rng.normal(0, 8, base.shape) + 0.2 * xx[..., None]
    return np.clip(base, 40, 230).astype(np.uint8)


@pytest.mark.parametrize("name", augment.TRANSFORM_NAMES)
def test_transform_keeps_shape_dtype_and_is_deterministic(image, name):
    first = augment.apply_transform(name, image, np.random.default_rng(3))
    again = augment.apply_transform(name, image, np.random.default_rng(3))
    assert first.shape == image.shape and first.dtype == np.uint8
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, image), f"{name} left the image unchanged"


@pytest.mark.parametrize("name", ["rotate", "zoom", "shift", "brightness_contrast", "gamma",
                                  "hue_saturation", "blur", "noise"])
def test_random_transform_depends_on_rng(image, name):
    outputs = {augment.apply_transform(name, image, np.random.default_rng(s)).tobytes()
               for s in range(4)}
    assert len(outputs) > 1


def test_plain_functions_match_registry(image):
    expected = augment.apply_transform("rotate", image, np.random.default_rng(1))
    np.testing.assert_array_equal(augment.rotate(image, np.random.default_rng(1)), expected)
    np.testing.assert_array_equal(augment.flip_horizontal(image, None), image[:, ::-1])
    np.testing.assert_array_equal(augment.flip_vertical(image, None), image[::-1])


def test_rotation_reflects_borders_no_black_corners(image):
    config = AugmentConfig(rotation_degrees=180)
    for seed in range(6):
        rotated = augment.rotate(image, np.random.default_rng(seed), config)
        # bilinear interpolation of values >= 40 stays >= 40: any constant (black) fill would not
        assert rotated.min() >= image.min() - 1
        corners = rotated[[0, 0, -1, -1], [0, -1, 0, -1]]
        assert corners.min() >= image.min() - 1


def test_shades_of_gray_equalises_channel_means(image):
    cast = np.clip(image.astype(np.float32) * np.array([1.0, 0.75, 0.55]), 0, 255).astype(np.uint8)
    means_before = cast.reshape(-1, 3).mean(axis=0)
    assert means_before.max() / means_before.min() > 1.5
    corrected = augment.shades_of_gray(cast)
    means_after = corrected.reshape(-1, 3).mean(axis=0)
    assert corrected.dtype == np.uint8 and corrected.shape == cast.shape
    assert means_after.max() / means_after.min() < 1.03


def test_augment_records_and_replays_its_transforms(image):
    out, applied = augment.augment(image, np.random.default_rng(11))
    assert out.shape == image.shape and out.dtype == np.uint8
    names = [step["name"] for step in applied]
    assert set(names) <= set(augment.TRANSFORM_NAMES) and names  # p_rotate=1: never empty
    np.testing.assert_array_equal(augment.apply_augmentation(image, applied), out)
    again, applied_again = augment.augment(image, np.random.default_rng(11))
    np.testing.assert_array_equal(again, out)
    assert applied_again == applied
    replayed = augment.apply_augmentation(image, json.loads(augment.transforms_json(applied)))
    np.testing.assert_array_equal(replayed, out)


def test_augment_resizes_first_and_normalises_colour(image):
    config = AugmentConfig(image_size=45, colour_constancy=True)
    out, applied = augment.augment(image, np.random.default_rng(0), config)
    assert out.shape == (45, 60, 3)
    assert [s["name"] for s in applied[:2]] == ["resize", "shades_of_gray"]


def test_probabilities_zero_apply_nothing(image):
    fields = AugmentConfig.__dataclass_fields__
    config = AugmentConfig(**{f: 0.0 for f in fields if f.startswith("p_")})
    out, applied = augment.augment(image, np.random.default_rng(0), config)
    assert applied == []
    np.testing.assert_array_equal(out, image)


def test_config_rejects_bad_values_and_round_trips():
    with pytest.raises(ValueError, match="p_rotate"):
        AugmentConfig(p_rotate=1.5)
    with pytest.raises(ValueError, match="zoom_range"):
        AugmentConfig(zoom_range=(1.2, 0.9))
    config = AugmentConfig(image_size=64, zoom_range=(0.8, 1.1))
    assert AugmentConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown transform"):
        augment.get_transform("solarize")
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        augment.augment(np.zeros((8, 8), np.uint8), np.random.default_rng(0))


def test_online_augment_fn_in_tf_data_is_reproducible_with_element_seeds(image):
    import tensorflow as tf

    fn = augment.online_augment_fn(AugmentConfig(), seed=5)
    single = fn(tf.constant(image))
    assert single.dtype == tf.uint8 and tuple(single.shape) == image.shape
    images = tf.data.Dataset.from_tensors(tf.constant(image)).repeat(6).enumerate()

    def run() -> list[bytes]:
        mapped = images.map(lambda i, x: fn(x, i), num_parallel_calls=3)
        return [element.numpy().tobytes() for element in mapped]

    first, second = run(), run()
    assert first == second
    assert len(set(first)) == 6  # each element its own transforms
    expected = augment.augment(image, np.random.default_rng([5, 2]), AugmentConfig())[0]
    np.testing.assert_array_equal(np.frombuffer(first[2], np.uint8).reshape(image.shape), expected)


def test_keras_augment_layers_are_serialisable(tmp_path, image):
    import keras

    layers = augment.keras_augment_layers(AugmentConfig(), seed=1)
    names = [type(layer).__name__ for layer in layers.layers]
    assert "Lambda" not in names
    assert {"RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomContrast",
            "RandomBrightness"} <= set(names)
    rotation = next(layer for layer in layers.layers if type(layer).__name__ == "RandomRotation")
    assert rotation.fill_mode == "reflect"
    model = keras.Sequential([keras.Input((90, 120, 3)), layers])
    model.save(tmp_path / "augment.keras")
    loaded = keras.saving.load_model(tmp_path / "augment.keras", safe_mode=True)
    batch = np.stack([image, image]).astype("float32")
    out = np.asarray(loaded(batch, training=True))
    assert out.shape == batch.shape
    assert not np.allclose(out, batch)
    np.testing.assert_allclose(np.asarray(loaded(batch, training=False)), batch)


def _manifest(with_augmented: bool) -> pd.DataFrame:
    rows = pd.DataFrame({"image_id": ["a", "b", "c"], "path": ["/x/a.jpg", "/x/b.jpg", "/x/c.jpg"],
                         "label": ["nv", "df", "nv"], "lesion_id": ["la", "lb", "lc"],
                         "split": ["train", "train", "val"]})
    if with_augmented:
        rows["augmented"] = False
        rows.loc[len(rows)] = {"image_id": "b__aug0", "path": "/p/b__aug0.jpg", "label": "df",
                               "lesion_id": "lb", "split": "train", "augmented": True}
    return rows


def test_augment_modes_choose_rows_and_online_augmentation():
    balanced, plain = _manifest(True), _manifest(False)
    assert len(modes.training_rows("none", balanced)) == 3
    assert len(modes.training_rows("online", plain)) == 3
    assert len(modes.training_rows("offline", balanced)) == 4
    assert len(modes.training_rows("both", balanced)) == 4
    assert [modes.uses_online(m) for m in modes.AUGMENT_MODES] == [False, True, False, True]
    assert [modes.uses_offline(m) for m in modes.AUGMENT_MODES] == [False, False, True, True]
    with pytest.raises(DataError, match="python -m utils balance"):
        modes.training_rows("offline", plain)
    with pytest.raises(ValueError, match="unknown augment mode"):
        modes.training_rows("sometimes", plain)

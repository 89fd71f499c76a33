"""Backbone registry: names, preprocessing layers equal to keras' preprocess_input, layer names."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from utils.training.backbones import (
    CaffePreprocess,
    get_backbone,
    list_backbones,
    preprocessing_layers,
)

REQUIRED = {
    "VGG16",
    "ResNet50",
    "InceptionV3",
    "DenseNet121",
    "DenseNet201",
    "InceptionResNetV2",
    "EfficientNetB0",
    "MobileNetV2",
}


def test_registry_holds_the_required_backbones_sorted():
    names = list_backbones()
    assert REQUIRED <= set(names)
    assert list(names) == sorted(names)


def test_get_backbone_is_case_insensitive():
    assert get_backbone("densenet121").name == "DenseNet121"
    assert get_backbone("MOBILENETV2") is get_backbone("MobileNetV2")
    spec = get_backbone("VGG16")
    assert get_backbone(spec) is spec


def test_unknown_backbone_error_lists_valid_names():
    with pytest.raises(ValueError) as error:
        get_backbone("ResNet9000")
    message = str(error.value)
    assert "ResNet9000" in message
    for name in list_backbones():
        assert name in message


def test_backbone_entries_are_frozen():
    with pytest.raises(AttributeError):
        get_backbone("VGG16").default_size = 64  # type: ignore[misc]


def _apply(layers: list[keras.layers.Layer], images: np.ndarray) -> np.ndarray:
    x = keras.ops.convert_to_tensor(images)
    for layer in layers:
        x = layer(x)
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize("name", list_backbones())
def test_preprocessing_layer_equals_keras_preprocess_input(name):
    spec = get_backbone(name)
    images = np.random.default_rng(0).uniform(0, 255, size=(2, 8, 8, 3)).astype("float32")
    expected = spec.preprocess_input()(images.copy())
    produced = _apply(spec.preprocessing_layers(), images)
    assert produced.shape == images.shape
    np.testing.assert_allclose(produced, expected, rtol=1e-5, atol=1e-4)
    if spec.preprocessing != "none":  # a real transform, not the identity
        assert not np.allclose(produced, images)


def test_preprocessing_modes_cover_the_three_keras_conventions():
    modes = {get_backbone(name).preprocessing for name in list_backbones()}
    assert modes == {"tf", "torch", "caffe", "none"}
    with pytest.raises(ValueError, match="unknown preprocessing mode"):
        preprocessing_layers("bgr")


def test_caffe_layer_config_round_trips():
    layer = CaffePreprocess(name="caffe")
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(clone, CaffePreprocess)
    assert clone.mean_bgr == layer.mean_bgr
    pixel = np.array([[[[10.0, 20.0, 30.0]]]], dtype="float32")  # RGB
    np.testing.assert_allclose(
        _apply([clone], pixel)[0, 0, 0], [30 - 103.939, 20 - 116.779, 10 - 123.68], rtol=1e-6
    )


def test_inception_v3_boundary_matches_the_keras_fine_tuning_guide():
    """The Keras guide trains InceptionV3's top two blocks: layers[249:]; our boundary mixed8 is
    layer 248, a weightless concatenation, so the trained weights are the same."""
    spec = get_backbone("InceptionV3")
    model = spec.constructor(include_top=False, weights=None, input_shape=(75, 75, 3))
    names = [layer.name for layer in model.layers]
    assert names.index(spec.unfreeze_from) == 248
    assert not model.get_layer(spec.unfreeze_from).weights


def test_weights_file_names():
    assert get_backbone("DenseNet201").imagenet_weights_file() == (
        "densenet201_weights_tf_dim_ordering_tf_kernels_notop.h5"
    )
    mobilenet = get_backbone("MobileNetV2")
    assert mobilenet.imagenet_weights_file(96).endswith("_1.0_96_no_top.h5")
    assert mobilenet.imagenet_weights_file(64).endswith("_1.0_224_no_top.h5")

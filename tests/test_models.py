"""Classifier factory: every registered backbone builds, trains a step, loads weights, saves/loads
safely, fine-tunes from its boundary, fails clearly offline, and runs under MirroredStrategy."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import urllib.error

import h5py
import keras
import numpy as np
import pytest
from keras.src.backend import config as keras_config
from keras.src.legacy.saving import legacy_h5_format
from keras.src.utils import file_utils

from utils import paths
from utils.errors import ModelFileError
from utils.training.backbones import get_backbone, list_backbones
from utils.training.models import (
    FROM_SCRATCH_BN_MOMENTUM,
    WeightsUnavailableError,
    backbone_of,
    backbone_spec_of,
    build_backbone,
    build_classifier,
    freeze_backbone,
    keras_cache_dir,
    load_model,
    unfreeze_from,
)

NUM_CLASSES = 3


def _batch(size: int, n: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, size=(n, size, size, 3)).astype("float32")
    labels = np.eye(NUM_CLASSES, dtype="float32")[np.arange(n) % NUM_CLASSES]
    return images, labels


def _randomise(model: keras.Model, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    model.set_weights(
        [
            rng.normal(0, 0.05, w.shape).astype(w.dtype) + (w if w.ndim == 1 else 0)
            for w in model.get_weights()
        ]
    )


def _batchnorms(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    return [
        layer
        for layer in backbone_of(model).layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty Keras cache in tmp_path and a network that fails like an unplugged machine;
    yields the list of (origin, target) downloads keras attempted."""
    attempts: list[tuple[str, str]] = []

    def unreachable(origin, target, *args, **kwargs):
        attempts.append((origin, target))
        raise urllib.error.URLError(OSError(101, "Network is unreachable"))

    home = tmp_path / "keras_home"
    home.mkdir()  # importing keras creates ~/.keras; an absent one would fall back to /tmp/.keras
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(home))  # what Keras read at import
    monkeypatch.setenv("KERAS_HOME", str(home))  # what a user sets before starting Python
    monkeypatch.setattr(file_utils, "urlretrieve", unreachable)
    return attempts


@pytest.mark.parametrize("name", list_backbones())
def test_builds_at_default_size(name):
    spec = get_backbone(name)
    model = build_classifier(name, NUM_CLASSES)
    assert model.input_shape == (None, spec.default_size, spec.default_size, 3)
    assert model.output_shape == (None, NUM_CLASSES)
    assert model.get_layer("predictions").dtype_policy.name == "float32"
    assert backbone_spec_of(model) is spec


@pytest.mark.parametrize("name", list_backbones())
def test_minimum_size_build_matches_keras_and_trains_one_step(name):
    spec = get_backbone(name)
    size = spec.min_size
    model = build_classifier(name, NUM_CLASSES, image_size=size)
    base = backbone_of(model)
    reference = spec.constructor(include_top=False, weights=None, input_shape=(size, size, 3))
    assert base.count_params() == reference.count_params()
    features = base.output_shape[-1]
    assert model.count_params() == reference.count_params() + features * NUM_CLASSES + NUM_CLASSES
    # the registry's layer names are real: boundary before the Grad-CAM layer, nothing with
    # weights after the Grad-CAM layer (it is the last feature map)
    names = [layer.name for layer in base.layers]
    start, conv = names.index(spec.unfreeze_from), names.index(spec.last_conv_layer)
    assert 0 < start < conv
    assert all(not layer.weights for layer in base.layers[conv + 1 :])
    # from scratch: BatchNorm momentum lowered so inference-mode statistics keep up
    assert all(bn.momentum == FROM_SCRATCH_BN_MOMENTUM for bn in _batchnorms(model))
    assert _batchnorms(model) or name == "VGG16"  # the only registered backbone without BatchNorm

    images, labels = _batch(size)
    before = model.get_layer("predictions").get_weights()[0].copy()
    # run_eagerly: tracing DenseNet201's train step costs ~100 s on this CPU; eager takes seconds
    model.compile(
        optimizer=keras.optimizers.Adam(1e-4), loss="categorical_crossentropy", run_eagerly=True
    )
    loss = model.train_on_batch(images, labels)
    assert np.isfinite(loss)
    assert not np.allclose(model.get_layer("predictions").get_weights()[0], before)
    probabilities = model.predict_on_batch(images)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", ["VGG16", "InceptionV3"])
def test_below_minimum_size_names_the_minimum(name):
    spec = get_backbone(name)
    with pytest.raises(ValueError, match=f">= {spec.min_size}"):
        build_classifier(name, NUM_CLASSES, image_size=spec.min_size - 1)


def test_argument_validation():
    with pytest.raises(ValueError, match="num_classes"):
        build_classifier("VGG16", 1, image_size=32)
    with pytest.raises(ValueError, match="dropout"):
        build_classifier("VGG16", 3, image_size=32, dropout=1.0)
    with pytest.raises(ValueError, match="valid backbones"):
        build_classifier("AlexNet", 3)


def test_weights_from_a_keras3_weights_file(tmp_path):
    source = build_backbone("ResNet50", image_size=32)
    _randomise(source)
    path = tmp_path / "resnet50_notop.weights.h5"
    source.save_weights(path)
    model = build_classifier("resnet50", NUM_CLASSES, weights=path, image_size=32)
    for loaded, written in zip(backbone_of(model).get_weights(), source.get_weights(), strict=True):
        np.testing.assert_array_equal(loaded, written)


def _write_keras_distributed_h5(model: keras.Model, path) -> None:
    """A legacy-format no-top file, laid out like the ones Keras downloads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, model)


def test_weights_from_a_keras_distributed_notop_file_path_or_cache(tmp_path, offline):
    spec = get_backbone("MobileNetV2")
    source = build_backbone(spec, image_size=96)
    _randomise(source)
    download = tmp_path / "downloads" / spec.imagenet_weights_file(96)
    _write_keras_distributed_h5(source, download)

    by_path = build_classifier(spec.name, NUM_CLASSES, weights=download, image_size=96)
    for loaded, written in zip(
        backbone_of(by_path).get_weights(), source.get_weights(), strict=True
    ):
        np.testing.assert_array_equal(loaded, written)
    # pretrained: Keras' own BatchNorm momentum is kept (0.999 in MobileNetV2) unless asked
    assert {bn.momentum for bn in _batchnorms(by_path)} == {0.999}

    # the documented offline route: the same file placed in the Keras cache under its own name
    _write_keras_distributed_h5(source, keras_cache_dir() / spec.imagenet_weights_file(96))
    by_cache = build_classifier(
        spec.name, NUM_CLASSES, weights="imagenet", image_size=96, bn_momentum=0.95
    )
    assert offline == []  # nothing was downloaded
    assert {bn.momentum for bn in _batchnorms(by_cache)} == {0.95}
    for loaded, written in zip(
        backbone_of(by_cache).get_weights(), source.get_weights(), strict=True
    ):
        np.testing.assert_array_equal(loaded, written)


def test_missing_weights_file_is_named(tmp_path):
    missing = tmp_path / "nowhere.weights.h5"
    with pytest.raises(FileNotFoundError, match="nowhere.weights.h5"):
        build_classifier("VGG16", NUM_CLASSES, weights=missing, image_size=32)


@pytest.mark.filterwarnings(
    "ignore:`input_shape` is undefined or non-square"
)  # MobileNetV2 < 96 px
@pytest.mark.parametrize("name", list_backbones())
def test_imagenet_offline_names_the_exact_file_and_folder(name, offline):
    spec = get_backbone(name)
    size = spec.min_size  # MobileNetV2: 32 px -> keras asks for its 224 px file
    with pytest.raises(WeightsUnavailableError) as error:
        build_classifier(name, NUM_CLASSES, weights="imagenet", image_size=size)
    # keras itself tried to fetch exactly the file the registry names, into the cache we name
    ((origin, target),) = offline
    assert origin == spec.imagenet_weights_url(size)
    expected = keras_cache_dir() / spec.imagenet_weights_file(size)
    assert target.startswith(str(expected))
    message = str(error.value)
    assert str(expected) in message and origin in message
    assert "Network is unreachable" in message


def test_imagenet_with_a_corrupt_cached_file_says_to_replace_it(offline):
    spec = get_backbone("VGG16")
    cached = keras_cache_dir() / spec.imagenet_weights_file()
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not an HDF5 file")  # keras checks the md5, then tries to download again
    with pytest.raises(WeightsUnavailableError, match="replace it with a fresh download"):
        build_classifier("VGG16", NUM_CLASSES, weights="imagenet", image_size=32)


@pytest.mark.parametrize("name", ["VGG16", "MobileNetV2"])  # caffe (custom layer), tf preprocessing
def test_save_and_safe_load_predict_the_same(name, tmp_path):
    spec = get_backbone(name)
    model = build_classifier(name, NUM_CLASSES, image_size=spec.min_size)
    _randomise(model, seed=3)
    images, _ = _batch(spec.min_size, n=3, seed=4)
    expected = keras.ops.convert_to_numpy(model(images, training=False))  # eager: no tracing
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = load_model(path)
    produced = keras.ops.convert_to_numpy(loaded(images, training=False))
    np.testing.assert_allclose(produced, expected, rtol=1e-5, atol=1e-6)
    assert backbone_spec_of(loaded) is spec
    assert {bn.momentum for bn in _batchnorms(loaded)} <= {
        FROM_SCRATCH_BN_MOMENTUM
    }  # none in VGG16
    assert bool(_batchnorms(loaded)) == (name != "VGG16")
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        load_model(tmp_path / "missing.keras")


def test_a_lambda_model_is_refused_naming_the_file_and_nothing_of_it_runs(tmp_path):
    """main: a 35-line traceback advising safe_mode=False, the file not named."""
    marker = tmp_path / "code-ran"
    where = str(marker)
    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(lambda x: (open(where, "w").close(), x)[1])(inputs)
    keras.Model(inputs, outputs).save(tmp_path / "lambda.keras")
    marker.unlink()  # building the model called the lambda once; loading must not
    with pytest.raises(ModelFileError) as error:
        load_model(tmp_path / "lambda.keras")
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'lambda.keras'}: refused")
    assert "safe_mode=False" not in message and "\n" not in message
    assert not marker.exists()
    # control: the marker does catch the file's code running when safe mode is off
    keras.saving.load_model(tmp_path / "lambda.keras", safe_mode=False)
    assert marker.exists()


def test_truncated_or_foreign_model_files_are_named(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.save(tmp_path / "model.keras")
    data = (tmp_path / "model.keras").read_bytes()
    (tmp_path / "cut.keras").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.keras").write_text("hello")
    (tmp_path / "text.h5").write_text("hello")
    for name in ("cut.keras", "text.keras", "text.h5"):
        with pytest.raises(ModelFileError, match=f"{tmp_path / name}: "):
            load_model(tmp_path / name)


def test_weights_of_another_architecture_are_named(tmp_path):
    weights = tmp_path / "mobilenetv2_notop.weights.h5"
    build_backbone("mobilenetv2", image_size=32).save_weights(str(weights))
    with pytest.raises(ModelFileError) as error:
        build_classifier("VGG16", NUM_CLASSES, weights=weights, image_size=32)
    message = str(error.value)
    assert message.startswith(f"{weights}: is not a no-top weights file of VGG16 at 32 px")
    assert "\n" not in message
    truncated = tmp_path / "cut.weights.h5"
    truncated.write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(ModelFileError, match="cut.weights.h5: is not a no-top weights file"):
        build_classifier("MobileNetV2", NUM_CLASSES, weights=truncated, image_size=32)


def test_torch_preprocessing_survives_a_safe_save_and_load(tmp_path):
    """DenseNet's preprocessing (Rescaling + Normalization) without the slow-to-save DenseNet."""
    spec = get_backbone("DenseNet121")
    inputs = keras.Input((8, 8, 3))
    x = inputs
    for layer in spec.preprocessing_layers():
        x = layer(x)
    model = keras.Model(inputs, x)
    model.save(tmp_path / "torch.keras")
    loaded = load_model(tmp_path / "torch.keras")
    images, _ = _batch(8)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(images)),
        spec.preprocess_input()(images.copy()),
        rtol=1e-5,
        atol=1e-4,
    )


@pytest.mark.parametrize("name", ["ResNet50", "InceptionV3", "MobileNetV2"])
def test_freeze_then_unfreeze_from_the_boundary(name):
    spec = get_backbone(name)
    model = build_classifier(name, NUM_CLASSES, image_size=spec.min_size)
    head_weights = len(model.get_layer("predictions").trainable_weights)

    freeze_backbone(model)
    assert not backbone_of(model).trainable
    assert len(model.trainable_weights) == head_weights

    unfreeze_from(model)
    layers = backbone_of(model).layers
    start = [layer.name for layer in layers].index(spec.unfreeze_from)
    for index, layer in enumerate(layers):
        if isinstance(layer, keras.layers.BatchNormalization):
            assert not layer.trainable, layer.name
        else:
            assert layer.trainable == (index >= start), layer.name
    expected = sum(
        len(layer.trainable_weights)
        for layer in layers[start:]
        if not isinstance(layer, keras.layers.BatchNormalization)
    )
    assert expected > 0
    assert len(model.trainable_weights) == expected + head_weights

    with pytest.raises(ValueError, match="not a layer of backbone"):
        unfreeze_from(model, "no_such_layer")


def test_frozen_batchnorm_runs_in_inference_mode():
    """After unfreeze_from, a training step leaves every BatchNorm's moving statistics unchanged."""
    model = build_classifier("MobileNetV2", NUM_CLASSES, image_size=32)
    unfreeze_from(model)
    bns = _batchnorms(model)
    before = [bn.moving_mean.numpy().copy() for bn in bns]
    model.compile(optimizer="sgd", loss="categorical_crossentropy", run_eagerly=True)
    model.train_on_batch(*_batch(32, n=4))
    for bn, mean in zip(bns, before, strict=True):
        np.testing.assert_array_equal(bn.moving_mean.numpy(), mean)


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
    from utils.training.models import build_classifier
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = build_classifier("VGG16", 3, image_size=32)
        model.compile(optimizer="adam", loss="categorical_crossentropy")
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    labels = np.eye(3, dtype="float32")[[0, 1, 2, 0]]
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
    history = model.fit(dataset, epochs=1, verbose=0)
    loss = history.history["loss"][0]
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "loss": loss}))
    """
)


def test_mirrored_strategy_over_two_logical_cpus_trains_one_step():
    # logical devices must be configured before TensorFlow initialises them: a fresh process
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT],
        cwd=paths.repo_root(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert np.isfinite(report["loss"])


def test_mixed_precision_keeps_preprocessing_and_softmax_in_float32():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_classifier("DenseNet121", NUM_CLASSES, image_size=32)
        assert backbone_of(model).dtype_policy.compute_dtype == "float16"
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("preprocess_normalize").dtype_policy.name == "float32"
    assert model.get_layer("predictions").dtype_policy.name == "float32"
    probabilities = model(_batch(32)[0], training=False)
    assert probabilities.dtype == "float32"
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(probabilities).sum(axis=1), 1.0, rtol=1e-3
    )

"""Classifier factory on top of the backbone registry, two-stage fine-tuning helpers, and loading.

    model = build_classifier("DenseNet121", num_classes=7, weights="imagenet", image_size=224)

The model takes RGB float32 images in [0, 255] of shape (size, size, 3) and returns softmax
probabilities over `num_classes`:

    Input -> backbone preprocessing layer(s) -> backbone (include_top=False, a nested sub-model
    named after the registry key, e.g. "densenet121") -> GlobalAveragePooling2D -> Dropout
    -> Dense(num_classes, softmax, float32)

Weights (`weights=`):
  * None: random initialisation (training from scratch). BatchNormalization momentum is then set
    to 0.9 (Keras' 0.99-0.999 makes a from-scratch network predict one class in inference mode).
  * "imagenet": Keras downloads the no-top weights once and caches them in ~/.keras/models/
    ($KERAS_HOME/models/ if set). On a machine without internet, copy the Keras-distributed file
    there under its own name, e.g.
    ~/.keras/models/densenet201_weights_tf_dim_ordering_tf_kernels_notop.h5
    (Backbone.imagenet_weights_file / imagenet_weights_url give the name and URL); without it,
    build_classifier raises WeightsUnavailableError naming that file, its URL and the folder.
  * a path to a local weights file of the backbone WITHOUT its top, in either format:
    a Keras-distributed `*_notop.h5` file (as downloaded from the URL above, any location) or a
    Keras 3 `.weights.h5` written by `backbone.save_weights(...)` of the same backbone.

Two-stage fine-tuning (keras-io style): `freeze_backbone(model)`, compile, fit the head; then
`unfreeze_from(model)` (from the registry's boundary layer, BatchNorm layers kept frozen, i.e. in
inference mode), recompile with a lower learning rate, fit again.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import keras

from utils.errors import ConfigError, ModelFileError, UserError
from utils.training.backbones import REGISTRY, Backbone, CaffePreprocess, get_backbone
from utils.training.config import FROM_SCRATCH_BN_MOMENTUM

__all__ = [
    "CaffePreprocess",
    "WeightsUnavailableError",
    "FROM_SCRATCH_BN_MOMENTUM",
    "build_classifier",
    "build_backbone",
    "backbone_of",
    "backbone_spec_of",
    "set_bn_momentum",
    "freeze_backbone",
    "unfreeze_from",
    "load_model",
    "load_weights_file",
    "keras_cache_dir",
]

# What loading a model or weights file raises when the file is damaged or of another model.
LOAD_ERRORS = (ValueError, TypeError, KeyError, AttributeError, OSError, EOFError,
               zipfile.BadZipFile)


class WeightsUnavailableError(UserError, RuntimeError):
    """ImageNet weights neither cached nor downloadable; the message names the file and folder."""


def keras_home() -> str:
    """Keras' base folder as keras/src/backend/config.py sets it at import (not exported
    publicly): $KERAS_HOME, else ~/.keras, or /tmp/.keras when the home folder is not writable."""
    if "KERAS_HOME" in os.environ:
        return os.path.expanduser(os.environ["KERAS_HOME"])
    base = os.path.expanduser("~")
    return os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")


def keras_cache_dir() -> Path:
    """Folder where Keras looks for (and caches) downloaded weights, as keras.utils.get_file
    resolves it: $KERAS_HOME/models, else ~/.keras/models; /tmp/.keras/models when that base
    folder is missing or not writable."""
    import tempfile

    base = keras_home()
    if not os.access(base, os.W_OK):
        base = os.path.join("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir(), ".keras")
    return Path(base) / "models"


def _check_size(spec: Backbone, image_size: int) -> None:
    if int(image_size) != image_size or image_size < spec.min_size:
        raise ConfigError(
            f"image_size={image_size!r} is below the minimum of {spec.name}: use an integer "
            f">= {spec.min_size} (default {spec.default_size})"
        )


def _imagenet_backbone(spec: Backbone, input_shape: tuple[int, int, int]) -> keras.Model:
    """The Keras constructor with weights="imagenet"; a clear error when the file cannot be had."""
    file_name = spec.imagenet_weights_file(input_shape[0])
    url = spec.imagenet_weights_url(input_shape[0])
    cached = keras_cache_dir() / file_name
    was_cached = cached.is_file()
    try:
        return spec.constructor(
            include_top=False, weights="imagenet", input_shape=input_shape, name=spec.key
        )
    except Exception as error:  # keras' get_file raises a bare Exception on URL failures
        if was_cached:
            problem = f"the cached file {cached} could not be used (truncated or another file?)"
            fix = f"replace it with a fresh download of {url}"
        else:
            problem = "they are not cached and could not be downloaded"
            fix = (
                f"on an offline machine, download {url} elsewhere and place it as {cached} "
                f"(exact file name {file_name}), or pass its path as weights=..."
            )
        raise WeightsUnavailableError(
            f"ImageNet weights for {spec.name}: {problem} ({type(error).__name__}: {error}); {fix}"
        ) from error


def build_backbone(
    backbone: str | Backbone,
    weights: str | os.PathLike | None = None,
    image_size: int | None = None,
) -> keras.Model:
    """The keras.applications backbone without its top, named after its registry key.

    `weights`: None, "imagenet" or a path to a no-top weights file (see the module docstring).
    Raises ValueError below the minimum size, FileNotFoundError for a missing weights file and
    WeightsUnavailableError when "imagenet" weights are neither cached nor downloadable.
    """
    spec = get_backbone(backbone)
    size = spec.default_size if image_size is None else image_size
    _check_size(spec, size)
    input_shape = (int(size), int(size), 3)
    if weights is None:
        return spec.constructor(
            include_top=False, weights=None, input_shape=input_shape, name=spec.key
        )
    if str(weights) == "imagenet":
        return _imagenet_backbone(spec, input_shape)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise MissingModelFileError(
            f"weights file {path} does not exist: pass None, 'imagenet', or the path of a no-top "
            f"weights file of {spec.name} (e.g. {spec.imagenet_weights_file(size)} or a "
            ".weights.h5)"
        )
    model = spec.constructor(
        include_top=False, weights=None, input_shape=input_shape, name=spec.key
    )
    # .weights.h5 (Keras 3) or legacy .h5 (Keras-distributed)
    load_weights_file(model, path, f"is not a no-top weights file of {spec.name} at {size} px",
                      f"pass the no-top weights of {spec.name} (e.g. "
                      f"{spec.imagenet_weights_file(size)}), 'imagenet' or None")
    return model


class MissingModelFileError(ModelFileError, FileNotFoundError):
    """A model or weights file that does not exist (also a FileNotFoundError)."""


def load_weights_file(model: keras.Model, path: str | os.PathLike, mismatch: str,
                      fix: str) -> keras.Model:
    """model.load_weights(path), with ModelFileError naming the file when it is damaged or of
    another architecture (`mismatch` says what it is not, `fix` what to do)."""
    path = Path(path)
    try:
        model.load_weights(str(path))
    except LOAD_ERRORS as error:
        raise ModelFileError(f"{path}: {mismatch} ({_first_line(error)}); {fix}") from None
    return model


def _first_line(error: BaseException, limit: int = 240) -> str:
    text = " ".join(str(error).split("\n\n")[0].split())
    return (text[:limit] + "...") if len(text) > limit else text or type(error).__name__


def set_bn_momentum(model: keras.Model, momentum: float) -> int:
    """Set the momentum of every BatchNormalization layer (nested too); returns the count."""
    count = 0
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = float(momentum)
            count += 1
    return count


def build_classifier(
    backbone: str | Backbone,
    num_classes: int,
    weights: str | os.PathLike | None = None,
    image_size: int | None = None,
    dropout: float = 0.3,
    bn_momentum: float | None = None,
    name: str | None = None,
) -> keras.Model:
    """Input(size, size, 3) RGB [0, 255] -> preprocessing -> backbone -> GAP -> Dropout -> softmax.

    backbone: registry name (case-insensitive) or Backbone. num_classes: output units (>= 2).
    weights: None | "imagenet" | path of a no-top weights file (see the module docstring).
    image_size: input side, default the backbone's default_size; below min_size -> ValueError.
    dropout: rate before the classifier. bn_momentum: BatchNorm momentum; None keeps Keras'
    values for pretrained weights and uses 0.9 when weights is None (from scratch).
    name: model name, default "<backbone key>_classifier". The model is not compiled.
    """
    spec = get_backbone(backbone)
    if int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    size = spec.default_size if image_size is None else image_size
    base = build_backbone(spec, weights=weights, image_size=size)
    momentum = FROM_SCRATCH_BN_MOMENTUM if bn_momentum is None and weights is None else bn_momentum
    if momentum is not None:
        set_bn_momentum(base, momentum)

    inputs = keras.Input(shape=(int(size), int(size), 3), dtype="float32", name="image")
    x = inputs
    for layer in spec.preprocessing_layers():
        x = layer(x)
    x = base(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    outputs = keras.layers.Dense(
        int(num_classes), activation="softmax", dtype="float32", name="predictions"
    )(x)
    return keras.Model(inputs, outputs, name=name or f"{spec.key}_classifier")


def _all_layers(model: keras.Model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def backbone_of(model: keras.Model) -> keras.Model:
    """The backbone sub-model nested in a classifier (the layer named after a registry key)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model) and layer.name in REGISTRY:
            return layer
    raise ValueError(
        f"model {model.name!r} holds no registered backbone sub-model (expected a nested model "
        f"named one of {', '.join(sorted(REGISTRY))}); was it built with build_classifier?"
    )


def backbone_spec_of(model: keras.Model) -> Backbone:
    """The registry entry of the backbone nested in a classifier."""
    return REGISTRY[backbone_of(model).name]


def freeze_backbone(model: keras.Model) -> keras.Model:
    """Stage 1: freeze the whole backbone (BatchNorm runs in inference mode); recompile after."""
    backbone_of(model).trainable = False
    return model


def unfreeze_from(model: keras.Model, layer_name: str | None = None) -> keras.Model:
    """Stage 2: train the backbone from `layer_name` (inclusive, in layer order) to its end.

    layer_name defaults to the registry's boundary (Backbone.unfreeze_from). Layers before it stay
    frozen; BatchNormalization layers stay frozen everywhere (Keras 3 runs a non-trainable BN
    layer in inference mode, which keeps the pretrained statistics). Recompile after calling it.
    """
    base = backbone_of(model)
    boundary = layer_name or REGISTRY[base.name].unfreeze_from
    names = [layer.name for layer in base.layers]
    if boundary not in names:
        raise ValueError(
            f"{boundary!r} is not a layer of backbone {base.name!r}; pick a name from "
            f"backbone_of(model).layers (registry default: {REGISTRY[base.name].unfreeze_from!r})"
        )
    start = names.index(boundary)
    base.trainable = True
    for index, layer in enumerate(base.layers):
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = index >= start and not is_bn
    return model


def load_model(path: str | os.PathLike, compile: bool = True) -> keras.Model:
    """Load a .keras model with safe_mode=True (this module registers the custom layers).

    ModelFileError naming the file when it is missing, not a .keras archive, truncated, or
    refused by safe mode (a Lambda layer: arbitrary Python code, which is never run here)."""
    path = Path(path)
    if not path.is_file():
        raise MissingModelFileError(
            f"{path}: model file not found (expected the model.keras of a run folder)")
    if path.suffix.lower() == ".keras" and not zipfile.is_zipfile(path):
        raise ModelFileError(
            f"{path}: not a readable .keras file (truncated, or not a Keras zip archive); copy "
            "it again from its run folder or train the model again")
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=compile)
    except LOAD_ERRORS as error:
        if "safe_mode" in str(error) or "Lambda" in str(error):
            raise ModelFileError(
                f"{path}: refused: the model holds Python code (e.g. a Lambda layer), which "
                "safe mode does not load and this project never runs. Use a model built and "
                "saved by this project (python -m utils train), whose layers load safely"
            ) from None
        raise ModelFileError(
            f"{path}: cannot be loaded as a Keras model ({_first_line(error)}); it may be "
            "truncated or written by another program: copy it again or train it again"
        ) from None

"""Backbone registry shaped like timm's: one frozen dataclass per keras.applications ImageNet CNN.

Each entry carries everything the rest of the code needs to know about a backbone: how to build it,
how to turn RGB pixels in [0, 255] into what it expects (as a serialisable layer inside the model,
never a Lambda), its default and minimum input size, where fine-tuning starts unfreezing (a layer
NAME, never a count), the layer Grad-CAM reads, and where Keras keeps its ImageNet weights.

    >>> from utils.training.backbones import get_backbone, list_backbones
    >>> list_backbones()
    ('DenseNet121', 'DenseNet201', 'EfficientNetB0', 'InceptionResNetV2', 'InceptionV3',
     'MobileNetV2', 'ResNet50', 'VGG16')
    >>> get_backbone("densenet121").last_conv_layer
    'relu'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import keras
import numpy as np

from utils.errors import ConfigError

PreprocessingMode = Literal["tf", "torch", "caffe", "none"]

# Constants of keras.applications.imagenet_utils.preprocess_input (keras/src/applications/).
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # subtracted after RGB -> BGR
TORCH_MEAN_RGB = (0.485, 0.456, 0.406)  # subtracted after scaling to [0, 1]
TORCH_STD_RGB = (0.229, 0.224, 0.225)  # divided by after subtracting the mean

# keras.applications.mobilenet_v2 loads weights trained at one of these sizes (224 otherwise).
MOBILENET_V2_WEIGHT_SIZES = (96, 128, 160, 192, 224)


@keras.saving.register_keras_serializable(package="skin_lesion")
class CaffePreprocess(keras.layers.Layer):
    """keras.applications "caffe" preprocessing as a layer: RGB -> BGR, then subtract the ImageNet
    mean per channel (no scaling). Registered, so models holding it load with safe_mode=True."""

    def __init__(self, mean_bgr: tuple[float, float, float] = CAFFE_MEAN_BGR, **kwargs):
        super().__init__(**kwargs)
        self.mean_bgr = tuple(float(value) for value in mean_bgr)

    def call(self, inputs):
        bgr = keras.ops.flip(inputs, axis=-1)
        return bgr - keras.ops.convert_to_tensor(self.mean_bgr, dtype=bgr.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "mean_bgr": list(self.mean_bgr)}


def preprocessing_layers(
    mode: PreprocessingMode, prefix: str = "preprocess"
) -> list[keras.layers.Layer]:
    """Layers equal to keras.applications' preprocess_input(mode=...) on RGB input in [0, 255].

    They compute in float32 even under a mixed-precision policy. "none" (EfficientNet, which
    rescales inside the network) returns an empty list.
    """
    if mode == "tf":  # x / 127.5 - 1 -> [-1, 1]
        return [
            keras.layers.Rescaling(
                1.0 / 127.5, offset=-1.0, dtype="float32", name=f"{prefix}_rescale"
            )
        ]
    if mode == "torch":  # (x / 255 - mean) / std, per channel
        return [
            keras.layers.Rescaling(1.0 / 255.0, dtype="float32", name=f"{prefix}_rescale"),
            keras.layers.Normalization(
                mean=list(TORCH_MEAN_RGB),
                variance=[std**2 for std in TORCH_STD_RGB],
                dtype="float32",
                name=f"{prefix}_normalize",
            ),
        ]
    if mode == "caffe":
        return [CaffePreprocess(dtype="float32", name=f"{prefix}_caffe")]
    if mode == "none":
        return []
    raise ValueError(f"unknown preprocessing mode {mode!r}; valid: tf, torch, caffe, none")


@dataclass(frozen=True)
class Backbone:
    """Static facts about one keras.applications backbone."""

    name: str  # registry key, spelled like the keras.applications class, e.g. "DenseNet121"
    constructor: Callable[
        ..., keras.Model
    ]  # keras.applications callable (include_top=False is passed)
    module: str  # keras.applications sub-module holding preprocess_input, e.g. "densenet"
    preprocessing: PreprocessingMode  # mode of that module's preprocess_input
    default_size: int  # input side the ImageNet weights were trained at
    min_size: int  # smallest input side keras.applications accepts (its documented minimum)
    unfreeze_from: str  # first layer (inclusive, in backbone.layers order) trained in fine-tuning
    last_conv_layer: str  # layer whose activations Grad-CAM weighs (the last spatial feature map)
    weights_url: str  # URL of the no-top ImageNet weights Keras downloads ("{rows}": MobileNetV2)
    notes: str = ""  # where the boundary comes from, caveats

    @property
    def key(self) -> str:
        """Lower-case name; also the name of the backbone sub-model inside a classifier."""
        return self.name.lower()

    def imagenet_weights_url(self, image_size: int | None = None) -> str:
        """URL Keras downloads the no-top ImageNet weights from for this input size."""
        size = image_size or self.default_size
        rows = size if size in MOBILENET_V2_WEIGHT_SIZES else 224
        return self.weights_url.format(rows=rows)

    def imagenet_weights_file(self, image_size: int | None = None) -> str:
        """File name Keras caches those weights under (in ~/.keras/models/)."""
        return self.imagenet_weights_url(image_size).rsplit("/", 1)[-1]

    def preprocessing_layers(self) -> list[keras.layers.Layer]:
        """Fresh layers reproducing keras.applications.<module>.preprocess_input."""
        return preprocessing_layers(self.preprocessing)

    def preprocess_input(self) -> Callable[[np.ndarray], np.ndarray]:
        """keras.applications.<module>.preprocess_input (the reference the layers must equal)."""
        return getattr(keras.applications, self.module).preprocess_input


_KERAS_APPS = "https://storage.googleapis.com/tensorflow/keras-applications"
_KERAS_APPS_V2 = "https://storage.googleapis.com/keras-applications"

_BACKBONES = (
    Backbone(
        name="VGG16",
        constructor=keras.applications.VGG16,
        module="vgg16",
        preprocessing="caffe",
        default_size=224,
        min_size=32,
        unfreeze_from="block5_conv1",
        last_conv_layer="block5_conv3",
        weights_url=f"{_KERAS_APPS}/vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        notes="block 5 (3 convolutions) trained in fine-tuning",
    ),
    Backbone(
        name="ResNet50",
        constructor=keras.applications.ResNet50,
        module="resnet50",
        preprocessing="caffe",
        default_size=224,
        min_size=32,
        unfreeze_from="conv5_block1_1_conv",
        last_conv_layer="conv5_block3_out",
        weights_url=f"{_KERAS_APPS}/resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        notes="stage conv5 (3 bottleneck blocks); conv5_block1_1_conv is its first layer in order",
    ),
    Backbone(
        name="InceptionV3",
        constructor=keras.applications.InceptionV3,
        module="inception_v3",
        preprocessing="tf",
        default_size=299,
        min_size=75,
        unfreeze_from="mixed8",
        last_conv_layer="mixed10",
        weights_url=(
            f"{_KERAS_APPS}/inception_v3/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
        ),
        notes=(
            "the top 2 inception blocks (mixed9, mixed10), as in the Keras fine-tuning guide "
            "(layers[249:]); their convolutions have auto-generated names, so the boundary is "
            "mixed8, the weightless concatenation closing the block before"
        ),
    ),
    Backbone(
        name="DenseNet121",
        constructor=keras.applications.DenseNet121,
        module="densenet",
        preprocessing="torch",
        default_size=224,
        min_size=32,
        unfreeze_from="conv5_block1_0_bn",
        last_conv_layer="relu",
        weights_url=f"{_KERAS_APPS}/densenet/densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
        notes="dense block 5 (16 layers) and the final BN/ReLU",
    ),
    Backbone(
        name="DenseNet201",
        constructor=keras.applications.DenseNet201,
        module="densenet",
        preprocessing="torch",
        default_size=224,
        min_size=32,
        unfreeze_from="conv5_block1_0_bn",
        last_conv_layer="relu",
        weights_url=f"{_KERAS_APPS}/densenet/densenet201_weights_tf_dim_ordering_tf_kernels_notop.h5",
        notes="dense block 5 (32 layers) and the final BN/ReLU",
    ),
    Backbone(
        name="InceptionResNetV2",
        constructor=keras.applications.InceptionResNetV2,
        module="inception_resnet_v2",
        preprocessing="tf",
        default_size=299,
        min_size=75,
        unfreeze_from="mixed_7a",
        last_conv_layer="conv_7b_ac",
        weights_url=(
            f"{_KERAS_APPS}/inception_resnet_v2/"
            "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5"
        ),
        notes=(
            "the 10 block8 (Inception-ResNet-C) blocks and conv_7b; boundary is mixed_7a, the "
            "weightless concatenation before them (their convolutions have auto-generated names)"
        ),
    ),
    Backbone(
        name="EfficientNetB0",
        constructor=keras.applications.EfficientNetB0,
        module="efficientnet",
        preprocessing="none",
        default_size=224,
        min_size=32,
        unfreeze_from="block6a_expand_conv",
        last_conv_layer="top_activation",
        weights_url=f"{_KERAS_APPS_V2}/efficientnetb0_notop.h5",
        notes="blocks 6-7 and the top convolution; the network rescales its input itself",
    ),
    Backbone(
        name="MobileNetV2",
        constructor=keras.applications.MobileNetV2,
        module="mobilenet_v2",
        preprocessing="tf",
        default_size=224,
        min_size=32,
        unfreeze_from="block_13_expand",
        last_conv_layer="out_relu",
        weights_url=(
            f"{_KERAS_APPS}/mobilenet_v2/"
            "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5"
        ),
        notes=(
            "blocks 13-16 (the stride-32 stage) and Conv_1; Keras has ImageNet weights at "
            "96/128/160/192/224 px and loads the 224 ones for any other size"
        ),
    ),
)

REGISTRY: Mapping[str, Backbone] = MappingProxyType({spec.key: spec for spec in _BACKBONES})


def list_backbones() -> tuple[str, ...]:
    """Registered backbone names, sorted."""
    return tuple(sorted(spec.name for spec in _BACKBONES))


def get_backbone(name: str | Backbone) -> Backbone:
    """The registry entry for `name` (case-insensitive); a Backbone is returned unchanged.

    Raises ConfigError (a ValueError) listing the valid names for an unknown name.
    """
    if isinstance(name, Backbone):
        return name
    try:
        return REGISTRY[str(name).lower()]
    except KeyError:
        raise ConfigError(
            f"unknown backbone {name!r}; valid backbones: {', '.join(list_backbones())}"
        ) from None

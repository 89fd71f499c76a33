"""Image augmentation for dermoscopy: plain numpy/OpenCV/scikit-image transforms, one config.

Every transform is a plain function `transform(image, rng, config) -> image` on a uint8 HxWx3 RGB
array. `augment(image, rng, config)` composes them and returns the list of transforms it applied
(name + parameters), so an augmented image can be traced and reproduced: the parameters are drawn
first (`sample_augmentation`, no pixels needed) and then applied (`apply_augmentation`). Rotation,
zoom and shift are merged into one `cv2.warpAffine` with reflected borders (one interpolation, no
black corners; scikit-image's rotate is 20-30x slower).

The same transforms serve three uses:
- offline balancing of the training split (`utils.augmentation.balance`, `python -m utils balance`);
- online augmentation in tf.data through `tf.numpy_function` (`online_augment_fn`);
- an in-graph alternative made of Keras preprocessing layers (`keras_augment_layers`).
Which of them a training run uses is its augment mode (utils.augmentation.modes).
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any, Callable

import cv2
import numpy as np
from skimage import exposure

from utils.data import images

Image = np.ndarray  # uint8, HxWx3, RGB
Applied = list[dict[str, Any]]  # [{"name": ..., <parameters>}, ...] in application order


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation parameters; defaults suit dermoscopy (no canonical "up"; colour matters)."""

    image_size: int | None = None  # first resize the shorter side to this many pixels (None: keep)
    colour_constancy: bool = False  # Shades of Gray normalisation before augmenting (optional)
    shades_of_gray_p: float = 6.0  # Minkowski norm of Shades of Gray (6 per Barata et al. 2015)
    p_flip_horizontal: float = 0.5  # probability of a left-right mirror
    p_flip_vertical: float = 0.5  # probability of an up-down mirror
    p_rotate: float = 1.0  # probability of a rotation (lesions have no "up")
    rotation_degrees: float = 180.0  # angle drawn from U(-r, r) degrees
    p_zoom: float = 0.5  # probability of a zoom about the centre
    zoom_range: tuple[float, float] = (0.9, 1.2)  # scale; > 1 zooms in (crops), < 1 zooms out
    p_shift: float = 0.5  # probability of a translation
    shift_fraction: float = 0.1  # max shift as a fraction of width / height (lesions are centred)
    p_brightness_contrast: float = 0.5  # probability of a brightness/contrast change
    brightness: float = 0.1  # additive shift drawn from U(-b, b) as a fraction of 255
    contrast: float = 0.15  # contrast factor about the mean drawn from U(1 - c, 1 + c)
    p_gamma: float = 0.3  # probability of a gamma change (skimage.exposure.adjust_gamma)
    gamma_range: tuple[float, float] = (0.8, 1.25)  # gamma drawn log-uniformly from this range
    p_hue_saturation: float = 0.3  # probability of a hue/saturation change
    hue_degrees: float = 6.0  # hue shift from U(-h, h) degrees; small: colour is diagnostic
    saturation: float = 0.15  # saturation factor from U(1 - s, 1 + s)
    p_blur: float = 0.15  # probability of a Gaussian blur (focus variation between dermatoscopes)
    blur_sigma: tuple[float, float] = (0.3, 1.0)  # blur sigma in pixels drawn from this range
    p_noise: float = 0.15  # probability of additive Gaussian noise (sensor noise)
    noise_std: float = 0.02  # noise standard deviation as a fraction of 255

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name.startswith("p_") and not 0.0 <= value <= 1.0:
                raise ValueError(f"AugmentConfig.{field.name}={value} must lie in [0, 1]")
            if field.name.endswith(("_range", "_sigma")) and not 0 < value[0] <= value[1]:
                raise ValueError(f"AugmentConfig.{field.name}={value} must be (low, high) with "
                                 "0 < low <= high")
        for name in ("rotation_degrees", "shift_fraction", "brightness", "contrast", "hue_degrees",
                     "saturation", "noise_std"):
            if getattr(self, name) < 0:
                raise ValueError(f"AugmentConfig.{name}={getattr(self, name)} must be >= 0")
        if self.image_size is not None and self.image_size < 8:
            raise ValueError(f"AugmentConfig.image_size={self.image_size} must be >= 8 or None")
        if self.shades_of_gray_p < 1:
            raise ValueError(f"AugmentConfig.shades_of_gray_p={self.shades_of_gray_p} must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> AugmentConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - fields
        if unknown:
            raise ValueError(f"unknown AugmentConfig field(s) {sorted(unknown)}; "
                             f"known: {sorted(fields)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


DEFAULT_CONFIG = AugmentConfig()


def check_image(image: np.ndarray) -> Image:
    """Raise ValueError unless `image` is a uint8 HxWx3 array."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
            or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"expected a uint8 HxWx3 RGB array, got shape {shape} dtype {dtype}")
    return image


def read_rgb(path: str | os.PathLike) -> Image:
    """Read an image file as uint8 HxWx3 RGB through the image gate (utils.data.images:
    any format a user has); raises DataError naming the file if it is refused or unreadable."""
    return images.read_rgb(path)


# --- deterministic pixel operations -------------------------------------------------------------

def resize_shorter_side(image: Image, size: int) -> Image:
    """Resize so the shorter side is `size` pixels, keeping the aspect ratio (INTER_AREA)."""
    height, width = image.shape[:2]
    scale = size / min(height, width)
    if scale == 1:
        return image
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, new_size, interpolation=interpolation)


def shades_of_gray(image: Image, rng: np.random.Generator | None = None,
                   config: AugmentConfig = DEFAULT_CONFIG) -> Image:
    """Shades of Gray colour constancy (Finlayson & Trezzi 2004): equalise channel p-norm means.

    Deterministic; `rng` is accepted (and ignored) so it has the signature of every transform.
    """
    pixels = image.astype(np.float32) / 255.0
    illuminant = np.power(np.mean(np.power(pixels, config.shades_of_gray_p), axis=(0, 1)),
                          1.0 / config.shades_of_gray_p)
    gains = illuminant.mean() / np.maximum(illuminant, 1e-6)
    return np.clip(pixels * gains * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _centre(image: Image) -> tuple[float, float]:
    height, width = image.shape[:2]
    return (width - 1) / 2.0, (height - 1) / 2.0


def _rotation_matrix(image: Image, degrees: float) -> np.ndarray:
    return np.vstack([cv2.getRotationMatrix2D(_centre(image), degrees, 1.0), [0, 0, 1]])


def _zoom_matrix(image: Image, scale: float) -> np.ndarray:
    cx, cy = _centre(image)
    return np.array([[scale, 0, cx * (1 - scale)], [0, scale, cy * (1 - scale)], [0, 0, 1]])


def _shift_matrix(image: Image, dx: float, dy: float) -> np.ndarray:
    height, width = image.shape[:2]
    return np.array([[1, 0, dx * width], [0, 1, dy * height], [0, 0, 1]], dtype=np.float64)


def warp(image: Image, matrix: np.ndarray) -> Image:
    """Apply a 3x3 affine matrix with bilinear interpolation and reflected borders."""
    height, width = image.shape[:2]
    return cv2.warpAffine(image, matrix[:2], (width, height), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT_101)


def _lut(image: Image, table: np.ndarray) -> Image:
    return cv2.LUT(image, np.clip(np.rint(table), 0, 255).astype(np.uint8))


def _brightness_contrast(image: Image, brightness: float, contrast: float) -> Image:
    mean = float(image.mean())
    levels = np.arange(256, dtype=np.float64)
    return _lut(image, (levels - mean) * contrast + mean + brightness * 255.0)


def _gamma(image: Image, gamma: float) -> Image:
    return exposure.adjust_gamma(image, gamma)


def _hue_saturation(image: Image, hue_degrees: float, saturation: float) -> Image:
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)  # uint8 hue is in 0..179 (2 degrees per step)
    levels = np.arange(256, dtype=np.float64)
    hue = np.mod(np.rint(levels + hue_degrees / 2.0), 180)
    hsv[..., 0] = cv2.LUT(hsv[..., 0], hue.astype(np.uint8))
    hsv[..., 1] = _lut(hsv[..., 1], levels * saturation)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def _blur(image: Image, sigma: float) -> Image:
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT_101)


def _noise(image: Image, std: float, seed: int) -> Image:
    noise = np.random.default_rng(seed).standard_normal(image.shape, dtype=np.float32)
    noise *= std * 255.0
    noise += image
    noise += 0.5
    return np.clip(noise, 0, 255, out=noise).astype(np.uint8)


# --- the transform registry: how each draws its parameters and applies them --------------------

@dataclass(frozen=True)
class Transform:
    """One random transform: its probability, its parameter sampler and its pixel operation."""

    name: str
    probability: Callable[[AugmentConfig], float]
    sample: Callable[[np.random.Generator, AugmentConfig], dict[str, Any]]
    apply: Callable[..., Image]  # apply(image, **parameters)
    geometric: bool = False  # merged with neighbouring geometric transforms into one warpAffine


def _uniform(rng: np.random.Generator, half_width: float) -> float:
    return float(rng.uniform(-half_width, half_width))


TRANSFORMS: tuple[Transform, ...] = (
    Transform("flip_horizontal", lambda c: c.p_flip_horizontal, lambda rng, c: {},
              lambda image: cv2.flip(image, 1)),
    Transform("flip_vertical", lambda c: c.p_flip_vertical, lambda rng, c: {},
              lambda image: cv2.flip(image, 0)),
    Transform("rotate", lambda c: c.p_rotate,
              lambda rng, c: {"degrees": _uniform(rng, c.rotation_degrees)},
              lambda image, degrees: warp(image, _rotation_matrix(image, degrees)), geometric=True),
    Transform("zoom", lambda c: c.p_zoom,
              lambda rng, c: {"scale": float(rng.uniform(*c.zoom_range))},
              lambda image, scale: warp(image, _zoom_matrix(image, scale)), geometric=True),
    Transform("shift", lambda c: c.p_shift,
              lambda rng, c: {"dx": _uniform(rng, c.shift_fraction),
                              "dy": _uniform(rng, c.shift_fraction)},
              lambda image, dx, dy: warp(image, _shift_matrix(image, dx, dy)), geometric=True),
    Transform("brightness_contrast", lambda c: c.p_brightness_contrast,
              lambda rng, c: {"brightness": _uniform(rng, c.brightness),
                              "contrast": 1.0 + _uniform(rng, c.contrast)},
              _brightness_contrast),
    Transform("gamma", lambda c: c.p_gamma,
              lambda rng, c: {"gamma": float(np.exp(rng.uniform(*np.log(c.gamma_range))))},
              _gamma),
    Transform("hue_saturation", lambda c: c.p_hue_saturation,
              lambda rng, c: {"hue_degrees": _uniform(rng, c.hue_degrees),
                              "saturation": 1.0 + _uniform(rng, c.saturation)},
              _hue_saturation),
    Transform("blur", lambda c: c.p_blur,
              lambda rng, c: {"sigma": float(rng.uniform(*c.blur_sigma))}, _blur),
    Transform("noise", lambda c: c.p_noise,
              lambda rng, c: {"std": c.noise_std, "seed": int(rng.integers(2**32))}, _noise),
)
TRANSFORM_NAMES: tuple[str, ...] = tuple(t.name for t in TRANSFORMS)
_BY_NAME: dict[str, Transform] = {t.name: t for t in TRANSFORMS}
_GEOMETRIC_MATRIX = {
    "rotate": lambda image, p: _rotation_matrix(image, p["degrees"]),
    "zoom": lambda image, p: _zoom_matrix(image, p["scale"]),
    "shift": lambda image, p: _shift_matrix(image, p["dx"], p["dy"]),
}


def get_transform(name: str) -> Transform:
    """A transform by name; raises ValueError listing the valid names."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown transform {name!r}; "
                         f"valid: {', '.join(TRANSFORM_NAMES)}") from None


def apply_transform(name: str, image: Image, rng: np.random.Generator,
                    config: AugmentConfig = DEFAULT_CONFIG) -> Image:
    """Apply one named transform (always, ignoring its probability) with parameters from `rng`."""
    transform = get_transform(name)
    return transform.apply(check_image(image), **transform.sample(rng, config))


# Each transform as a plain function (image, rng, config) -> image, always applied.
def flip_horizontal(image: Image, rng: np.random.Generator,
                    config: AugmentConfig = DEFAULT_CONFIG) -> Image:
    return apply_transform("flip_horizontal", image, rng, config)


def flip_vertical(image: Image, rng: np.random.Generator,
                  config: AugmentConfig = DEFAULT_CONFIG) -> Image:
    return apply_transform("flip_vertical", image, rng, config)


def rotate(image: Image, rng: np.random.Generator,
           config: AugmentConfig = DEFAULT_CONFIG) -> Image:
    return apply_transform("rotate", image, rng, config)


def zoom(image: Image, rng: np.random.Generator,
         config: AugmentConfig = DEFAULT_CONFIG) -> Image:
    return apply_transform("zoom", image, rng, config)


def shift(image: Image, rng: np.random.Generator,
          config: AugmentConfig = DEFAULT_CONFIG) -> Image:
    return apply_transform("shift", image, rng, config)


def brightness_contrast(image: Image, rng: np.random.Generator,
                        config: AugmentConfig = DEFAULT_CONFIG) -> Image:
    return apply_transform("brightness_contrast", image, rng, config)


def gamma(image: Image, rng: np.random.Generator,
          config: AugmentConfig = DEFAULT_CONFIG) -> Image:
    return apply_transform("gamma", image, rng, config)


def hue_saturation(image: Image, rng: np.random.Generator,
                   config: AugmentConfig = DEFAULT_CONFIG) -> Image:
    return apply_transform("hue_saturation", image, rng, config)


def gaussian_blur(image: Image, rng: np.random.Generator,
                  config: AugmentConfig = DEFAULT_CONFIG) -> Image:
    return apply_transform("blur", image, rng, config)


def gaussian_noise(image: Image, rng: np.random.Generator,
                   config: AugmentConfig = DEFAULT_CONFIG) -> Image:
    return apply_transform("noise", image, rng, config)


# --- composition ---------------------------------------------------------------------------------

def sample_augmentation(rng: np.random.Generator,
                        config: AugmentConfig = DEFAULT_CONFIG) -> Applied:
    """Draw which transforms apply and their parameters (no pixels needed), in application order.

    One uniform draw per transform decides whether it applies, so the stream of random numbers
    and hence the result depend only on the generator's state and the config.
    """
    applied: Applied = []
    if config.image_size is not None:
        applied.append({"name": "resize", "shorter_side": config.image_size})
    if config.colour_constancy:
        applied.append({"name": "shades_of_gray", "p": config.shades_of_gray_p})
    for transform in TRANSFORMS:
        if rng.random() < transform.probability(config):
            applied.append({"name": transform.name, **transform.sample(rng, config)})
    return applied


def apply_augmentation(image: Image, applied: Applied) -> Image:
    """Apply a list from `sample_augmentation`; consecutive geometric steps share one warpAffine."""
    image = check_image(image)
    matrix: np.ndarray | None = None
    for step in applied:
        name = step["name"]
        params = {k: v for k, v in step.items() if k != "name"}
        if name in _GEOMETRIC_MATRIX:
            step_matrix = _GEOMETRIC_MATRIX[name](image, params)
            matrix = step_matrix if matrix is None else step_matrix @ matrix
            continue
        if matrix is not None:
            image, matrix = warp(image, matrix), None
        if name == "resize":
            image = resize_shorter_side(image, params["shorter_side"])
        elif name == "shades_of_gray":
            image = shades_of_gray(image, None, AugmentConfig(shades_of_gray_p=params["p"]))
        else:
            image = get_transform(name).apply(image, **params)
    if matrix is not None:
        image = warp(image, matrix)
    return image


def augment(image: Image, rng: np.random.Generator,
            config: AugmentConfig = DEFAULT_CONFIG) -> tuple[Image, Applied]:
    """Resize (if config.image_size), normalise colour (if asked), then random transforms.

    Returns the augmented image and the transforms applied, e.g.
    `[{"name": "rotate", "degrees": 37.2}, {"name": "gamma", "gamma": 0.91}]`.
    """
    applied = sample_augmentation(rng, config)
    return apply_augmentation(image, applied), applied


def transforms_json(applied: Applied) -> str:
    """Compact JSON ("name" first) of an `applied` list (the balanced manifest's `transforms`)."""
    return json.dumps(applied, separators=(",", ":"))


# --- online augmentation in the training pipeline ------------------------------------------------

def online_augment_fn(config: AugmentConfig = DEFAULT_CONFIG, seed: int = 0) -> Callable:
    """A callable `fn(image, element_seed=None)` on one uint8 HxWx3 tf.Tensor -> same shape/dtype.

    It runs `augment` through `tf.numpy_function` (CPU, in tf.data's map). `config.image_size` is
    ignored: the pipeline resizes. With `element_seed` (an int tensor, e.g. from
    `Dataset.enumerate()` combined with the epoch) the result is reproducible whatever the
    scheduling of parallel map calls; without it a generator seeded with `seed` is shared, which is
    reproducible only when the map runs sequentially.
    """
    import tensorflow as tf

    config = dataclasses.replace(config, image_size=None)
    shared_rng = np.random.default_rng(seed)

    def _numpy_augment(image: np.ndarray, element_seed: np.ndarray) -> np.ndarray:
        value = int(element_seed)
        rng = shared_rng if value < 0 else np.random.default_rng([seed, value])
        return augment(np.ascontiguousarray(image), rng, config)[0]

    def fn(image: Any, element_seed: Any = None) -> Any:
        element_seed = tf.constant(-1, tf.int64) if element_seed is None else \
            tf.cast(element_seed, tf.int64)
        result = tf.numpy_function(_numpy_augment, [image, element_seed], tf.uint8,
                                   stateful=True)
        result.set_shape(image.shape)
        return result

    return fn


def keras_augment_layers(config: AugmentConfig = DEFAULT_CONFIG, seed: int | None = None) -> Any:
    """A serialisable `keras.Sequential` of Keras preprocessing layers (in-graph, GPU-friendly).

    Input: float images in [0, 255] (a batch or one image); active only with training=True. It
    approximates the numpy transforms: flips, rotation and zoom/translation with reflected
    borders, brightness and contrast. Hue/saturation/gamma/blur/noise are numpy-only
    (`online_augment_fn`); Keras layers apply every transform to every image (no probabilities).
    """
    import keras

    layers: list[Any] = []
    flip_mode = {(True, True): "horizontal_and_vertical", (True, False): "horizontal",
                 (False, True): "vertical"}.get((config.p_flip_horizontal > 0,
                                                 config.p_flip_vertical > 0))
    if flip_mode:
        layers.append(keras.layers.RandomFlip(flip_mode, seed=seed))
    if config.p_rotate > 0 and config.rotation_degrees > 0:
        layers.append(keras.layers.RandomRotation(config.rotation_degrees / 360.0,
                                                  fill_mode="reflect", seed=seed))
    if config.p_zoom > 0:
        low, high = config.zoom_range  # Keras: negative factor zooms in, positive zooms out
        layers.append(keras.layers.RandomZoom((1.0 / high - 1.0, 1.0 / low - 1.0),
                                              fill_mode="reflect", seed=seed))
    if config.p_shift > 0 and config.shift_fraction > 0:
        layers.append(keras.layers.RandomTranslation(config.shift_fraction, config.shift_fraction,
                                                     fill_mode="reflect", seed=seed))
    if config.p_brightness_contrast > 0:
        if config.brightness > 0:
            layers.append(keras.layers.RandomBrightness(config.brightness, value_range=(0, 255),
                                                        seed=seed))
        if config.contrast > 0:
            layers.append(keras.layers.RandomContrast(config.contrast, value_range=(0, 255),
                                                      seed=seed))
    return keras.Sequential(layers, name="augment")

"""Dermoscopy preprocessing: colour constancy, hair removal and field-of-view crop.

Three deterministic functions on a uint8 HxWx3 RGB array, each parameterised by a frozen
dataclass:

- `colour_constancy(image, ColourConfig)`: Shades of Gray (Finlayson & Trezzi 2004), the
  illuminant estimated per channel as the Minkowski p-norm mean (p = 6, as in Barata et al. 2015
  and the ISIC 2019 winners), each channel scaled so the estimate becomes grey;
- `remove_hair(image, HairConfig)` (mask: `hair_mask`): DullRazor-style (Lee et al. 1997):
  morphological black-hat of the grey image with a cross or ellipse kernel, threshold, elongated
  components only (compact dark dots and globules are lesion features, not hair), `cv2.inpaint`
  (Telea or Navier-Stokes);
- `crop_field_of_view(image, FovConfig)` (box: `field_of_view_box`): the dermoscope's dark
  circular vignette found as the largest component brighter than a threshold; the image is
  cropped to the largest box inside the circle fitted to its border (mode "inscribed", the
  default: HAM10000's vignettes are mostly circles wider than the frame, which leave dark
  corners that no bounding box removes) or to the bounding box of the field of view (mode
  "box": keeps the whole field of view, corners included). Images without a vignette are
  returned untouched.

Sizes in pixels (kernel, inpainting radius, hair length) are stated for an image whose shorter
side is `REFERENCE_SIDE` = 450 px (the HAM10000 originals) and scale with the image, so the same
settings mean the same thing on the 600x450 originals and on a 200x150 copy.

A PREPROCESSING is a selection of these steps (`Preprocessing`), written as text: "colour,hair,fov"
(`parse_preprocessing`), optionally with parameters ("hair:kernel_size=11:method=ns,colour:p=4").
Its canonical text (`Preprocessing.spec()`) names every parameter, steps in the fixed order they
run: fov (so the black vignette does not enter the other two), hair, colour. A run's config holds
that text (`TrainConfig.preprocess`); the input pipeline (`utils.training.pipeline.load_image`)
applies it to every decoded image before resizing, in training, evaluation and `predict`, and
`python -m utils preprocess` writes an offline copy (`utils.augmentation.preprocess_dataset`).
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

Image = np.ndarray  # uint8, HxWx3, RGB
Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive)

REFERENCE_SIDE = 450  # shorter side (px) at which the pixel sizes of the configs are stated
STEPS: tuple[str, ...] = ("fov", "hair", "colour")  # the order in which selected steps run
ALIASES = {"color": "colour", "crop": "fov", "hairs": "hair"}
NONE = "none"
INPAINT_METHODS = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}
KERNEL_SHAPES = {"cross": cv2.MORPH_CROSS, "ellipse": cv2.MORPH_ELLIPSE}
FOV_MODES = ("box", "inscribed")


@dataclass(frozen=True)
class ColourConfig:
    """Shades of Gray colour constancy."""

    p: float = 6.0  # Minkowski norm (1 = grey world, large = max-RGB; 6 per Barata et al. 2015)

    def __post_init__(self) -> None:
        if not self.p >= 1:
            raise ValueError(f"colour: p={self.p} must be >= 1")


@dataclass(frozen=True)
class HairConfig:
    """DullRazor-style hair removal (pixel sizes at a 450-px shorter side, scaled)."""

    kernel_size: int = 17  # black-hat kernel side in px (wider than a hair, odd after scaling)
    kernel_shape: str = "cross"  # cross (DullRazor's line-like element) | ellipse
    threshold: int = 12  # black-hat response in grey levels above which a pixel may be hair
    min_length: float = 30.0  # shortest hair in px (longest side of a component's rotated box)
    dilate: int = 1  # 3x3 dilations of the mask before inpainting (covers antialiased edges)
    method: str = "telea"  # cv2.inpaint method: telea (Telea 2004) | ns (Navier-Stokes)
    radius: float = 3.0  # inpainting neighbourhood radius in px

    def __post_init__(self) -> None:
        if self.kernel_size < 3:
            raise ValueError(f"hair: kernel_size={self.kernel_size} must be >= 3")
        _check_choice("hair: kernel_shape", self.kernel_shape, KERNEL_SHAPES)
        _check_choice("hair: method", self.method, INPAINT_METHODS)
        if not 0 <= self.threshold <= 255:
            raise ValueError(f"hair: threshold={self.threshold} must lie in 0..255")
        if self.min_length < 0 or self.dilate < 0 or self.radius <= 0:
            raise ValueError("hair: min_length and dilate must be >= 0, radius > 0")


@dataclass(frozen=True)
class FovConfig:
    """Field-of-view (dark circular vignette) detection and crop."""

    threshold: int = 25  # max(R, G, B) at or below which a pixel is outside the field of view
    mode: str = "inscribed"  # inscribed: largest box inside its circle | box: its bounding box
    min_crop: float = 0.03  # crop only if it removes at least this share of the image's area
    margin: float = 0.0  # widen the box by this share of its size on each side (0 = tight)

    def __post_init__(self) -> None:
        if not 0 <= self.threshold <= 255:
            raise ValueError(f"fov: threshold={self.threshold} must lie in 0..255")
        _check_choice("fov: mode", self.mode, FOV_MODES)
        if not 0 <= self.min_crop < 1 or self.margin < 0:
            raise ValueError("fov: min_crop must lie in [0, 1) and margin be >= 0")


def _check_choice(name: str, value: str, choices: Any) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {', '.join(choices)}")


def check_image(image: np.ndarray) -> Image:
    """`image` if it is a uint8 HxWx3 array, else ValueError."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
            or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"expected a uint8 HxWx3 RGB array, got shape {shape} dtype {dtype}")
    return image


def scaled(pixels: float, image: np.ndarray) -> float:
    """A size stated at REFERENCE_SIDE, for `image`'s shorter side."""
    return pixels * min(image.shape[:2]) / REFERENCE_SIDE


# --- colour constancy ----------------------------------------------------------------------------

def illuminant(image: Image, p: float = 6.0) -> np.ndarray:
    """Shades of Gray illuminant estimate: per-channel Minkowski p-norm mean of the pixels in
    [0, 1] (from the 256-bin histogram of each channel: exact for uint8, and fast)."""
    levels = np.power(np.arange(256, dtype=np.float64) / 255.0, p)
    image = check_image(image)
    counts = [cv2.calcHist([image], [k], None, [256], [0, 256]).ravel() for k in range(3)]
    sums = np.asarray([c.astype(np.float64) @ levels for c in counts])
    return np.power(sums / (image.shape[0] * image.shape[1]), 1.0 / p)


def colour_constancy(image: Image, config: ColourConfig = ColourConfig()) -> Image:
    """Shades of Gray: scale each channel so the illuminant estimate becomes grey (its mean level
    is kept), through one 256-entry lookup table per channel. Deterministic; the one
    implementation (transforms.shades_of_gray calls it)."""
    estimate = illuminant(image, config.p)
    gains = estimate.mean() / np.maximum(estimate, 1e-6)
    levels = np.arange(256, dtype=np.float64)
    tables = np.clip(levels[:, None] * gains[None, :] + 0.5, 0, 255).astype(np.uint8)
    return cv2.LUT(image, tables.reshape(256, 1, 3))


# --- hair removal --------------------------------------------------------------------------------

def _odd(value: float) -> int:
    size = max(3, int(round(value)))
    return size if size % 2 else size + 1


def hair_mask(image: Image, config: HairConfig = HairConfig()) -> np.ndarray:
    """Detected hair (bool HxW): black-hat response above the threshold, in components at least
    `min_length` long (so dots and globules stay); before the dilation used for inpainting."""
    grey = cv2.cvtColor(check_image(image), cv2.COLOR_RGB2GRAY)
    size = _odd(scaled(config.kernel_size, image))
    kernel = cv2.getStructuringElement(KERNEL_SHAPES[config.kernel_shape], (size, size))
    response = cv2.morphologyEx(grey, cv2.MORPH_BLACKHAT, kernel, borderType=cv2.BORDER_REPLICATE)
    candidate = (response > config.threshold).astype(np.uint8)
    if config.min_length <= 0 or not candidate.any():
        return candidate.astype(bool)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(candidate, connectivity=8)
    min_length = scaled(config.min_length, image)
    keep = np.zeros(count, dtype=bool)
    for index in range(1, count):
        x, y, width, height = stats[index, :4]
        if max(width, height) >= min_length:  # cheap: the box's long side bounds the length
            keep[index] = True
        elif np.hypot(width, height) >= min_length:  # diagonal hairs: measure the rotated box
            ys, xs = np.nonzero(labels[y:y + height, x:x + width] == index)
            points = np.column_stack([xs, ys]).astype(np.float32)
            keep[index] = max(cv2.minAreaRect(points)[1]) >= min_length
    return keep[labels]


def remove_hair(image: Image, config: HairConfig = HairConfig(),
                mask: np.ndarray | None = None) -> Image:
    """Inpaint the (dilated) hair mask; the image itself where no hair is found."""
    mask = hair_mask(image, config) if mask is None else mask
    if not mask.any():
        return image.copy()
    mask = mask.astype(np.uint8)
    if config.dilate:
        mask = cv2.dilate(mask, np.ones((3, 3), np.uint8), iterations=config.dilate)
    radius = max(1.0, scaled(config.radius, image))
    return cv2.inpaint(image, mask, radius, INPAINT_METHODS[config.method])


# --- field of view -------------------------------------------------------------------------------

def field_of_view_box(image: Image, config: FovConfig = FovConfig()) -> Box | None:
    """The crop box (x0, y0, x1, y1) of the field of view, or None when the image has no
    vignette (the crop would remove less than `min_crop` of the image).

    The field of view is the largest component brighter than the threshold. mode "box": its
    bounding box (removes black bars around a circle that lies inside the frame). mode
    "inscribed": a circle is fitted to its border (where that is not the image's edge) and the
    largest box inside both the circle and the image is kept (also removes the dark corners left
    by a circle wider than the frame, at the cost of the image's edges); None where the border
    is not a circle that holds the bright pixels.
    """
    red, green, blue = cv2.split(check_image(image))
    brightest = cv2.max(cv2.max(red, green), blue)
    bright = (brightest > config.threshold).astype(np.uint8)
    height, width = bright.shape
    if bright.all() or not bright.any():
        return None
    open_size = _odd(max(3.0, min(height, width) / 100))
    bright = cv2.morphologyEx(bright, cv2.MORPH_OPEN, np.ones((open_size, open_size), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(bright, connectivity=8)
    if count < 2:
        return None
    index = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if config.mode == "box":
        x, y, w, h = (int(v) for v in stats[index, :4])
        box = (x, y, x + w, y + h)
    else:
        circle = _fit_circle((labels == index).astype(np.uint8))
        box = None if circle is None else _inscribed_box(*circle, width, height)
        if box is None:
            return None
    box = _widen(box, config.margin, width, height)
    area = (box[2] - box[0]) * (box[3] - box[1])
    if area > (1.0 - config.min_crop) * width * height:
        return None
    return box


def _widen(box: Box, margin: float, width: int, height: int) -> Box:
    dx, dy = int(round(margin * (box[2] - box[0]))), int(round(margin * (box[3] - box[1])))
    return (max(0, box[0] - dx), max(0, box[1] - dy), min(width, box[2] + dx),
            min(height, box[3] + dy))


def _fit_circle(region: np.ndarray, max_residual: float = 0.03,
                max_outside: float = 0.02) -> tuple[float, float, float] | None:
    """(cx, cy, r) of a circle fitted (algebraic least squares) to the border of a bright
    region where it is not the image's edge; None unless the fit is good (RMS distance below
    `max_residual` of r) and the circle holds all but `max_outside` of the region."""
    height, width = region.shape
    contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    points = np.concatenate([c[:, 0, :] for c in contours]).astype(np.float64)
    inner = (points[:, 0] > 1) & (points[:, 0] < width - 2) & (points[:, 1] > 1) & \
        (points[:, 1] < height - 2)
    points = points[inner]
    if len(points) < 20:
        return None
    x, y = points[:, 0], points[:, 1]
    design = np.column_stack([x, y, np.ones_like(x)])
    (a, b, c), *_ = np.linalg.lstsq(design, x * x + y * y, rcond=None)
    cx, cy = a / 2.0, b / 2.0
    r2 = c + cx * cx + cy * cy
    if r2 <= 0:
        return None
    radius = float(np.sqrt(r2))
    residual = np.sqrt(np.mean((np.hypot(x - cx, y - cy) - radius) ** 2))
    ys, xs = np.nonzero(region)
    outside = np.mean(np.hypot(xs + 0.5 - cx, ys + 0.5 - cy) > radius * 1.02)
    if residual > max_residual * radius or outside > max_outside:
        return None
    return cx, cy, radius


def _inscribed_box(cx: float, cy: float, radius: float, width: int, height: int) -> Box | None:
    """The largest box (of those centred on the circle, clipped by the image) inside the circle."""
    best, best_area = None, 0.0
    for half_width in np.linspace(radius * 0.05, radius * 0.999, 200):
        half_height = np.sqrt(radius * radius - half_width * half_width)
        x0, x1 = max(0.0, cx - half_width), min(float(width), cx + half_width)
        y0, y1 = max(0.0, cy - half_height), min(float(height), cy + half_height)
        area = max(0.0, x1 - x0) * max(0.0, y1 - y0)
        if area > best_area:
            best_area = area
            best = (int(np.ceil(x0)), int(np.ceil(y0)), int(np.floor(x1)), int(np.floor(y1)))
    if best is None or best[2] <= best[0] or best[3] <= best[1]:
        return None
    return best


def crop_field_of_view(image: Image, config: FovConfig = FovConfig()) -> Image:
    """The image cropped to its field of view; untouched (same array) without a vignette."""
    box = field_of_view_box(image, config)
    return image if box is None else crop(image, box)


def crop(array: np.ndarray, box: Box | None, like: tuple[int, int] | None = None) -> np.ndarray:
    """`array` cropped to `box`, which was found on an image of shape `like` (H, W) (default:
    the array's own): the box is scaled to the array's resolution (e.g. a 600x450 lesion mask of
    a 200x150 image)."""
    if box is None:
        return array
    height, width = array.shape[:2]
    ref_h, ref_w = like if like is not None else (height, width)
    sx, sy = width / ref_w, height / ref_h
    x0, y0 = int(round(box[0] * sx)), int(round(box[1] * sy))
    x1, y1 = max(x0 + 1, int(round(box[2] * sx))), max(y0 + 1, int(round(box[3] * sy)))
    return np.ascontiguousarray(array[y0:y1, x0:x1])


# --- a preprocessing: a selection of steps with their settings ----------------------------------

CONFIG_OF = {"colour": ColourConfig, "hair": HairConfig, "fov": FovConfig}


@dataclass(frozen=True)
class Preprocessing:
    """Selected steps (run in STEPS order) and the settings of each."""

    steps: tuple[str, ...] = ()  # a subset of STEPS, in STEPS order; () = no preprocessing
    colour: ColourConfig = field(default_factory=ColourConfig)  # Shades of Gray settings
    hair: HairConfig = field(default_factory=HairConfig)  # hair removal settings
    fov: FovConfig = field(default_factory=FovConfig)  # field-of-view crop settings

    def __post_init__(self) -> None:
        unknown = [s for s in self.steps if s not in STEPS]
        if unknown:
            raise ValueError(f"unknown preprocessing step(s) {unknown}; valid: {', '.join(STEPS)}")
        object.__setattr__(self, "steps", tuple(s for s in STEPS if s in self.steps))

    def __bool__(self) -> bool:
        return bool(self.steps)

    def spec(self) -> str:
        """Canonical text naming every parameter ("none" without steps); parse() reads it back."""
        if not self.steps:
            return NONE
        parts = []
        for step in self.steps:
            settings = getattr(self, step)
            values = [f"{f.name}={getattr(settings, f.name)}" for f in dataclasses.fields(settings)]
            parts.append(":".join([step, *values]))
        return ",".join(parts)

    def short_name(self) -> str:
        """The steps joined by "+" ("none" without steps), e.g. for folder names."""
        return "+".join(self.steps) or NONE

    def crop_box(self, image: Image) -> Box | None:
        """The field-of-view box this preprocessing crops `image` to (None: no crop)."""
        return field_of_view_box(image, self.fov) if "fov" in self.steps else None

    def run(self, image: Image) -> tuple[Image, dict[str, Any]]:
        """The preprocessed image and what was done: {"box": the crop box or None (fov),
        "hair_fraction": share of the (cropped) image's pixels found to be hair (hair)}."""
        image = check_image(image)
        info: dict[str, Any] = {}
        if "fov" in self.steps:
            info["box"] = field_of_view_box(image, self.fov)
            image = crop(image, info["box"])
        if "hair" in self.steps:
            mask = hair_mask(image, self.hair)
            info["hair_fraction"] = float(mask.mean())
            image = remove_hair(image, self.hair, mask)
        if "colour" in self.steps:
            image = colour_constancy(image, self.colour)
        return image, info

    def __call__(self, image: Image) -> Image:
        """Apply the steps to a uint8 HxWx3 RGB image (the same array without any step)."""
        return self.run(image)[0]


def _convert(settings_class: type, name: str, text: str) -> Any:
    kind = typing.get_type_hints(settings_class)[name]
    try:
        return int(text) if kind is int else float(text) if kind is float else text
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a valid {kind.__name__}") from None


def parse_preprocessing(text: str | None) -> Preprocessing:
    """A Preprocessing from its text: "none" (or empty), or a comma list of steps (colour, hair,
    fov; aliases color, crop), each optionally followed by ":name=value" settings."""
    if text is None or text.strip().lower() in ("", NONE):
        return Preprocessing()
    steps: list[str] = []
    settings: dict[str, Any] = {}
    for item in text.split(","):
        name, *assignments = [part.strip() for part in item.split(":")]
        step = ALIASES.get(name.lower(), name.lower())
        if step not in STEPS:
            raise ValueError(f"unknown preprocessing step {name!r} in {text!r}; valid: "
                             f"{', '.join(STEPS)} (or none)")
        if step in steps:
            raise ValueError(f"preprocessing step {step!r} given twice in {text!r}")
        config_class = CONFIG_OF[step]
        known = {f.name for f in dataclasses.fields(config_class)}
        values = {}
        for assignment in assignments:
            key, equals, value = assignment.partition("=")
            if not equals or key not in known:
                raise ValueError(f"{step}: bad setting {assignment!r} in {text!r}; settings: "
                                 f"{', '.join(sorted(known))} (as {step}:name=value)")
            values[key] = _convert(config_class, key, value)
        steps.append(step)
        settings[step] = config_class(**values)
    return Preprocessing(steps=tuple(steps), **settings)


def canonical(text: str | None) -> str:
    """The canonical spec of a preprocessing text ("colour" -> "colour:p=6.0")."""
    return parse_preprocessing(text).spec()

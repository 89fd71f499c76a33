"""Drawing the synthetic dermoscopy-like lesions and their masks: pure NumPy / OpenCV functions.

Each class has its own look, loosely after the dermoscopic criteria of the real diagnosis, strong
enough for a small CNN to learn at 64 px in a few epochs:

    nv     uniform brown, round, regular pigment network
    mel    large, irregular border, dark brown/black/blue-grey, peripheral dots and streaks
    bkl    tan waxy plaque, sharp border, fissures, milia-like cysts and comedo-like openings
    bcc    pink, pearly white areas, red arborising vessels, blue-grey ovoid nests
    akiec  red, ill-defined, white-yellow scale, dotted vessels  (ISIC 2019: AK)
    scc    pink-white, large central yellow keratin mass, crust   (ISIC 2019 only: SCC)
    df     small, light brown peripheral network, central white scar-like patch
    vasc   red/purple lacunae separated by pale septa, sharp border

A lesion is drawn once in its own square frame (`draw_lesion`); each image of it is a view
rendered on skin under a different rotation, scale, position and lighting (`render_view`), with a
binary lesion mask (255 = lesion). Every random draw comes from `seeded_rng(seed, stream, index)`,
so the pixels do not depend on the order or thread they are drawn in. Any change here changes the
output: bump utils.data.synthetic.GENERATOR_VERSION.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

JPEG_QUALITY = 90


def seeded_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    """Independent generator for (seed, stream, index): independent of order and threads."""
    return np.random.default_rng([seed, stream, index])


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth random field (size x size, roughly unit variance) from a cells x cells grid."""
    small = rng.standard_normal((cells, cells)).astype(np.float32)
    field = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    return field / max(float(field.std()), 1e-6)


def _jitter(rng: np.random.Generator, colour: Sequence[float], spread: float = 0.06) -> np.ndarray:
    """A colour (RGB 0-255) with a small random brightness and per-channel change."""
    gain = rng.normal(1.0, spread) * rng.normal(1.0, spread / 3, 3)
    return np.clip(np.asarray(colour, np.float32) * gain, 0, 255).astype(np.float32)


def _blend(canvas: np.ndarray, colour: np.ndarray, weight: np.ndarray) -> None:
    """In place: canvas = canvas * (1 - weight) + colour * weight."""
    weight = np.clip(weight, 0.0, 1.0)[..., None]
    canvas *= 1.0 - weight
    canvas += weight * colour


def _point_inside(
    rng: np.random.Generator, border: Callable, lo: float, hi: float
) -> tuple[float, float]:
    """A random point (unit coordinates) at a fraction lo..hi of the border radius."""
    theta = rng.uniform(0, 2 * math.pi)
    radius = rng.uniform(lo, hi) * float(border(theta))
    return radius * math.cos(theta), radius * math.sin(theta)


@dataclass(frozen=True)
class Frame:
    """The lesion's own square canvas: pixel grid, unit coordinates and its border."""

    size: int
    u: np.ndarray  # x in [-1, 1]
    v: np.ndarray  # y in [-1, 1]
    r: np.ndarray  # radius / border radius (1 at the border)
    border: Callable[[float | np.ndarray], np.ndarray]

    def px(self, x: float, y: float) -> tuple[int, int]:
        half = self.size / 2
        return int(round(half + x * half)), int(round(half + y * half))

    def scale(self, length: float) -> int:
        return max(1, int(round(length * self.size / 2)))


def _make_frame(rng: np.random.Generator, size: int, irregularity: float, radius: float) -> Frame:
    """Canvas coordinates and a border r(theta) = radius * (1 + sum of random harmonics)."""
    grid = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    u, v = np.meshgrid(grid, grid)
    theta = np.arctan2(v, u)
    elong, elong_phase = rng.uniform(0.0, 0.15), rng.uniform(0, 2 * math.pi)
    ks = np.arange(3, 9)
    amps = irregularity * rng.uniform(0.3, 1.0, ks.size) / np.sqrt(ks - 2)
    phases = rng.uniform(0, 2 * math.pi, ks.size)

    angles = np.linspace(-math.pi, math.pi, 721)
    wave = elong * np.cos(2 * angles + elong_phase)
    for k, amp, phase in zip(ks, amps, phases, strict=True):
        wave += amp * np.cos(k * angles + phase)
    table = radius * (1 + np.clip(wave, -0.45, 0.45))

    def border(t):  # border radius at angle t (radians), interpolated from the table
        return np.interp(
            np.remainder(np.asarray(t) + math.pi, 2 * math.pi) - math.pi, angles, table
        )

    r = np.sqrt(u * u + v * v) / border(theta)
    return Frame(size=size, u=u, v=v, r=r, border=border)


def _network(
    f: Frame, rng: np.random.Generator, period: float, width: float, warp: float
) -> np.ndarray:
    """Reticular (pigment network) line mask in [0, 1]: a warped, rotated grid."""
    angle = rng.uniform(0, math.pi)
    cu, su = math.cos(angle), math.sin(angle)
    x = (f.u * cu + f.v * su) / period + warp * _smooth_noise(rng, f.size, 6)
    y = (-f.u * su + f.v * cu) / period + warp * _smooth_noise(rng, f.size, 6)
    d = np.minimum(np.abs(x - np.round(x)), np.abs(y - np.round(y)))
    return np.clip(1 - d / width, 0, 1)


def _dots(
    canvas: np.ndarray,
    f: Frame,
    rng: np.random.Generator,
    n: int,
    colour: Sequence[float],
    radius: tuple[float, float],
    where: tuple[float, float],
) -> None:
    """n filled dots near `colour`; radius in unit lengths, at fractions `where` of the border."""
    for _ in range(n):
        x, y = _point_inside(rng, f.border, *where)
        cv2.circle(
            canvas,
            f.px(x, y),
            f.scale(rng.uniform(*radius)),
            _jitter(rng, colour).tolist(),
            -1,
            cv2.LINE_AA,
        )


def _vessels(
    canvas: np.ndarray,
    f: Frame,
    rng: np.random.Generator,
    colour: np.ndarray,
    n_roots: int,
    depth: int,
) -> None:
    """Arborising vessels: thin red branching lines that taper."""
    stack = [
        (*_point_inside(rng, f.border, 0.0, 0.6), rng.uniform(0, 2 * math.pi), 0.35, depth)
        for _ in range(n_roots)
    ]
    while stack:
        x, y, angle, length, level = stack.pop()
        nx, ny = x + length * math.cos(angle), y + length * math.sin(angle)
        thickness = 2 if level >= depth - 1 else 1
        cv2.line(canvas, f.px(x, y), f.px(nx, ny), colour.tolist(), thickness, cv2.LINE_AA)
        if level > 0:
            for turn in (-1, 1):
                stack.append(
                    (nx, ny, angle + turn * rng.uniform(0.3, 0.9), length * 0.65, level - 1)
                )


def _paint_nv(c, f, rng):
    base = _jitter(rng, (150, 95, 62))
    c[:] = base * (1 + 0.05 * _smooth_noise(rng, f.size, 5))[..., None]
    _blend(c, _jitter(rng, (112, 68, 42)), 0.45 * _network(f, rng, 0.11, 0.15, 0.15) * (f.r < 0.95))
    _blend(c, _jitter(rng, (120, 72, 45)), 0.5 * np.clip(1 - f.r / 0.6, 0, 1))


def _paint_mel(c, f, rng):
    c[:] = _jitter(rng, (110, 65, 40))
    for colour, cells, thr in (
        ((45, 32, 30), 5, 0.4),
        ((95, 105, 135), 4, 0.6),
        ((170, 120, 85), 5, 0.7),
    ):
        field = _smooth_noise(rng, f.size, cells)
        _blend(c, _jitter(rng, colour), np.clip((field - thr) * 2.5, 0, 1))
    _blend(c, _jitter(rng, (60, 38, 28)), 0.6 * _network(f, rng, 0.14, 0.25, 0.6) * (f.r < 0.9))
    _blend(
        c, _jitter(rng, (215, 205, 210)), np.clip((_smooth_noise(rng, f.size, 6) - 1.6) * 3, 0, 0.8)
    )
    _dots(c, f, rng, int(rng.integers(8, 20)), (30, 25, 25), (0.012, 0.03), (0.55, 1.0))
    for _ in range(int(rng.integers(0, 10))):
        theta = rng.uniform(0, 2 * math.pi)
        rb = float(f.border(theta))
        a = f.px(0.8 * rb * math.cos(theta), 0.8 * rb * math.sin(theta))
        b = f.px(1.12 * rb * math.cos(theta), 1.12 * rb * math.sin(theta))
        cv2.line(c, a, b, _jitter(rng, (50, 35, 30)).tolist(), 2, cv2.LINE_AA)


def _paint_bkl(c, f, rng):
    c[:] = _jitter(rng, (200, 160, 102)) * (1 + 0.06 * _smooth_noise(rng, f.size, 7))[..., None]
    ridges = np.abs(_smooth_noise(rng, f.size, 9)) < 0.18
    _blend(c, _jitter(rng, (140, 102, 68)), 0.75 * ridges)
    _dots(c, f, rng, int(rng.integers(5, 14)), (240, 235, 215), (0.015, 0.03), (0.0, 0.85))
    _dots(c, f, rng, int(rng.integers(4, 10)), (85, 62, 45), (0.012, 0.025), (0.0, 0.85))


def _paint_bcc(c, f, rng):
    c[:] = _jitter(rng, (212, 132, 165)) * (1 + 0.04 * _smooth_noise(rng, f.size, 5))[..., None]
    _blend(c, _jitter(rng, (245, 228, 232)), np.clip(_smooth_noise(rng, f.size, 5) - 0.4, 0, 0.8))
    _vessels(c, f, rng, _jitter(rng, (185, 25, 45)), int(rng.integers(3, 6)), 4)
    _dots(c, f, rng, int(rng.integers(4, 9)), (80, 90, 125), (0.05, 0.1), (0.1, 0.75))
    if rng.random() < 0.4:  # ulceration
        _dots(c, f, rng, 1, (120, 35, 30), (0.08, 0.14), (0.0, 0.4))


def _paint_akiec(c, f, rng):
    c[:] = _jitter(rng, (205, 85, 78)) * (1 + 0.07 * _smooth_noise(rng, f.size, 8))[..., None]
    scale = np.clip((_smooth_noise(rng, f.size, 12) - 0.5) * 2.0, 0, 1)
    _blend(c, _jitter(rng, (238, 226, 200)), 0.85 * scale)
    _dots(c, f, rng, int(rng.integers(15, 30)), (165, 35, 45), (0.008, 0.018), (0.0, 0.95))
    _dots(c, f, rng, int(rng.integers(6, 14)), (245, 240, 235), (0.012, 0.022), (0.0, 0.9))


def _paint_scc(c, f, rng):
    c[:] = _jitter(rng, (232, 178, 172))
    keratin = np.clip((0.55 - f.r) * 5 + 0.3 * _smooth_noise(rng, f.size, 6), 0, 1)
    _blend(c, _jitter(rng, (242, 228, 168)), keratin)
    _dots(c, f, rng, int(rng.integers(1, 3)), (135, 60, 38), (0.06, 0.12), (0.0, 0.35))
    _dots(c, f, rng, int(rng.integers(15, 30)), (190, 30, 45), (0.01, 0.02), (0.6, 0.95))


def _paint_df(c, f, rng):
    c[:] = _jitter(rng, (188, 118, 100)) * (1 + 0.04 * _smooth_noise(rng, f.size, 5))[..., None]
    _blend(c, _jitter(rng, (140, 85, 62)), 0.5 * _network(f, rng, 0.12, 0.2, 0.2) * (f.r > 0.55))
    patch = np.clip((0.6 - f.r) * 6 + 0.4 * _smooth_noise(rng, f.size, 5), 0, 1)
    _blend(c, _jitter(rng, (243, 234, 226)), patch)


def _paint_vasc(c, f, rng):
    c[:] = _jitter(rng, (190, 95, 115))
    for _ in range(int(rng.integers(14, 26))):
        x, y = _point_inside(rng, f.border, 0.0, 0.85)
        colour = _jitter(rng, (165, 25, 55) if rng.random() < 0.6 else (105, 30, 85))
        cv2.circle(c, f.px(x, y), f.scale(rng.uniform(0.08, 0.2)), colour.tolist(), -1, cv2.LINE_AA)


@dataclass(frozen=True)
class Style:
    """How one class looks: painter, border irregularity, edge softness and size range."""

    paint: Callable[[np.ndarray, Frame, np.random.Generator], None]
    irregularity: float  # amplitude of the border harmonics
    softness: float  # width of the border transition, in border radii
    size: tuple[float, float]  # lesion radius as a fraction of the image's shorter side


STYLES: Mapping[str, Style] = {
    "akiec": Style(_paint_akiec, 0.15, 0.12, (0.30, 0.40)),
    "bcc": Style(_paint_bcc, 0.12, 0.05, (0.28, 0.38)),
    "bkl": Style(_paint_bkl, 0.10, 0.015, (0.28, 0.40)),
    "df": Style(_paint_df, 0.06, 0.10, (0.24, 0.32)),
    "mel": Style(_paint_mel, 0.22, 0.04, (0.32, 0.42)),
    "nv": Style(_paint_nv, 0.05, 0.03, (0.24, 0.34)),
    "vasc": Style(_paint_vasc, 0.06, 0.015, (0.24, 0.34)),
    "scc": Style(_paint_scc, 0.12, 0.06, (0.28, 0.38)),
}
FRAME_RADIUS = 0.6  # border radius of the lesion in its own frame (unit coordinates)


@dataclass(frozen=True)
class LesionDrawing:
    """A lesion in its own frame plus the patient's skin, shared by all its views."""

    rgb: np.ndarray  # (S, S, 3) float32
    alpha: np.ndarray  # (S, S) float32 in [0, 1]
    radius_fraction: float  # lesion radius / shorter image side
    skin: np.ndarray  # (3,) skin colour
    hairy: bool
    dark_frame: bool  # dermoscope's circular field of view


def draw_lesion(
    style_name: str,
    rng: np.random.Generator,
    frame_size: int,
    mix: str | None = None,
    mix_weight: float = 0.0,
    mix_rng: np.random.Generator | None = None,
) -> LesionDrawing:
    """Render one lesion's appearance in its own square frame.

    With `mix` and 0 < `mix_weight` <= 1 the lesion is atypical: the look of class `mix`,
    painted on the same frame with `mix_rng`, is blended in with that weight (colours, structures,
    border irregularity, edge softness and size all move towards it); that is how two classes'
    appearances overlap. `mix_weight` 0 draws the pure look, consuming `rng` exactly as before.
    """
    style = STYLES[style_name]
    other = STYLES[mix] if mix is not None and mix_weight > 0 else None
    w = float(mix_weight)

    def lerp(name: str) -> float:  # the style's value, moved towards the blended look's
        own = getattr(style, name)
        return own if other is None else (1 - w) * own + w * getattr(other, name)

    irregularity = lerp("irregularity")
    f = _make_frame(rng, frame_size, irregularity, FRAME_RADIUS)
    canvas = np.zeros((frame_size, frame_size, 3), np.float32)
    style.paint(canvas, f, rng)
    if other is not None:
        second = np.zeros_like(canvas)
        other.paint(second, f, mix_rng if mix_rng is not None else rng)
        canvas *= 1 - w
        canvas += w * second
    edge = lerp("softness") * (1 + 0.3 * _smooth_noise(rng, frame_size, 6).clip(-2, 2))
    alpha = 0.5 + 0.5 * np.tanh((1 - f.r) / np.maximum(edge, 0.005))
    tone = rng.uniform(0, 1)  # light to darker skin
    skin = _jitter(rng, (236 - 40 * tone, 192 - 50 * tone, 172 - 50 * tone), 0.03)
    size = style.size if other is None else tuple(
        (1 - w) * a + w * b for a, b in zip(style.size, other.size, strict=True))
    return LesionDrawing(
        rgb=np.clip(canvas, 0, 255),
        alpha=alpha.astype(np.float32),
        radius_fraction=float(rng.uniform(*size)),
        skin=skin,
        hairy=bool(rng.random() < 0.3),
        dark_frame=bool(rng.random() < 0.3),
    )


@lru_cache(maxsize=8)
def _radius_squared(width: int, height: int) -> np.ndarray:
    """Squared elliptical distance from the image centre (1 at the middle of each edge)."""
    xs = ((np.arange(width, dtype=np.float32) + 0.5) / width * 2 - 1) ** 2
    ys = ((np.arange(height, dtype=np.float32) + 0.5) / height * 2 - 1) ** 2
    grid = ys[:, None] + xs[None, :]
    grid.flags.writeable = False
    return grid


def render_view(
    drawing: LesionDrawing, rng: np.random.Generator, image_size: tuple[int, int], first: bool
) -> tuple[np.ndarray, np.ndarray]:
    """One view of a lesion on skin: (RGB uint8 image HxWx3, mask uint8 HxW in {0, 255})."""
    width, height = size = image_size
    side = min(width, height)
    frame = drawing.rgb.shape[0]
    scale = drawing.radius_fraction * side / (FRAME_RADIUS * frame / 2)
    scale *= 1.0 if first else float(np.clip(rng.normal(1.0, 0.1), 0.8, 1.2))
    matrix = cv2.getRotationMatrix2D((frame / 2, frame / 2), float(rng.uniform(0, 360)), scale)
    shift = rng.uniform(-0.08, 0.08, 2) * size
    matrix[:, 2] += (width / 2 + shift[0] - frame / 2, height / 2 + shift[1] - frame / 2)
    if rng.random() < 0.5:  # mirrored view
        matrix[0] = -matrix[0]
        matrix[0, 2] += width
    image = cv2.warpAffine(drawing.rgb, matrix, size, flags=cv2.INTER_LINEAR)
    alpha = cv2.warpAffine(drawing.alpha, matrix, size, flags=cv2.INTER_LINEAR)
    mask = np.where(alpha >= 0.5, 255, 0).astype(np.uint8)

    image -= drawing.skin  # composite on skin: skin + alpha * (lesion - skin)
    image *= alpha[..., None]
    image += drawing.skin
    image += 3.5 * rng.standard_normal((height, width, 1), dtype=np.float32)
    if drawing.hairy:
        for _ in range(int(rng.integers(1, 7))):
            steps = rng.normal(0, 1, (6, 2)) * (side / 8) + rng.normal(0, side / 6, 2)
            points = np.cumsum(steps, axis=0) + rng.uniform(0, 1, 2) * size
            cv2.polylines(
                image, [points.astype(np.int32)], False, (55.0, 40.0, 32.0), 1, cv2.LINE_AA
            )

    radius2 = _radius_squared(width, height)
    mottling = cv2.resize(
        rng.standard_normal((4, 4), dtype=np.float32), size, interpolation=cv2.INTER_CUBIC
    )
    light = rng.uniform(0.9, 1.08) * (1 + 0.04 * mottling) * (1 - 0.12 * radius2)
    if drawing.dark_frame:  # the dermoscope's round field of view
        light *= np.clip((1.25 - np.sqrt(radius2)) * 8, 0.05, 1)
    image *= light[..., None]
    image *= rng.normal(1.0, 0.03, 3).astype(np.float32)  # white balance
    sigma = float(rng.uniform(0.0, 0.8))
    if sigma > 0.3:
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    image += 0.5
    np.clip(image, 0, 255, out=image)
    return image.astype(np.uint8), mask



def encode_jpeg(rgb: np.ndarray) -> bytes:
    ok, data = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    )
    if not ok:
        raise RuntimeError("OpenCV failed to encode a JPEG")
    return data.tobytes()


def encode_png(mask: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", mask, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise RuntimeError("OpenCV failed to encode a PNG")
    return data.tobytes()


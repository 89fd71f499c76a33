"""The embedded default dataset: seeded, dermoscopy-like synthetic lesions in the exact HAM10000
(Harvard Dataverse) and ISIC 2019 training layouts.

Used on a fresh clone and in CI, where the real data (non-commercial licence, gigabytes) is
absent. Each class has its own look, loosely after the dermoscopic criteria of the real
diagnosis, strong enough for a small CNN to learn at 64 px in a few epochs:

    nv     uniform brown, round, regular pigment network
    mel    large, irregular border, dark brown/black/blue-grey, peripheral dots and streaks
    bkl    tan waxy plaque, sharp border, fissures, milia-like cysts and comedo-like openings
    bcc    pink, pearly white areas, red arborising vessels, blue-grey ovoid nests
    akiec  red, ill-defined, white-yellow scale, dotted vessels  (ISIC 2019: AK)
    scc    pink-white, large central yellow keratin mass, crust   (ISIC 2019 only: SCC)
    df     small, light brown peripheral network, central white scar-like patch
    vasc   red/purple lacunae separated by pale septa, sharp border

Images of one lesion (1-4 per lesion, as in HAM10000) are views of the same lesion rendered
under a different rotation, scale, position and lighting. Every image comes with a binary lesion
mask (255 = lesion). Two runs with one seed write byte-identical files; per-lesion seeds derive
from (seed, index), so the work is split over threads without changing the output.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import lru_cache
from itertools import repeat
from pathlib import Path
from types import MappingProxyType

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from utils import fileio, paths
from utils.datasets import HAM10000, ISIC2019, ISIC2019_TO_HAM
from utils.errors import DataError

GENERATOR_VERSION = 1  # bump whenever the rendering changes: stamps of older folders stop matching
STAMP_NAME = "synthetic.json"  # parameters of the run that wrote the folder (enables resume)
JPEG_QUALITY = 90
MIN_LESIONS_PER_CLASS = 5  # where n_images allows: rare classes still reach every split
IMAGE_PREFIX = "SYN_"
LESION_PREFIX = "SYNL_"

# HAM10000 layout
HAM_METADATA = "HAM10000_metadata.csv"
HAM_PARTS = ("HAM10000_images_part_1", "HAM10000_images_part_2")
HAM_MASKS = "HAM10000_segmentations_lesion"
HAM_METADATA_COLUMNS = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization")
# ISIC 2019 layout
ISIC_INPUT = "ISIC_2019_Training_Input"
ISIC_GROUND_TRUTH = "ISIC_2019_Training_GroundTruth.csv"
ISIC_METADATA = "ISIC_2019_Training_Metadata.csv"
ISIC_METADATA_COLUMNS = ("image", "age_approx", "anatom_site_general", "lesion_id", "sex")

# Images per lesion in HAM10000 (1: 5514, 2: 1423, 3: 490, 4+: 43 lesions), capped at 4.
GROUP_SIZE_PROBS = (0.738, 0.190, 0.066, 0.006)

# Metadata distributions measured on the official HAM10000_metadata.csv.
HAM_DX_TYPES: Mapping[str, Mapping[str, float]] = MappingProxyType(
    {
        "akiec": {"histo": 1.0},
        "bcc": {"histo": 1.0},
        "bkl": {"histo": 0.70, "consensus": 0.24, "confocal": 0.06},
        "df": {"consensus": 0.52, "histo": 0.48},
        "mel": {"histo": 1.0},
        "nv": {"follow_up": 0.55, "histo": 0.37, "consensus": 0.08},
        "vasc": {"consensus": 0.53, "histo": 0.47},
    }
)
HAM_SEXES: Mapping[str, float] = MappingProxyType({"male": 0.54, "female": 0.455, "unknown": 0.005})
HAM_SITES: Mapping[str, float] = MappingProxyType(
    {
        "back": 2192,
        "lower extremity": 2077,
        "trunk": 1404,
        "upper extremity": 1118,
        "abdomen": 1022,
        "face": 745,
        "chest": 407,
        "foot": 319,
        "unknown": 234,
        "neck": 168,
        "scalp": 128,
        "hand": 90,
        "ear": 56,
        "genital": 48,
        "acral": 7,
    }
)
ISIC_SITES: Mapping[str, float] = MappingProxyType(
    {
        "anterior torso": 0.25,
        "lower extremity": 0.2,
        "head/neck": 0.18,
        "upper extremity": 0.15,
        "posterior torso": 0.12,
        "lateral torso": 0.02,
        "palms/soles": 0.02,
        "oral/genital": 0.01,
        "": 0.05,
    }
)
# Mean age by appearance style (HAM10000 overall: 52 +- 17).
MEAN_AGE: Mapping[str, float] = MappingProxyType(
    {"akiec": 67, "bcc": 66, "bkl": 64, "df": 52, "mel": 61, "nv": 47, "vasc": 50, "scc": 70}
)


# ----------------------------------------------------------------------------------------------
# Planning: which lesion has which class and how many images
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Lesion:
    """One synthetic lesion: its label, appearance style and the images (views) showing it."""

    index: int  # 0-based lesion number (seeds its appearance)
    lesion_id: str
    label: str  # class code of the dataset (e.g. "mel" or "MEL")
    style: str  # appearance key (a HAM10000 code, or "scc")
    image_indices: tuple[int, ...]  # 0-based image numbers (seed each view)
    image_ids: tuple[str, ...]


def allocate_counts(total: int, weights: Mapping[str, float], minimum: int) -> dict[str, int]:
    """Split `total` over classes in proportion to `weights` (largest remainder), with at least
    `minimum` per class (taken from the largest classes)."""
    if total < minimum * len(weights):
        raise ValueError(
            f"{total} images cannot hold {minimum} per class for {len(weights)} classes"
        )
    labels = list(weights)
    share = np.array([weights[c] for c in labels], dtype=float)
    exact = share / share.sum() * total
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: total - counts.sum()]:
        counts[i] += 1
    for i in range(len(labels)):
        while counts[i] < minimum:
            counts[int(np.argmax(counts))] -= 1
            counts[i] += 1
    return dict(zip(labels, counts.tolist(), strict=True))


def split_into_groups(total: int, min_groups: int, rng: np.random.Generator) -> list[int]:
    """Group sizes (1-4, as in HAM10000) summing to `total`, at least `min_groups` groups."""
    sizes: list[int] = []
    remaining = total
    while remaining > 0:
        still_needed = max(0, min_groups - len(sizes) - 1)  # groups to keep room for after this one
        largest = max(1, min(len(GROUP_SIZE_PROBS), remaining - still_needed))
        size = int(rng.choice(len(GROUP_SIZE_PROBS), p=GROUP_SIZE_PROBS)) + 1
        sizes.append(min(size, largest))
        remaining -= sizes[-1]
    return sizes


def plan_lesions(
    counts: Mapping[str, int], styles: Mapping[str, str], n_images: int, rng: np.random.Generator
) -> list[Lesion]:
    """Lesions with HAM10000-like group sizes, class proportions from `counts`, shuffled."""
    minimum = min(MIN_LESIONS_PER_CLASS, n_images // len(counts))
    if minimum < 1:
        raise ValueError(
            f"n_images={n_images} is too small: need at least one image for each of the "
            f"{len(counts)} classes"
        )
    per_class = allocate_counts(n_images, counts, minimum)
    groups = [
        (label, size)
        for label in counts
        for size in split_into_groups(per_class[label], minimum, rng)
    ]
    order = rng.permutation(len(groups))
    lesions, next_image = [], 0
    for number, g in enumerate(order):
        label, size = groups[g]
        indices = tuple(range(next_image, next_image + size))
        next_image += size
        lesions.append(
            Lesion(
                index=number,
                lesion_id=f"{LESION_PREFIX}{number + 1:07d}",
                label=label,
                style=styles[label],
                image_indices=indices,
                image_ids=tuple(f"{IMAGE_PREFIX}{i + 1:07d}" for i in indices),
            )
        )
    return lesions


# ----------------------------------------------------------------------------------------------
# Rendering: a lesion drawn once in its own frame, then warped into each view
# ----------------------------------------------------------------------------------------------
def _rng(seed: int, stream: int, index: int) -> np.random.Generator:
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


def draw_lesion(style_name: str, rng: np.random.Generator, frame_size: int) -> LesionDrawing:
    """Render one lesion's appearance in its own square frame."""
    style = STYLES[style_name]
    f = _make_frame(rng, frame_size, style.irregularity, FRAME_RADIUS)
    canvas = np.zeros((frame_size, frame_size, 3), np.float32)
    style.paint(canvas, f, rng)
    edge = style.softness * (1 + 0.3 * _smooth_noise(rng, frame_size, 6).clip(-2, 2))
    alpha = 0.5 + 0.5 * np.tanh((1 - f.r) / np.maximum(edge, 0.005))
    tone = rng.uniform(0, 1)  # light to darker skin
    skin = _jitter(rng, (236 - 40 * tone, 192 - 50 * tone, 172 - 50 * tone), 0.03)
    return LesionDrawing(
        rgb=np.clip(canvas, 0, 255),
        alpha=alpha.astype(np.float32),
        radius_fraction=float(rng.uniform(*style.size)),
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


def _write(path: str, data: bytes) -> None:
    """Atomic write (temporary file + rename) without fsync: a crash leaves no half file, and a
    dataset this cheap to regenerate does not need 2,000 disk flushes."""
    with fileio.atomic_path(path) as tmp:
        tmp.write_bytes(data)


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


# ----------------------------------------------------------------------------------------------
# Writing: one task per lesion, run in worker threads
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """Where one dataset's files go and how its views are rendered."""

    seed: int
    image_size: tuple[int, int]  # (width, height)
    image_path: Callable[[int, str], Path]  # (image index, image id) -> JPEG path
    mask_path: Callable[[str], Path] | None  # image id -> mask PNG path; None: no masks
    resume: bool  # skip a lesion whose files all exist (written with the same parameters)


def write_lesion(lesion: Lesion, target: Target) -> int:
    """Render every view of a lesion and write it atomically; returns the number of images."""
    ids = zip(lesion.image_indices, lesion.image_ids, strict=True)
    images = [target.image_path(index, image_id) for index, image_id in ids]
    masks = [target.mask_path(i) for i in lesion.image_ids] if target.mask_path else []
    if target.resume and all(path.exists() for path in (*images, *masks)):
        return len(images)
    frame_size = max(64, min(target.image_size))
    drawing = draw_lesion(lesion.style, _rng(target.seed, 1, lesion.index), frame_size)
    for view, (index, image_path) in enumerate(zip(lesion.image_indices, images, strict=True)):
        view_rng = _rng(target.seed, 2, index)
        rgb, mask = render_view(drawing, view_rng, target.image_size, first=view == 0)
        _write(image_path, encode_jpeg(rgb))
        if masks:
            _write(masks[view], encode_png(mask))
    return len(images)


def write_lesions(
    lesions: list[Lesion], target: Target, workers: int, desc: str, progress: bool
) -> None:
    """Write all lesions in `workers` threads (OpenCV and NumPy release the GIL for the pixel
    work), with a progress bar. Threads rather than processes: no start-up cost, no
    `if __name__ == "__main__"` guard needed in the caller's script, nothing forked from a
    process running TensorFlow. The output does not depend on `workers`."""
    n_images = sum(len(lesion.image_ids) for lesion in lesions)
    with tqdm(total=n_images, desc=desc, unit="img", disable=not progress) as bar:
        if workers <= 1:
            for lesion in lesions:
                bar.update(write_lesion(lesion, target))
            return
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for done in pool.map(write_lesion, lesions, repeat(target)):
                bar.update(done)


def _prepare_root(root: Path, stamp: dict) -> bool:
    """Create `root` or check it holds an earlier run with the same parameters; True to resume."""
    stamp_path = root / STAMP_NAME
    if stamp_path.is_file():
        previous = json.loads(stamp_path.read_text(encoding="utf-8"))
        previous.pop("complete", None)
        if previous != stamp:
            raise DataError(
                f"{paths.display(root)} holds a synthetic dataset made with other parameters "
                f"({previous}); choose another folder or delete this one"
            )
        return True
    if root.exists() and any(root.iterdir()):
        raise DataError(
            f"{paths.display(root)} is not empty and holds no {STAMP_NAME}: refusing to write a "
            "synthetic dataset over other files; choose an empty or new folder"
        )
    root.mkdir(parents=True, exist_ok=True)
    return False


def _check_size(image_size: Sequence[int]) -> tuple[int, int]:
    width, height = (int(x) for x in image_size)
    if width < 32 or height < 32:
        raise ValueError(
            f"image_size must be at least 32x32 pixels (width, height), got {image_size}"
        )
    return width, height


def _choice(rng: np.random.Generator, weights: Mapping[str, float]) -> str:
    keys = list(weights)
    p = np.array([weights[k] for k in keys], dtype=float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _age(rng: np.random.Generator, style: str) -> float:
    """Age in 5-year steps (as in HAM10000), 0-85; about 0.6 % unknown."""
    if rng.random() < 0.006:
        return math.nan
    return float(np.clip(round(rng.normal(MEAN_AGE[style], 14) / 5) * 5, 0, 85))


def _generate(
    root: Path,
    kind: str,
    lesions: list[Lesion],
    target: Target,
    workers: int | None,
    progress: bool,
    write_tables: Callable[[], None],
) -> Path:
    """Write the images (resuming an earlier run with the same parameters), then the tables,
    then mark the folder complete in its stamp."""
    stamp = {
        "generator": "utils.synthetic",
        "version": GENERATOR_VERSION,
        "dataset": kind,
        "n_images": sum(len(lesion.image_ids) for lesion in lesions),
        "seed": target.seed,
        "image_size": list(target.image_size),
    }
    resume = _prepare_root(root, stamp)
    fileio.write_json(root / STAMP_NAME, {**stamp, "complete": False})
    workers = min(os.cpu_count() or 1, 2) if workers is None else max(1, workers)
    write_lesions(lesions, replace(target, resume=resume), workers, f"synthetic {kind}", progress)
    write_tables()
    fileio.write_json(root / STAMP_NAME, {**stamp, "complete": True})
    return root


def generate_ham10000(
    root: str | os.PathLike,
    n_images: int = 1000,
    seed: int = 0,
    image_size: tuple[int, int] = (200, 150),
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Write a synthetic dataset in the exact HAM10000 layout; returns `root`.

    root/HAM10000_metadata.csv (lesion_id,image_id,dx,dx_type,age,sex,localization),
    JPEGs split over root/HAM10000_images_part_1/ and _part_2/, binary lesion masks in
    root/HAM10000_segmentations_lesion/<image_id>_segmentation.png. `image_size` is
    (width, height); `workers` (threads) defaults to min(2, CPUs). Re-running with the same
    arguments skips the images already written (a killed run resumes)."""
    root = Path(root)
    image_size = _check_size(image_size)
    first_part = (n_images + 1) // 2

    def image_path(index: int, image_id: str) -> Path:
        return root / HAM_PARTS[0 if index < first_part else 1] / f"{image_id}.jpg"

    def mask_path(image_id: str) -> Path:
        return root / HAM_MASKS / f"{image_id}_segmentation.png"

    def write_tables(lesions: list[Lesion], rng: np.random.Generator) -> None:
        rows = []
        for lesion in lesions:
            dx_type, sex = _choice(rng, HAM_DX_TYPES[lesion.label]), _choice(rng, HAM_SEXES)
            age, site = _age(rng, lesion.style), _choice(rng, HAM_SITES)
            rows += [
                (lesion.lesion_id, i, lesion.label, dx_type, age, sex, site)
                for i in lesion.image_ids
            ]
        frame = pd.DataFrame(rows, columns=list(HAM_METADATA_COLUMNS))
        frame["age"] = frame["age"].astype("Int64")
        fileio.write_csv(root / HAM_METADATA, frame)

    rng = _rng(seed, 0, 0)
    lesions = plan_lesions(HAM10000.counts, {c: c for c in HAM10000.classes}, n_images, rng)
    target = Target(seed, image_size, image_path, mask_path, resume=False)
    return _generate(
        root, "ham10000", lesions, target, workers, progress, lambda: write_tables(lesions, rng)
    )


def generate_isic2019(
    root: str | os.PathLike,
    n_images: int = 400,
    seed: int = 0,
    image_size: tuple[int, int] = (200, 150),
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Write a synthetic dataset in the ISIC 2019 training layout; returns `root`.

    root/ISIC_2019_Training_Input/<image>.jpg, ISIC_2019_Training_GroundTruth.csv (one-hot
    floats over ISIC2019.classes + UNK, UNK always 0.0) and ISIC_2019_Training_Metadata.csv
    (image,age_approx,anatom_site_general,lesion_id,sex; some lesion_id empty, as in the real
    file). Classes follow ISIC 2019's proportions; each reuses the look of its HAM10000 class
    (SCC has its own)."""
    root = Path(root)
    image_size = _check_size(image_size)
    styles = {c: "scc" if c == "SCC" else ISIC2019_TO_HAM[c] for c in ISIC2019.classes}

    def image_path(index: int, image_id: str) -> Path:
        return root / ISIC_INPUT / f"{image_id}.jpg"

    def write_tables(lesions: list[Lesion], rng: np.random.Generator) -> None:
        truth, meta = [], []
        columns = [*ISIC2019.classes, "UNK"]
        for lesion in lesions:
            sex = _choice(rng, {"male": 0.52, "female": 0.45, "": 0.03})
            age, site = _age(rng, lesion.style), _choice(rng, ISIC_SITES)
            lesion_id = (
                "" if len(lesion.image_ids) == 1 and rng.random() < 0.1 else lesion.lesion_id
            )
            for image_id in lesion.image_ids:
                truth.append([image_id] + [1.0 if c == lesion.label else 0.0 for c in columns])
                meta.append((image_id, age, site, lesion_id, sex))
        # lesions hold consecutive image numbers in order: the rows are sorted by image id
        fileio.write_csv(root / ISIC_GROUND_TRUTH, pd.DataFrame(truth, columns=["image", *columns]))
        fileio.write_csv(
            root / ISIC_METADATA, pd.DataFrame(meta, columns=list(ISIC_METADATA_COLUMNS))
        )

    rng = _rng(seed, 0, 0)
    lesions = plan_lesions(ISIC2019.counts, styles, n_images, rng)
    target = Target(seed, image_size, image_path, None, resume=False)
    return _generate(
        root, "isic2019", lesions, target, workers, progress, lambda: write_tables(lesions, rng)
    )


GENERATORS: Mapping[str, tuple[Callable[..., Path], str, int]] = {
    # --dataset -> (generator, default folder name, default number of images)
    "ham10000": (generate_ham10000, "HAM10000", 1000),
    "isic2019": (generate_isic2019, "ISIC_2019", 400),
}


# ----------------------------------------------------------------------------------------------
# Command line: python -m utils synthetic
# ----------------------------------------------------------------------------------------------
def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected WIDTHxHEIGHT such as 200x150, got {text!r}"
        ) from None
    return width, height


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of images, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dest",
        nargs="?",
        type=Path,
        default=None,
        help="output folder (default: data/synthetic/HAM10000 or data/synthetic/ISIC_2019)",
    )
    parser.add_argument(
        "--dataset",
        choices=sorted(GENERATORS),
        default="ham10000",
        help="layout to write (default: ham10000)",
    )
    parser.add_argument(
        "--n-images",
        type=_positive,
        default=None,
        help="number of images (default: 1000 for ham10000, 400 for isic2019)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--image-size",
        type=_size,
        default=(200, 150),
        metavar="WxH",
        help="image width x height in pixels (default: 200x150)",
    )
    parser.add_argument("--workers", type=int, default=None, help="threads (default: min(2, CPUs))")


def run(args: argparse.Namespace) -> int:
    generate, folder, default_n = GENERATORS[args.dataset]
    dest = args.dest if args.dest is not None else paths.synthetic_dir() / folder
    n_images = args.n_images if args.n_images is not None else default_n
    root = generate(
        dest, n_images=n_images, seed=args.seed, image_size=args.image_size, workers=args.workers
    )
    print(f"wrote {n_images} synthetic {args.dataset} images to {paths.display(root)}")
    return 0

"""Planning the synthetic datasets: which lesion has which class, look and images.

Classes take the official proportions (each at least `min_class_share` of the images and
MIN_LESIONS_PER_CLASS lesions where the size allows), lesions hold 1-4 images as in HAM10000, and
each lesion gets its look (utils.data.synthetic_looks). utils.data.synthetic writes the files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from utils.data import synthetic_looks as looks
from utils.errors import ConfigError

MIN_LESIONS_PER_CLASS = 5  # where n_images allows: rare classes still reach every split
IMAGE_PREFIX = "SYN_"
LESION_PREFIX = "SYNL_"
# Images per lesion in HAM10000 (1: 5514, 2: 1423, 3: 490, 4+: 43 lesions), capped at 4.
GROUP_SIZE_PROBS = (0.738, 0.190, 0.066, 0.006)


@dataclass(frozen=True)
class Lesion:
    """One synthetic lesion: its label, appearance style and the images (views) showing it."""

    index: int  # 0-based lesion number (seeds its appearance)
    lesion_id: str
    label: str  # class code of the dataset (e.g. "mel" or "MEL")
    style: str  # appearance key (a HAM10000 code, or "scc")
    image_indices: tuple[int, ...]  # 0-based image numbers (seed each view)
    image_ids: tuple[str, ...]
    look: looks.Look | None = None  # what it is drawn as (None: the pure look of `style`)


def allocate_counts(total: int, weights: Mapping[str, float], minimum: int) -> dict[str, int]:
    """Split `total` over classes in proportion to `weights` (largest remainder), with at least
    `minimum` per class (taken from the largest classes)."""
    if total < minimum * len(weights):
        raise ConfigError(
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
    counts: Mapping[str, int],
    styles: Mapping[str, str],
    n_images: int,
    rng: np.random.Generator,
    min_class_share: float = 0.0,
) -> list[Lesion]:
    """Lesions with HAM10000-like group sizes, class proportions from `counts` (each class at
    least `min_class_share` of the images, taken from the largest classes), shuffled."""
    minimum = min(MIN_LESIONS_PER_CLASS, n_images // len(counts))
    if minimum < 1:
        raise ConfigError(
            f"n_images={n_images} is too small: need at least one image for each of the "
            f"{len(counts)} classes"
        )
    floor = max(minimum, min(int(min_class_share * n_images), n_images // len(counts)))
    per_class = allocate_counts(n_images, counts, floor)
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


def assign_looks(lesions: list[Lesion], seed: int, label_noise: float,
                 overlap: float) -> list[Lesion]:
    """Each lesion with its look (utils.data.synthetic_looks: blending, label noise)."""
    return [
        replace(lesion, look=looks.lesion_look(lesion.style, seed, lesion.index, label_noise,
                                               overlap))
        for lesion in lesions
    ]

"""How hard the synthetic default is: look-alike classes, atypical lesions and label noise.

A synthetic dataset whose classes are perfectly separable teaches nothing: every metric is 1.000
and every plot is empty. Two seeded, per-lesion settings of utils.data.synthetic make it harder
in the way real dermoscopy is hard, and a third keeps each class's test estimate meaningful:

    overlap      every lesion's look is blended with the look of one of its look-alike classes,
                 with a weight drawn uniformly from [0, overlap] (0: pure looks): atypical
                 lesions whose colours, structures, border and size sit between two classes;
                 below 0.5 a lesion's own look still dominates, so the classes stay learnable
    label_noise  each lesion, with this probability, is drawn in the look of a look-alike class
                 while keeping its label: the label disagrees with what the image shows, as a
                 misdiagnosis would (0: no noise); even a model that learned every look
                 is wrong on these images, so balanced accuracy stays near 1 - label_noise at best
    min_class_share  every class holds at least this share of the images, taken from the largest
                 classes (HAM10000's df is 1.1 %: 2 test images in a 1,000-image dataset)

Look-alikes follow the dermoscopic differential diagnoses (LOOK_ALIKES: nevus vs melanoma vs
keratosis, the keratinocyte cancers among themselves...). Choices come from
`seeded_rng(seed, 3, lesion index)`, so they do not depend on the order lesions are drawn in.
Each generated folder records the settings in its stamp (synthetic.json) and its README.md, and
lists the look of every image in synthetic_looks.csv. EASY (no blending, no noise, official
proportions) is the first generator's output, byte for byte: clearly separable classes, used
where a test needs a model to learn in a few steps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import pandas as pd

from utils.data.synthetic_drawing import seeded_rng
from utils.tables import markdown_table

LABEL_NOISE = 0.15  # default probability that a lesion is drawn in a look-alike class's look
OVERLAP = 0.45  # default largest weight of the look-alike look blended into each lesion
MIN_CLASS_SHARE = 0.05  # default smallest share of the images a class gets (0: official shares)
# The first generator's settings: pure looks, no noise, the official class proportions.
EASY: Mapping[str, float] = MappingProxyType(
    {"label_noise": 0.0, "overlap": 0.0, "min_class_share": 0.0})
LOOKS_CSV = "synthetic_looks.csv"  # per image: label, look drawn, blended look and its weight
README_NAME = "README.md"

# Appearance style -> the styles it is mistaken for (dermoscopic differential diagnosis).
LOOK_ALIKES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "nv": ("mel", "bkl", "df"),
        "mel": ("nv", "bkl", "vasc"),
        "bkl": ("mel", "nv", "akiec"),
        "bcc": ("akiec", "bkl", "vasc"),
        "akiec": ("bcc", "bkl", "scc"),
        "df": ("nv", "bkl"),
        "vasc": ("bcc", "mel"),
        "scc": ("akiec", "bcc"),
    }
)


@dataclass(frozen=True)
class Look:
    """What one lesion is drawn as (its label may say otherwise)."""

    look: str  # appearance style drawn (a look-alike of the label's style when noisy)
    mix: str | None  # look-alike style blended in (None: a pure look)
    mix_weight: float  # weight of `mix` in [0, overlap]
    noisy: bool  # True when `look` is not the style of the lesion's label


def check_difficulty(label_noise: float, overlap: float, min_class_share: float = 0.0) -> None:
    """ValueError unless every setting is a probability/weight/share in [0, 1]."""
    for name, value in (("label_noise", label_noise), ("overlap", overlap),
                        ("min_class_share", min_class_share)):
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"{name} must be between 0 and 1, got {value!r}")


def lesion_look(style: str, seed: int, index: int, label_noise: float, overlap: float) -> Look:
    """The look of lesion `index` whose label has appearance `style` (seeded, order-free)."""
    rng = seeded_rng(seed, 3, index)
    draws = rng.random(4)  # always four draws: one setting never shifts another's randomness
    noisy = bool(draws[0] < label_noise)
    look = _pick(LOOK_ALIKES[style], draws[1]) if noisy else style
    weight = float(draws[2] * overlap)
    mix = _pick(LOOK_ALIKES[look], draws[3]) if weight > 0 else None
    return Look(look=look, mix=mix, mix_weight=weight if mix else 0.0, noisy=noisy)


def _pick(options: Sequence[str], u: float) -> str:
    return options[min(int(u * len(options)), len(options) - 1)]


def looks_table(lesions: Sequence, looks: Sequence[Look]) -> pd.DataFrame:
    """One row per image: image_id, lesion_id, label, look, mix, mix_weight, noisy_label."""
    rows = [
        (image_id, lesion.lesion_id, lesion.label, look.look, look.mix or "",
         round(look.mix_weight, 4), look.noisy)
        for lesion, look in zip(lesions, looks, strict=True)
        for image_id in lesion.image_ids
    ]
    frame = pd.DataFrame(rows, columns=["image_id", "lesion_id", "label", "look", "mix",
                                        "mix_weight", "noisy_label"])
    return frame.sort_values("image_id", kind="stable").reset_index(drop=True)


def readme(kind: str, stamp: Mapping, table: pd.DataFrame) -> str:
    """The generated folder's README.md: what it is, the settings and the realised noise."""
    lesions = table.drop_duplicates("lesion_id")
    noisy_lesions, noisy_images = int(lesions["noisy_label"].sum()), int(table["noisy_label"].sum())
    per_class = table.groupby("label", sort=True)["noisy_label"].agg(["size", "sum"])
    width, height = stamp["image_size"]
    kind = {"ham10000": "HAM10000", "isic2019": "ISIC 2019"}.get(kind, kind)
    lines = [
        f"# Synthetic {kind} dataset: generated images, not real data",
        "",
        f"Written by `utils.data.synthetic` (generator version {stamp['version']}): "
        f"{stamp['n_images']} images of {width}x{height} px, seed {stamp['seed']}, in the exact "
        f"{kind} layout. Nothing here is a photograph of skin; no number measured on it is a "
        "result about skin lesions.",
        "",
        "## Difficulty (utils/data/synthetic_looks.py)",
        "",
        f"- label noise {stamp['label_noise']:.2f}: each lesion, independently with this "
        "probability, is drawn in the look of a look-alike class and keeps its label. Realised "
        f"here: {noisy_lesions} of {len(lesions)} lesions ({noisy_lesions / len(lesions):.1%}), "
        f"{noisy_images} of {len(table)} images ({noisy_images / len(table):.1%}).",
        f"- overlap {stamp['overlap']:.2f}: each lesion's look is blended with a look-alike "
        f"class's look, weight uniform in [0, {stamp['overlap']:.2f}] (mean realised weight "
        f"{lesions['mix_weight'].mean():.3f}).",
        "- A model that learned every look perfectly would still be wrong on the noisy images: "
        "its balanced accuracy would be about 1 minus the share of noisy images in each class "
        "(table below).",
        f"- smallest class share {stamp['min_class_share']:.2f}: every class holds at least this "
        "share of the images (taken from the largest classes), so each has test images enough "
        "for a per-class estimate; otherwise the classes keep the official proportions.",
        "",
        f"`{LOOKS_CSV}` lists each image's label, the look drawn, the blended look and its weight "
        "(`noisy_label` = the label disagrees with the look). Noisy labels per class:",
        "",
        markdown_table([(label, int(row["size"]), int(row["sum"]))
                        for label, row in per_class.iterrows()],
                       ["class", "images", "noisy labels"]),
        "",
    ]
    return "\n".join(lines)


def stamp_settings(label_noise: float, overlap: float,
                   min_class_share: float) -> dict[str, float]:
    """The difficulty entries of a folder's stamp (compared on resume)."""
    return {"label_noise": float(label_noise), "overlap": float(overlap),
            "min_class_share": float(min_class_share)}

"""The metadata columns of the synthetic datasets: value distributions measured on the official
HAM10000_metadata.csv (diagnosis confirmation, sex, body site, age by class) and ISIC 2019's
body sites, and the seeded draws from them (utils.data.synthetic writes the tables).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np

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



def choice(rng: np.random.Generator, weights: Mapping[str, float]) -> str:
    keys = list(weights)
    p = np.array([weights[k] for k in keys], dtype=float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def age(rng: np.random.Generator, style: str) -> float:
    """Age in 5-year steps (as in HAM10000), 0-85; about 0.6 % unknown."""
    if rng.random() < 0.006:
        return math.nan
    return float(np.clip(round(rng.normal(MEAN_AGE[style], 14) / 5) * 5, 0, 85))

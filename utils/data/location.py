"""Where a dataset lives: an explicit folder, or the embedded synthetic default generated on
first use (the one place that decides which, for training, studies and notebooks)."""
from __future__ import annotations

import os
from pathlib import Path

from utils import paths

SYNTHETIC_LAYOUTS = {"ham10000": "HAM10000", "synthetic": "HAM10000", "isic2019": "ISIC_2019"}


def synthetic_folder(dataset: str, n_images: int, seed: int) -> Path:
    """The folder of the synthetic default for a dataset layout, size and seed (named with the
    generator version: a folder written by an older generator is left alone, not reused)."""
    from utils.data.synthetic import GENERATOR_VERSION

    layout = SYNTHETIC_LAYOUTS.get(dataset, "HAM10000")
    return paths.synthetic_dir() / f"{layout}-n{n_images}-seed{seed}-v{GENERATOR_VERSION}"


def dataset_folder(data_dir: str | os.PathLike | None, dataset: str = "synthetic",
                   synthetic_images: int = 1000, seed: int = 0) -> Path:
    """`data_dir` resolved; None generates (once, resumably) the synthetic default in the
    layout of `dataset` (HAM10000 unless isic2019) and returns its folder."""
    if data_dir is not None:
        return Path(data_dir).expanduser().resolve()
    from utils.data import synthetic

    generate = (synthetic.generate_isic2019 if dataset == "isic2019"
                else synthetic.generate_ham10000)
    return generate(synthetic_folder(dataset, synthetic_images, seed), n_images=synthetic_images,
                    seed=seed)

"""Write the class-balancing notebooks of Data_Augmentated/ (committed without outputs).

    python scripts/notebooks/augmentation.py      # (re)writes both notebooks

HAM10000_balancing.ipynb and ISIC2019_balancing.ipynb differ only in their parameters cell and
the dataset facts quoted in the title; every step calls utils (augment, balance, augment_plots).
"""
from __future__ import annotations

from pathlib import Path

from utils import notebooks, paths
from utils.datasets import HAM10000, ISIC2019, DatasetInfo

NOTEBOOKS: dict[str, tuple[DatasetInfo, str, str]] = {
    # file name -> (dataset facts, folder name under the data root, synthetic generator)
    "HAM10000_balancing.ipynb": (HAM10000, "HAM10000", "generate_ham10000"),
    "ISIC2019_balancing.ipynb": (ISIC2019, "ISIC_2019", "generate_isic2019"),
}


def title(info: DatasetInfo) -> str:
    counts = " · ".join(f"{c} {n:,}" for c, n in sorted(info.counts.items(), key=lambda x: -x[1]))
    return f"""# {info.title}: class balancing by offline augmentation (training split only)

**Aim.** {info.title} is heavily imbalanced ({counts}). We grow every class of the
**training split** to the same size with augmented copies of its own training images (rotation
with reflected borders, flips, zoom, shifts, brightness/contrast, gamma, hue/saturation, blur,
noise; optional Shades of Gray colour constancy), implemented in `utils/augment.py` with OpenCV
and scikit-image, and run by `utils/balance.py` (`python -m utils balance`).

Unlike the published pipeline (Villa-Pulgarin et al. 2022: Keras `ImageDataGenerator` over each
*whole* class folder **before** splitting, with `save_to_dir` names `N_0_<random below
10,000>.png` that silently overwrote about a third of the copies), validation and test images and
lesions never contribute, and every generated image is kept and traces to its source.

**Data.** {info.title} ({info.licence}); citation: {info.citation}. `DATA_DIR = None` generates
the synthetic stand-in (`utils/synthetic.py`) so the notebook runs anywhere.

**Expected result** (full run: `DATA_DIR` = the real dataset, `TARGET = "max"`, `SMOKE = False`):
every class in the training split has as many images as the largest one; validation and test are
unchanged; the audit finds no validation/test image or lesion among the sources. Images go to
`data/processed/<dataset>-balanced-seed<SEED>/` with `balanced_manifest.csv` (the input of
`utils/train.py` with `augment="offline"` or `"both"`).
"""


def parameters(info: DatasetInfo) -> dict:
    return {
        "DATA_DIR": None,  # None: synthetic dataset; else the dataset folder (read only)
        "DATASET": info.name,
        "TARGET": "max",  # "max", an int, or a {class: int} dict
        "SEED": 0,
        "IMAGE_SIZE": None,  # shorter side in pixels before augmenting (None: keep)
        "COLOUR_CONSTANCY": False,  # Shades of Gray (p=6) before augmenting
        "SMOKE": False,  # True: tiny synthetic run for CI
        "N_SYNTHETIC": 400,  # images of the synthetic dataset when DATA_DIR is None
        "OUT_DIR": None,  # None: data/processed/<dataset>-balanced-seed<SEED>
    }


IMPORTS = """
from utils import augment, augment_plots, balance, paths, readers, splits, synthetic
"""


def steps(info: DatasetInfo, folder: str, generator: str) -> list[tuple[str, str]]:
    return [
        ("## 1. Data and a lesion-grouped split\n`DATA_DIR = None` writes the synthetic dataset "
         "once under `data/synthetic/` (resumable).",
         f"""
n_images = 120 if SMOKE else N_SYNTHETIC
data_dir = DATA_DIR or synthetic.{generator}(
    paths.synthetic_dir() / f"{folder}-n{{n_images}}-seed{{SEED}}", n_images=n_images, seed=SEED)
table = readers.read_table(data_dir)
manifest = splits.lesion_split(table, seed=SEED)
print(paths.display(data_dir), len(table), "images,", table["lesion_id"].nunique(), "lesions")
balance.class_counts(manifest)
"""),
        ("## 2. Every transform on one training image\nEach panel applies one transform of "
         "`utils/augment.py` (always, whatever its probability); the last is one random "
         "composition as used for balancing.",
         """
config = augment.AugmentConfig(image_size=IMAGE_SIZE, colour_constancy=COLOUR_CONSTANCY)
example = manifest.loc[manifest["split"] == "train"].iloc[0]
augment_plots.transform_grid(augment.read_rgb(example["path"]), config, seed=SEED)
"""),
        ("## 3. Balance the training split\nSeeded and resumable: re-running creates nothing; a "
         "killed run continues where it stopped.",
         f"""
result = balance.balance(manifest, OUT_DIR, target=TARGET, seed=SEED, config=config,
                         workers=1 if SMOKE else None, name=f"{{DATASET}}-balanced-seed{{SEED}}")
balanced = balance.read_manifest(result.manifest_path)
print("created", result.created, "already present", result.skipped)
print("manifest:", paths.display(result.manifest_path))
balance.class_counts(balanced)
"""),
        ("## 4. Class counts before and after", """
augment_plots.class_counts_figure(balanced)
"""),
        ("## 5. Augmented images beside their training sources", """
augment_plots.augmented_examples(balanced, n=4, seed=SEED)
"""),
        ("## 6. Audit: nothing from validation or test\nRaises `DataError` if an augmented image "
         "derives from a validation/test image or lesion, or if a file is missing.", """
audit = balance.audit_balanced_manifest(balanced)
audit
"""),
    ]


SUMMARY = """
## Summary

The training split is balanced with augmented copies of training images only; validation and
test are untouched and the audit proves no held-out image or lesion contributed. Train on the
balanced manifest with `python -m utils train --augment offline` (or `both` to add online
augmentation; see `utils.augment.plan_augmentation`). Code: `utils/augment.py` (transforms),
`utils/balance.py` (balancer and audit), `utils/augment_plots.py` (figures).
"""


def build(name: str) -> "notebooks.nbformat.NotebookNode":
    info, folder, generator = NOTEBOOKS[name]
    return notebooks.build_notebook(title(info), parameters(info), IMPORTS,
                                    steps(info, folder, generator), SUMMARY)


def main() -> None:
    out_dir = paths.repo_root() / "Data_Augmentated"
    for name in NOTEBOOKS:
        path = notebooks.write_notebook(out_dir / name, build(name))
        print("wrote", paths.display(path))


if __name__ == "__main__":
    main()

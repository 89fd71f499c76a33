# %% [markdown]
# # Class balancing by offline augmentation (training split only)
#
# **Aim.** Skin-lesion datasets are heavily imbalanced (the first cell prints the official class
# counts). We grow every class of the **training split** to the same size with augmented copies
# of its own training images (rotation with reflected borders, flips, zoom, shifts,
# brightness/contrast, gamma, hue/saturation, blur, noise; optional Shades of Gray colour
# constancy), implemented in `utils/augmentation/transforms.py` with OpenCV and scikit-image,
# and run by `utils/augmentation/balance.py` (`python -m utils balance`).
#
# Unlike the published pipeline (Villa-Pulgarin et al. 2022: Keras `ImageDataGenerator` over
# each *whole* class folder **before** splitting, with `save_to_dir` names
# `N_0_<random below 10,000>.png` that silently overwrote about a third of the copies),
# validation and test images and lesions never contribute, and every generated image is kept and
# traces to its source.
#
# **Data.** The dataset named by `DATASET` in the parameters cell: HAM10000 or ISIC 2019, both
# for non-commercial research use only (the first cell prints the licence and citation from
# `utils/data/datasets.py`). `DATA_DIR = None` generates the synthetic stand-in
# (`utils/data/synthetic.py`) so the notebook runs anywhere; its numbers are not results.
# `Data_Augmentated/HAM10000_balancing.ipynb` and `ISIC2019_balancing.ipynb` are built from
# `notebooks/balancing.py` and differ only in the parameters cell.
#
# **Expected result** (full run: `DATA_DIR` = the real dataset, `TARGET = "max"`,
# `SMOKE = False`): every class in the training split has as many images as the largest one;
# validation and test are unchanged; the audit finds no validation/test image or lesion among
# the sources. Images go to `data/processed/<dataset>-balanced-seed<SEED>/` with
# `balanced_manifest.csv` (the input of `python -m utils train` with `--augment offline` or
# `both`).

# %%
import pandas as pd

from utils import paths
from utils.augmentation import balance, plots, transforms
from utils.data import datasets, location, readers, splits
from utils.data.manifest import load_manifest

# %% tags=["parameters"]
DATASET = "ham10000"  # ham10000 | isic2019
DATA_DIR = None  # None: synthetic dataset; else the dataset folder (read only)
TARGET = "max"  # "max", an int, or a {class: int} dict
SEED = 0  # seeds the split, the synthetic data and every augmentation
IMAGE_SIZE = None  # shorter side in pixels before augmenting (None: keep)
COLOUR_CONSTANCY = False  # Shades of Gray (p=6) before augmenting
SMOKE = False  # True: tiny synthetic run for CI (120 images, one worker)
N_SYNTHETIC = 400  # images of the synthetic dataset when DATA_DIR is None
OUT_DIR = None  # None: data/processed/<dataset>-balanced-seed<SEED>

# %% [markdown]
# ## 0. The dataset
# Official facts (whole dataset, before any split) from `utils/data/datasets.py`.

# %%
info = datasets.get_dataset(DATASET)
print(f"{info.title}: {info.n_images:,} images. Licence: {info.licence}.")
print("Cite:", info.citation)
pd.Series(dict(info.counts)).sort_values(ascending=False).rename("official images").to_frame()

# %% [markdown]
# ## 1. Data and a lesion-grouped split
# `DATA_DIR = None` writes the synthetic dataset once under `data/synthetic/` (resumable).

# %%
n_images = 120 if SMOKE else N_SYNTHETIC
data_dir = location.dataset_folder(DATA_DIR, DATASET, synthetic_images=n_images, seed=SEED)
table = readers.read_table(data_dir)
manifest = splits.lesion_split(table, seed=SEED)
print(paths.display(data_dir), len(table), "images,", table["lesion_id"].nunique(), "lesions")
balance.class_counts(manifest)

# %% [markdown]
# ## 2. Every transform on one training image
# Each panel applies one transform of `utils/augmentation/transforms.py` (always, whatever its
# probability); the last is one random composition as used for balancing.

# %%
config = transforms.AugmentConfig(image_size=IMAGE_SIZE, colour_constancy=COLOUR_CONSTANCY)
example = manifest.loc[manifest["split"] == "train"].iloc[0]
plots.transform_grid(transforms.read_rgb(example["path"]), config, seed=SEED)

# %% [markdown]
# ## 3. Balance the training split
# Seeded and resumable: re-running creates nothing; a killed run continues where it stopped.

# %%
result = balance.balance(manifest, OUT_DIR, target=TARGET, seed=SEED, config=config,
                         workers=1 if SMOKE else None, name=f"{DATASET}-balanced-seed{SEED}")
balanced = load_manifest(result.manifest_path)
print("created", result.created, "already present", result.skipped)
print("manifest:", paths.display(result.manifest_path))
balance.class_counts(balanced)

# %% [markdown]
# ## 4. Class counts before and after

# %%
plots.class_counts_figure(balanced)

# %% [markdown]
# ## 5. Augmented images beside their training sources

# %%
plots.augmented_examples(balanced, n=4, seed=SEED)

# %% [markdown]
# ## 6. Audit: nothing from validation or test
# Raises `DataError` if an augmented image derives from a validation/test image or lesion, or if
# a file is missing.

# %%
balance.audit_balanced_manifest(balanced)

# %% [markdown]
# ## Summary
#
# The training split is balanced with augmented copies of training images only; validation and
# test are untouched and the audit proves no held-out image or lesion contributed. Train on the
# balanced manifest with `python -m utils train --augment offline` (or `both` to add online
# augmentation; see `utils/augmentation/modes.py`). Code: `utils/augmentation/transforms.py`
# (transforms), `utils/augmentation/balance.py` (balancer and audit),
# `utils/augmentation/plots.py` (figures).

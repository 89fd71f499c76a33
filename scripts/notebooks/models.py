"""Write the per-backbone training notebooks of Models/ (committed without outputs).

    python scripts/notebooks/models.py      # (re)writes Models/<Backbone>.ipynb

The notebooks are identical except for their parameters cell (tests/test_notebooks_models.py
checks it); every step calls utils (config, train, splits, plots, metrics).
"""
from __future__ import annotations

from pathlib import Path

from utils import notebooks, paths
from utils.backbones import get_backbone

# Backbones with a notebook (the paper's four first; the others are cheap to add).
BACKBONES: tuple[str, ...] = ("VGG16", "ResNet50", "InceptionV3", "DenseNet201", "DenseNet121",
                              "InceptionResNetV2", "EfficientNetB0", "MobileNetV2")

TITLE = """
# Skin-lesion classification with one pre-trained backbone (two-stage fine-tuning)

**Aim.** Train one ImageNet backbone (named in the parameters cell; every notebook in `Models/`
is identical except that cell) on HAM10000 with a **lesion-grouped** train/validation/test split:
stage 1 trains the new softmax head on the frozen backbone, stage 2 fine-tunes from the
registry's block boundary at a lower learning rate with BatchNorm kept in inference mode. The
code lives in `utils/train.py` (open it for the details), the settings in `utils/config.py`,
the backbone facts in `utils/backbones.py`.

**Data.** HAM10000 (Tschandl et al., Sci. Data 5, 180161, 2018; CC BY-NC-SA 4.0, non-commercial
research use), or ISIC 2019 (CC BY-NC 4.0) with `DATASET = "isic2019"`. `DATA_DIR = None` uses
the generated synthetic stand-in (`utils/synthetic.py`), so the notebook runs anywhere.

**Expected result** (full run: `DATA_DIR` = the real dataset, `WEIGHTS = "imagenet"`, the
default epochs, a GPU): a run folder `runs/<time>-<dataset>-<backbone>-<size>/` with the
resolved config, split manifest, history, best model and validation/test predictions; the test
metrics below with bootstrap 95 % intervals (`python -m utils compare` tabulates all runs). We
quote no number here: results come from run folders, never typed by hand. `SMOKE = True` (CI)
trains a tiny network from scratch for one epoch: it checks the code path, not a result.
"""


def parameters(backbone: str) -> dict:
    spec = get_backbone(backbone)
    return {
        "BACKBONE": spec.name,  # a name from utils.backbones.list_backbones()
        "IMAGE_SIZE": spec.default_size,  # input side in pixels (None: the registry default)
        "WEIGHTS": "imagenet",  # "imagenet", a weights file path, or None (from scratch)
        "DATASET": "ham10000",  # ham10000 | isic2019
        "DATA_DIR": None,  # None: synthetic stand-in; else the dataset folder (read only)
        "STAGE1_EPOCHS": 5,  # head only, backbone frozen
        "STAGE2_EPOCHS": 25,  # fine-tuning from the registry's boundary layer
        "EPOCHS": 30,  # single-stage epochs when WEIGHTS is None
        "BATCH_SIZE": 32,
        "AUGMENT": "online",  # none | online | offline | both
        "SEED": 0,
        "SMOKE": False,  # True: tiny synthetic run from scratch (CI)
        "RUNS_DIR": None,  # None: runs/ of the repository; else where run folders go
    }


IMPORTS = """
from utils import metrics, paths, plots, splits, train
from utils.config import preset, smoke_config
"""

STEPS: list[tuple[str, str]] = [
    ("## 1. Configuration\nThe dataset preset plus this notebook's parameters, resolved against "
     "the backbone registry (image size, BatchNorm momentum, mixed precision/XLA only on GPU).",
     """
overrides = dict(data_dir=DATA_DIR, image_size=IMAGE_SIZE, seed=SEED)
if SMOKE:
    config = smoke_config(BACKBONE, **overrides)
else:
    config = preset(DATASET, backbone=BACKBONE, weights=WEIGHTS, epochs=EPOCHS,
                    stage1_epochs=STAGE1_EPOCHS, stage2_epochs=STAGE2_EPOCHS,
                    batch_size=BATCH_SIZE, augment=AUGMENT, **overrides)
config = config.resolve()
config.to_dict()
"""),
    ("## 2. Data\nThe table every reader returns (one row per image, `lesion_id` groups the "
     "images of one lesion).",
     """
table = train.load_table(config)
print(paths.display(train.data_dir(config)), len(table), "images,",
      table["lesion_id"].nunique(), "lesions")
table["label"].value_counts().rename("images").to_frame()
"""),
    ("## 3. Lesion-grouped split\nAll images of a lesion fall in one split, so no lesion is seen "
     "in training and tested on (the leak of image-level splits).",
     """
manifest = train.build_manifest(config)
print("lesions in more than one split:",
      int((manifest.groupby("lesion_id")["split"].nunique() > 1).sum()))
splits.summarise(manifest)
"""),
    ("## 4. Train\nBest epoch by validation balanced accuracy; a killed run resumes with "
     "`python -m utils train --resume <run folder>`.",
     """
run_dir = train.train(config, manifest=manifest, runs_root=RUNS_DIR)
"""),
    ("## 5. Training curves", """
plots.training_curves(run_dir / "history.csv")
"""),
    ("## 6. Test metrics\nBalanced accuracy, macro AUC, melanoma sensitivity… with lesion-level "
     "bootstrap 95 % intervals (`utils/metrics.py`).",
     """
predictions = metrics.read_predictions(run_dir / "predictions_test.csv")
result = metrics.evaluate_predictions(predictions, n_boot=200 if SMOKE else 1000, seed=SEED)
table_of_metrics = metrics.metrics_table(result)
table_of_metrics[table_of_metrics["class"] == ""]
"""),
    ("## 7. Where the run is", """
print("run folder:", paths.display(run_dir))
sorted(path.name for path in run_dir.iterdir())
"""),
]

SUMMARY = """
## Summary
The run folder holds everything needed to evaluate or compare this model later: `config.json`
(resolved settings), `manifest.csv` (the split used), `history.csv`, `model.keras` (loads with
`utils.models.load_model`, safe mode), `predictions_val.csv` / `predictions_test.csv` and
`run_info.json` (time, device, versions). `python -m utils evaluate <run folder>` writes the full
metrics and plots; `python -m utils compare` puts every run in one table.
"""


def notebook_path(backbone: str) -> Path:
    return paths.repo_root() / "Models" / f"{get_backbone(backbone).name}.ipynb"


def main() -> None:
    for backbone in BACKBONES:
        notebook = notebooks.build_notebook(TITLE, parameters(backbone), IMPORTS, STEPS, SUMMARY)
        written = notebooks.write_notebook(notebook_path(backbone), notebook)
        print(paths.display(written))


if __name__ == "__main__":
    main()

# %% [markdown]
# # Skin-lesion classification with one pre-trained backbone (two-stage fine-tuning)
#
# **Aim.** Train one ImageNet backbone (named in the parameters cell; every notebook in `Models/`
# is built from `notebooks/models.py` and differs only in that cell) on HAM10000 with a
# **lesion-grouped** train/validation/test split: stage 1 trains the new softmax head on the
# frozen backbone, stage 2 fine-tunes from the registry's block boundary at a lower learning rate
# with BatchNorm kept in inference mode. The code lives in `utils/training/` (open it for the
# details): settings in `config.py`, backbone facts in `backbones.py`, the training loop in
# `train.py`.
#
# **Data.** HAM10000 (Tschandl et al., Sci. Data 5, 180161, 2018; CC BY-NC-SA 4.0,
# non-commercial research use), or ISIC 2019 (CC BY-NC 4.0) with `DATASET = "isic2019"`.
# `DATA_DIR = None` uses the generated synthetic stand-in (`utils/data/synthetic.py`), so the
# notebook runs anywhere; its numbers are not results.
#
# **Expected result** (full run: `DATA_DIR` = the real dataset, `WEIGHTS = "imagenet"`, the
# default epochs, a GPU): a run folder `runs/<time>-<dataset>-<backbone>-<size>/` with the
# resolved config, split manifest, history, best model and validation/test predictions; the test
# metrics below with bootstrap 95 % intervals (`python -m utils compare` tabulates all runs). We
# quote no number here: results come from run folders, never typed by hand.
#
# **Smoke mode.** `SMOKE = True` checks the code path in about a minute on a CPU: it ignores the
# data, size, weights and epoch parameters and trains the backbone from scratch for one epoch at
# its minimum input size on 200 synthetic images, all in a new temporary folder (nothing is
# written into the repository). Its numbers are not results.

# %%
import tempfile
from pathlib import Path

import pandas as pd

from utils import paths
from utils.data import splits, synthetic
from utils.evaluation import gradcam, plots
from utils.scoring import metrics, predictions
from utils.tables import format_ci
from utils.training import models, runs, train
from utils.training.config import preset, smoke_config
from utils.training.data import build_manifest, data_dir, load_table

pd.set_option("display.precision", 3)  # every number below is shown to 3 decimals

# %% tags=["parameters"]
BACKBONE = "MobileNetV2"  # a name from utils.training.backbones.list_backbones()
IMAGE_SIZE = 224  # input side in pixels (None: the registry default)
WEIGHTS = "imagenet"  # "imagenet", a weights file path, or None (from scratch)
DATASET = "ham10000"  # ham10000 | isic2019
DATA_DIR = None  # None: synthetic stand-in; else the dataset folder (read only)
STAGE1_EPOCHS = 5  # head only, backbone frozen (pre-trained weights)
STAGE2_EPOCHS = 25  # fine-tuning from the registry's boundary layer (pre-trained weights)
EPOCHS = 30  # single-stage epochs when WEIGHTS is None
BATCH_SIZE = 32  # global batch size
AUGMENT = "online"  # none | online | offline | both
SEED = 0  # seeds the split, the synthetic data, tf.data and the weights
SMOKE = False  # True: 1-minute code-path check (see above), not a result
RUNS_DIR = None  # None: runs/ (SMOKE: the temporary folder); else where run folders go

# %% [markdown]
# ## 1. Configuration
# The dataset preset plus this notebook's parameters, resolved against the backbone registry
# (image size, BatchNorm momentum, mixed precision/XLA only on GPU). The printed settings are the
# ones the run uses (and writes to `config.json`).

# %%
if SMOKE:  # a code-path check, not a result: tiny synthetic data, minimum size, 1 epoch
    smoke_dir = Path(tempfile.mkdtemp(prefix="smoke-"))
    smoke_data = synthetic.generate_ham10000(smoke_dir / "HAM10000", n_images=200, seed=SEED,
                                             progress=False)
    config = smoke_config(BACKBONE, data_dir=str(smoke_data), seed=SEED)
    runs_root = RUNS_DIR or smoke_dir / "runs"
else:
    config = preset(DATASET, backbone=BACKBONE, image_size=IMAGE_SIZE, weights=WEIGHTS,
                    data_dir=DATA_DIR, epochs=EPOCHS, stage1_epochs=STAGE1_EPOCHS,
                    stage2_epochs=STAGE2_EPOCHS, batch_size=BATCH_SIZE, augment=AUGMENT,
                    seed=SEED)
    runs_root = RUNS_DIR
config = config.resolve()
config.to_dict()

# %% [markdown]
# ## 2. Data
# The table every reader returns (one row per image, `lesion_id` groups the images of one
# lesion).

# %%
table = load_table(config)
print(paths.display(data_dir(config)), len(table), "images,",
      table["lesion_id"].nunique(), "lesions")
table["label"].value_counts().rename("images").to_frame()

# %% [markdown]
# ## 3. Lesion-grouped split
# All images of a lesion fall in one split, so no lesion is seen in training and tested on (the
# leak of image-level splits).

# %%
manifest = build_manifest(config)
print("lesions in more than one split:",
      int((manifest.groupby("lesion_id")["split"].nunique() > 1).sum()))
splits.summarise(manifest)

# %% [markdown]
# ## 4. Train
# Best epoch by validation balanced accuracy; a killed run resumes with
# `python -m utils train --resume <run folder>`.

# %%
run_dir = train.train(config, manifest=manifest, runs_root=runs_root)

# %% [markdown]
# ## 5. Training curves
# Loss, accuracy and balanced accuracy per epoch on the training and validation splits
# (`history.csv`). The same curves, and more, are in TensorBoard: its logs are in the run
# folder's `logs/`; `tensorboard --logdir runs/` shows every run side by side.

# %%
print("TensorBoard logs:", paths.display(run_dir / runs.LOGS_DIR),
      "-> tensorboard --logdir", paths.display(run_dir.parent))
plots.training_curves(run_dir / runs.HISTORY)

# %% [markdown]
# ## 6. Test metrics
# Balanced accuracy (the ISIC ranking metric), accuracy, macro-F1, macro AUC and melanoma
# sensitivity, each with a lesion-level bootstrap 95 % interval (`utils/scoring/metrics.py`).
# The test split chose nothing: the epoch was picked on validation.

# %%
test_predictions = predictions.read_predictions(run_dir / runs.predictions_name("test"))
result = metrics.evaluate_predictions(test_predictions, n_boot=200 if SMOKE else 1000, seed=SEED)
table_of_metrics = metrics.metrics_table(result)
table_of_metrics["value [95 % CI]"] = [format_ci(row) for row in
                                       table_of_metrics.to_dict("records")]
print(result["n_images"], "test images;", result["n_groups"], "lesions resampled;",
      result["bootstrap"]["n_boot"], "bootstrap replicates")
table_of_metrics.loc[table_of_metrics["class"] == "", ["metric", "value [95 % CI]"]]

# %% [markdown]
# ## 7. Per-class results
# Precision, recall (sensitivity), specificity and F1 of each class on the test split, each with
# its 95 % interval; `support` is the number of test images of the class. A rare class has few
# test images, so its interval is wide.

# %%
per_class = table_of_metrics[table_of_metrics["class"] != ""].pivot(
    index="class", columns="metric", values="value [95 % CI]")
per_class = per_class.rename(columns={"sensitivity": "recall"})
support = test_predictions["label"].value_counts()
per_class = per_class.reindex(result["classes"])[["precision", "recall", "specificity", "f1"]]
per_class.assign(support=support.reindex(result["classes"], fill_value=0))

# %% [markdown]
# ## 8. Confusion matrix
# Test images per true class (rows) and predicted class (columns): where the model confuses
# look-alike classes.

# %%
y_true, probs, _ = predictions.arrays_from_predictions(test_predictions)
plots.confusion_matrix(probs, y_true, result["classes"])

# %% [markdown]
# ## 9. Grad-CAM
# Where the model looks: one test image per class, the heatmap of the predicted class's score
# over the backbone's last convolutional layer (`utils/evaluation/gradcam.py`); the white outline
# is the lesion mask where the dataset has one. At small input sizes the last layer's grid is only
# a few cells wide, so the maps are coarse.

# %%
model = models.load_model(run_dir / runs.MODEL, compile=False)  # for Grad-CAM only
manifest = pd.read_csv(run_dir / runs.MANIFEST)
test_rows = manifest[(manifest["split"] == "test")
                     & ~manifest.get("augmented", pd.Series(False, index=manifest.index))
                     .fillna(False).astype(bool)]
gradcam.overlay_figure(model, test_rows, result["classes"], config.image_size,
                       config.resize_policy, mask_root=data_dir(config))

# %% [markdown]
# ## 10. Where the run is

# %%
print("run folder:", paths.display(run_dir))
sorted(path.name for path in run_dir.iterdir())

# %% [markdown]
# ## Summary
# The run folder holds everything needed to evaluate or compare this model later: `config.json`
# (resolved settings), `manifest.csv` (the split used), `history.csv`, `logs/` (TensorBoard:
# `tensorboard --logdir runs/`), `model.keras` (loads with `utils.training.models.load_model`,
# safe mode), `predictions_val.csv` / `predictions_test.csv` and `run_info.json` (time, device,
# versions). `python -m utils evaluate <run folder>` writes the full metrics and plots;
# `python -m utils compare` puts every run in one table.

# %% [markdown]
# # Comparing trained models: one table over all runs
#
# **Aim.** Put every finished training run side by side on its held-out, lesion-grouped test
# split: test balanced accuracy (the ISIC ranking metric: mean per-class recall) with a 95 %
# bootstrap confidence interval that resamples *lesions*, macro-F1, macro one-vs-rest ROC AUC,
# the melanoma rule fixed on validation at 80 % specificity (its test sensitivity and test
# specificity), and training time. The table comes from
# `utils/evaluation/compare.py` (`python -m utils compare`), never typed by hand; metrics are
# defined in `utils/scoring/metrics.py`; balanced accuracy and AUC match the official
# `isic-challenge-scoring` package.
#
# **Data.** The predictions each run wrote (`runs/<run>/predictions_test.csv`). Runs trained on
# HAM10000 (CC BY-NC-SA 4.0, Tschandl et al., Sci. Data 5:180161, 2018) or ISIC 2019
# (CC BY-NC) carry those licences. `SMOKE = True` trains tiny runs on the synthetic stand-in
# (`utils/data/synthetic.py`) so the notebook runs anywhere: their numbers check the code path,
# they are not results.
#
# **Expected result** (full runs, `SMOKE = False`, `RUNS_DIR = None` = `runs/`): one row per
# run; runs whose confidence intervals overlap are not distinguishable on this test set.
# Training runs from ImageNet weights rank well above runs from scratch on CPU budgets.

# %%
from IPython.display import display

from utils import paths
from utils.evaluation import compare, plots
from utils.scoring import predictions
from utils.training import config, runs, train

# %% tags=["parameters"]
RUNS_DIR = None  # None: runs/ (SMOKE: runs/smoke/); else a run-folder root (relative: to the repo)
DATA_DIR = None  # SMOKE only: dataset folder; None generates the synthetic default
SMOKE = True  # True: train the tiny SMOKE_RUNS first (code-path check, not a result)
SMOKE_RUNS = [["mobilenetv2", 32], ["mobilenetv2", 48]]  # [backbone, image size] pairs
N_BOOT = 1000  # bootstrap replicates for runs without metrics.json
OUT = None  # table path without extension; None: reports/comparison (SMOKE: in RUNS_DIR)

# %% [markdown]
# ## 1. Runs
# In smoke mode, each `[backbone, size]` of `SMOKE_RUNS` is trained for one epoch from scratch on
# synthetic images (`utils/training/train.py`, resumable; finished runs are kept).

# %%
if RUNS_DIR:
    runs_dir = paths.repo_root() / RUNS_DIR
else:
    runs_dir = paths.runs_dir() / ("smoke" if SMOKE else "")
for backbone, size in (SMOKE_RUNS if SMOKE else []):
    run_dir = runs_dir / f"smoke-{backbone}-{size}"
    if not (run_dir / "predictions_test.csv").is_file():
        train.train(config.smoke_config(backbone, image_size=size, data_dir=DATA_DIR, verbose=0),
                    run_dir=run_dir)
finished = [r for r in runs.list_runs(runs_dir) if (r / "predictions_test.csv").is_file()]
print(len(finished), "finished run(s) under", paths.display(runs_dir))

# %% [markdown]
# ## 2. The comparison table
# Best test balanced accuracy first; `[low, high]` is the 95 % lesion-bootstrap interval. Written
# as CSV and markdown (the README's results table).

# %%
table = compare.comparison_table(runs_dir, n_boot=N_BOOT)
if table.empty:
    print("No runs yet: train one with `python -m utils train` (or set SMOKE = True).")
else:
    out = OUT or (runs_dir / "comparison" if SMOKE else paths.reports_dir() / "comparison")
    written = compare.write_comparison(table, out)
    print("wrote", *[paths.display(p) for p in written])
display(table)

# %% [markdown]
# ## 3. Balanced accuracy with confidence intervals

# %%
plots.comparison_chart(table) if not table.empty else print("No runs to plot.")

# %% [markdown]
# ## 4. The best run: training curves, confusion matrix, calibration
# Row-normalised confusion matrix (recall per class on the diagonal) and reliability diagram
# (ECE, 15 bins).

# %%
best = runs_dir / table["run"].iloc[0] if not table.empty else None
if best is not None:
    frame = predictions.read_predictions(best / "predictions_test.csv")
    y_true, probs, _ = predictions.arrays_from_predictions(frame)
    classes = predictions.class_columns(frame)
    display(plots.training_curves(best / "history.csv"))
    display(plots.confusion_matrix(probs, y_true, classes, normalise=True))
    display(plots.reliability_diagram({best.name: (probs, y_true)}))

# %% [markdown]
# ## Summary
#
# The table ranks the runs on the same kind of held-out, lesion-grouped test split; read the
# confidence intervals before the ranking. Reproduce it from the command line with
# `python -m utils compare` (add `python -m utils evaluate runs/<run> --tta --calibrate` for
# test-time augmentation and temperature scaling per run). Code: `utils/evaluation/compare.py`
# (table), `utils/scoring/metrics.py` (metrics and bootstrap), `utils/evaluation/plots.py`
# (figures).

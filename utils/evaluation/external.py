"""External test sets: a HAM10000-trained run predicted and evaluated on images from elsewhere.

    python -m utils external runs/<run> data/raw/ISIC2018_Task3_Test   # official HAM10000 test
    python -m utils external runs/<run> data/raw/ISIC_2019             # ISIC 2019 minus HAM10000

The layout is detected from the folder (utils.data.readers):
- ISIC 2018 Task 3 test (or validation): the official held-out test of HAM10000-trained models,
  classes one to one (MEL -> mel, ..., AKIEC -> akiec; utils.data.datasets
  .ISIC2018_TASK3_TO_HAM). Also writes the submission CSV (`image,MEL,NV,BCC,AKIEC,BKL,DF,VASC`,
  every image) and the numbers of the official `isic-challenge-scoring` package on it
  (official_scores.json); our metrics leave out ISIC_0035068, as that scorer does.
- ISIC 2019 training: the images that come from HAM10000 are EXCLUDED (they may be in the run's
  own training split): an image is from HAM10000 when its ISIC 2019 lesion_id starts with HAM_
  or its id lies in HAM10000's range ISIC_0024306-ISIC_0034320 (utils.data.datasets
  .is_ham10000_image). Labels map to HAM10000 codes by datasets.ISIC2019_TO_HAM: AK and SCC ->
  akiec, MEL -> mel, NV -> nv, BCC -> bcc, BKL -> bkl, DF -> df, VASC -> vasc.

Outputs go to <run>/external/<test set>/ in the run folder's own format (predictions_test.csv,
metrics.json, metrics.csv, plots/), so `python -m utils evaluate` reads them too, and the model
card lists every external set found there. The melanoma operating point is fixed on the run's
own validation predictions; a set with fewer than subgroups.MIN_SUBGROUP_IMAGES images is
reported as too small.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import pandas as pd

from utils import fileio, paths
from utils.data import datasets
from utils.errors import DataError
from utils.scoring import metrics, predictions
from utils.training import runs

ISIC2018_NAME = "isic2018_task3_{subset}"
ISIC2019_NAME = "isic2019_without_ham10000"
EXCLUDED_NAME = "excluded_images.csv"  # ISIC 2019: the HAM10000 images left out, and why


def isic2019_mapping() -> dict[str, str]:
    """ISIC 2019 code -> HAM10000 code (AK and SCC -> akiec)."""
    return dict(datasets.ISIC2019_TO_HAM)


def to_ham_codes(table: pd.DataFrame) -> pd.DataFrame:
    """An ISIC 2019 TABLE relabelled with HAM10000 codes and indices (original code kept in
    `isic2019_label`)."""
    out = table.copy()
    out["isic2019_label"] = out["label"]
    out["label"] = out["label"].map(isic2019_mapping())
    out["label_index"] = out["label"].map(datasets.HAM10000.index_of).astype("int64")
    return out


def split_ham_origin(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows not from HAM10000, rows from HAM10000 with the reason) of an ISIC 2019 TABLE."""
    by_lesion = table["lesion_id"].astype(str).str.startswith(datasets.HAM_LESION_PREFIX)
    from_ham = pd.Series([datasets.is_ham10000_image(i, lesion) for i, lesion in
                          zip(table["image_id"], table["lesion_id"])], index=table.index,
                         dtype=bool)
    excluded = table[from_ham][["image_id", "lesion_id", "label"]].copy()
    excluded["reason"] = ["HAM10000 lesion id" if hit else "image id in HAM10000's range"
                          for hit in by_lesion[from_ham]]
    return table[~from_ham].reset_index(drop=True), excluded.reset_index(drop=True)


def external_table(data_dir: str | os.PathLike,
                   dataset: str | None = None) -> tuple[pd.DataFrame, str, dict[str, Any]]:
    """(TABLE with HAM10000 codes, test-set name, what was done to it) of an external folder."""
    from utils.data import readers

    key = readers.dataset_key(dataset) if dataset else readers.detect_layout(data_dir)
    if key.startswith("isic2018_task3"):
        subset = key.rsplit("_", 1)[1]
        table = readers.read_isic2018_test(data_dir, subset)
        info = {"dataset": datasets.ISIC2018_TASK3.title + ("" if subset == "test" else
                                                            " (validation)"),
                "mapping": dict(datasets.ISIC2018_TASK3_TO_HAM),
                "scoring_excluded": list(datasets.ISIC2018_TASK3_EXCLUDED),
                "ground_truth": table.attrs.get("source")}
        return table, ISIC2018_NAME.format(subset=subset), info
    if key == "isic2019":
        table, excluded = split_ham_origin(readers.read_isic2019(data_dir))
        if table.empty:
            raise DataError(f"{data_dir}: every ISIC 2019 image there comes from HAM10000; "
                            "nothing is left to test on")
        info = {"dataset": "ISIC 2019 training images not from HAM10000",
                "mapping": isic2019_mapping(), "n_excluded_ham10000": int(len(excluded)),
                "exclusion_rule": "lesion_id starting with HAM_, or image id within "
                                  "ISIC_0024306-ISIC_0034320 (HAM10000)",
                "_excluded": excluded}
        return to_ham_codes(table), ISIC2019_NAME, info
    raise DataError(f"{data_dir}: a {key} layout; external test sets are the ISIC 2018 Task 3 "
                    "test/validation and ISIC 2019 training layouts")


def check_ham_model(run_dir: Path) -> tuple[str, ...]:
    """The run's class codes; DataError unless they are HAM10000's."""
    from utils.training.data import dataset_info

    classes = dataset_info(runs.load_run(run_dir).config).classes
    if tuple(classes) != datasets.HAM10000.classes:
        raise DataError(f"{paths.display(run_dir)} predicts {', '.join(classes)}; the external "
                        "test sets are scored in HAM10000's classes (train on HAM10000)")
    return tuple(classes)


def predict_table(run_dir: Path, table: pd.DataFrame, tta: bool = False) -> pd.DataFrame:
    """The PREDICTIONS frame of the run's model on the table's images (split "test")."""
    from utils.evaluation import predict
    from utils.evaluation import tta as tta_module
    from utils.training import models

    classes = check_ham_model(run_dir)
    run = runs.load_run(run_dir)
    model = models.load_model(run.model_path, compile=False)
    probs = predict.predict_files(model, list(table["path"]), run.config.image_size,
                                  run.config.batch_size, run.config.resize_policy,
                                  tuple(tta_module.DIHEDRAL_VIEWS) if tta else None)
    return predictions.predictions_frame(table.assign(split="test"), probs, classes)


def evaluate_external(run_dir: str | os.PathLike, data_dir: str | os.PathLike,
                      dataset: str | None = None, n_boot: int = metrics.DEFAULT_N_BOOT,
                      seed: int = 0, specificity: float = metrics.DEFAULT_SPECIFICITY,
                      tta: bool = False, plots: bool = True) -> dict[str, Any]:
    """Predict and evaluate one external test set; writes <run>/external/<name>/ and returns
    the metrics (with the written folder under "folder")."""
    from utils.evaluation import submission

    run_dir = Path(run_dir)
    if not (run_dir / runs.MODEL).is_file():
        raise DataError(f"{paths.display(run_dir)}: no {runs.MODEL}; pass a finished run folder")
    table, name, info = external_table(data_dir, dataset)
    excluded = info.pop("_excluded", None)
    out = run_dir / runs.EXTERNAL_DIR / name
    frame = predict_table(run_dir, table, tta)
    fileio.write_csv(out / runs.predictions_name("test"), frame)
    val_csv = run_dir / runs.predictions_name("val")
    val_frame = predictions.read_predictions(val_csv) if val_csv.is_file() else None
    result = metrics.evaluate_predictions(frame, n_boot=n_boot, seed=seed,
                                          specificity=specificity,
                                          exclude=info.get("scoring_excluded", ()),
                                          val_frame=val_frame)
    result.update(split="test", predictions=runs.predictions_name("test"), external=name,
                  data_dir=str(data_dir), tta=bool(tta), **info)
    if excluded is not None:
        fileio.write_csv(out / EXCLUDED_NAME, excluded)
    if name.startswith("isic2018"):
        sub = fileio.write_csv(out / submission.SUBMISSION_NAME, submission.submission_frame(frame))
        result["official"] = submission.official_scores(info["ground_truth"], sub)
        fileio.write_json(out / submission.OFFICIAL_NAME, result["official"])
    json_name, csv_name = runs.metrics_names("test")
    fileio.write_json(out / json_name, result)
    fileio.write_csv(out / csv_name, metrics.metrics_table(result))
    if plots:
        from utils.evaluation import plots as plot_module

        plot_module.evaluation_plots(frame[~frame["image_id"].isin(
            info.get("scoring_excluded", ()))], out / runs.PLOTS_DIR, "test_")
    return {**result, "folder": paths.display(out)}


def external_results(run_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """{test-set name: its metrics.json} for every external set evaluated in a run folder."""
    import json

    root = Path(run_dir) / runs.EXTERNAL_DIR
    found = {}
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        path = folder / runs.metrics_names("test")[0]
        if path.is_file():
            found[folder.name] = json.loads(path.read_text(encoding="utf-8"))
    return found


# --------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    from utils.arguments import non_negative_int, probability

    parser.add_argument("run_dir", help="a finished run folder trained on HAM10000")
    parser.add_argument("data_dir", help="an ISIC 2018 Task 3 test or ISIC 2019 training folder")
    parser.add_argument("--dataset", default=None,
                        help="layout, when the folder holds several (isic2018, "
                             "isic2018_task3_validation, isic2019)")
    parser.add_argument("--n-boot", type=non_negative_int, default=metrics.DEFAULT_N_BOOT)
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--specificity", type=probability, default=metrics.DEFAULT_SPECIFICITY,
                        help="validation specificity fixing the melanoma operating point")
    parser.add_argument("--tta", action="store_true", help="average the 8 dihedral views")
    parser.add_argument("--no-plots", action="store_true")


def run(args: argparse.Namespace) -> int:
    from utils.tables import format_ci

    result = evaluate_external(args.run_dir, args.data_dir, args.dataset, args.n_boot, args.seed,
                               args.specificity, args.tta, plots=not args.no_plots)
    values = result["metrics"]
    print(f"{result['dataset']}: {result['n_images']} images; balanced accuracy "
          f"{format_ci(values['balanced_accuracy'])}, macro AUC {format_ci(values['macro_auc'])}")
    if "official" in result:
        print(f"official isic-challenge-scoring: balanced accuracy "
              f"{result['official']['balanced_accuracy']:.4f}, macro AUC "
              f"{result['official']['macro_auc']:.4f}")
    print(f"wrote {result['folder']}")
    return 0

"""`python -m utils evaluate <run folder or predictions CSV>`: metrics with bootstrap confidence
intervals, plots, and optionally test-time augmentation and temperature scaling.

Writes into the run folder (the CSV's folder when given a CSV), atomically:
- metrics.json (test split; metrics_<split>.json otherwise): point estimates with 95 % CIs,
  confusion matrix, bootstrap settings; extra sections "tta" and "calibration" when asked;
- metrics.csv (metrics_<split>.csv): one row per metric and variant (plain / tta / calibrated);
- plots/: confusion matrices, per-class report, ROC curves, reliability diagram, training curves.

--tta re-predicts the split from model.keras over the 8 dihedral views (needs the run folder's
model, config and manifest) and writes predictions_<split>_tta.csv. --calibrate fits a
temperature on predictions_val.csv and applies it to the plain predictions of the split
(predictions_<split>_calibrated.csv); the ECE before and after goes into metrics.json.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from utils import fileio, paths
from utils.arguments import non_negative_int, probability
from utils.errors import DataError
from utils.evaluation import calibration
from utils.scoring import metrics, predictions
from utils.scoring.predictions import predictions_frame
from utils.training import runs

SPLITS = ("test", "val")
HEADLINE = ("balanced_accuracy", "macro_f1", "macro_auc", "melanoma_sensitivity_at_specificity")


def locate(target: str | os.PathLike, split: str = "test") -> tuple[Path, Path]:
    """(predictions CSV, output folder) of a run folder or of a predictions CSV."""
    target = Path(target)
    if target.is_dir():
        csv = target / runs.predictions_name(split)
        if not csv.is_file():
            raise DataError(f"{paths.display(target)}: no {csv.name}; "
                            "is training finished?")
        return csv, target
    if target.is_file():
        return target, target.parent
    raise DataError(f"{target}: neither a run folder nor a predictions CSV")


def tta_predictions(run_dir: Path, split: str, classes: Sequence[str],
                    views: Sequence[str]) -> pd.DataFrame:
    """Re-predict one split of a run with test-time augmentation (training's preprocessing)."""
    from utils.evaluation import tta
    from utils.training import models, pipeline

    for name in (runs.MODEL, runs.CONFIG, runs.MANIFEST):
        if not (run_dir / name).is_file():
            raise DataError(f"{paths.display(run_dir)}: --tta needs {name} of the run folder")
    run = runs.load_run(run_dir)
    manifest = run.manifest
    rows = manifest[manifest["split"] == split].reset_index(drop=True)
    model = models.load_model(run.model_path, compile=False)
    data = pipeline.make_dataset(rows, run.config.image_size, run.config.batch_size, training=False,
                                 num_classes=len(classes), resize_policy=run.config.resize_policy)
    return predictions_frame(rows, tta.predict_tta(model, data, views), classes)


def _section(frame: pd.DataFrame, n_boot: int, seed: int, specificity: float) -> dict[str, Any]:
    return metrics.evaluate_predictions(frame, n_boot=n_boot, seed=seed, specificity=specificity)


def evaluate(target: str | os.PathLike, split: str = "test", n_boot: int = metrics.DEFAULT_N_BOOT,
             seed: int = 0, specificity: float = metrics.DEFAULT_SPECIFICITY, tta: bool = False,
             calibrate: bool = False, plots: bool = True) -> dict[str, Any]:
    """Evaluate a run folder's (or a CSV's) predictions; writes metrics and plots; returns them."""
    from utils.evaluation import tta as tta_module

    csv, out_dir = locate(target, split)
    frame = predictions.read_predictions(csv)
    if len(frame) == 0:
        raise DataError(f"{paths.display(csv)} has no rows; the {split} split is empty")
    classes = predictions.class_columns(frame)
    result: dict[str, Any] = {"split": split, "predictions": csv.name,
                              **_section(frame, n_boot, seed, specificity)}
    variants = {"plain": frame}
    if tta:
        views = tuple(tta_module.DIHEDRAL_VIEWS)
        tta_frame = tta_predictions(out_dir, split, classes, views)
        fileio.write_csv(out_dir / runs.predictions_name(split, "tta"), tta_frame)
        result["tta"] = {"views": list(views), **_section(tta_frame, n_boot, seed, specificity)}
        variants["tta"] = tta_frame
    if calibrate:
        val_csv = out_dir / runs.predictions_name("val")
        val_frame = predictions.read_predictions(val_csv)
        calibrated, summary = calibration.calibrate_predictions(val_frame, frame)
        fileio.write_csv(out_dir / runs.predictions_name(split, "calibrated"), calibrated)
        result["calibration"] = {**summary, **_section(calibrated, n_boot, seed, specificity)}
        variants["calibrated"] = calibrated
    json_name, csv_name = runs.metrics_names(split)
    fileio.write_json(out_dir / json_name, result)
    tables = []
    for name, section in (("plain", result), ("tta", result.get("tta")),
                          ("calibrated", result.get("calibration"))):
        if section is not None:
            tables.append(metrics.metrics_table(section).assign(variant=name))
    fileio.write_csv(out_dir / csv_name, pd.concat(tables, ignore_index=True))
    if plots:
        write_plots(out_dir, split, variants)
    return result


def write_plots(out_dir: Path, split: str, variants: dict[str, pd.DataFrame]) -> dict[str, Path]:
    """Evaluation figures under <out_dir>/plots/ (prefixed by split and variant)."""
    from utils.evaluation import plots

    plot_dir = out_dir / runs.PLOTS_DIR
    written: dict[str, Path] = {}
    for name, frame in variants.items():
        prefix = f"{split}_" if name == "plain" else f"{split}_{name}_"
        if name == "calibrated":  # same argmax as plain: only the calibration changes
            y_true, probs, _ = predictions.arrays_from_predictions(frame)
            written[f"{name}/reliability"] = plot_dir / f"{prefix}reliability.png"
            plots.reliability_diagram({name: (probs, y_true)}, path=written[f"{name}/reliability"])
            continue
        figures = plots.evaluation_plots(frame, plot_dir, prefix)
        written.update({f"{name}/{key}": path for key, path in figures.items()})
    if len(variants) > 1:
        curves = {}
        for name, frame in variants.items():
            y_true, probs, _ = predictions.arrays_from_predictions(frame)
            curves[name] = (probs, y_true)
        written["reliability_compared"] = plot_dir / f"{split}_reliability_compared.png"
        plots.reliability_diagram(curves, path=written["reliability_compared"])
    history = out_dir / runs.HISTORY
    if history.is_file() and pd.read_csv(history).shape[0] > 0:
        written["training_curves"] = plot_dir / "training_curves.png"
        plots.training_curves(history, written["training_curves"])
    return written


def summary_lines(result: dict[str, Any]) -> list[str]:
    """A short human summary: headline metrics with CIs."""
    def line(label: str, section: dict) -> str:
        parts = []
        for name in HEADLINE:
            stats = section["metrics"].get(name)
            if stats and stats["value"] is not None:
                parts.append(f"{name} {stats['value']:.3f} "
                             f"[{stats['ci_low']:.3f}, {stats['ci_high']:.3f}]")
        return f"{label}: " + "; ".join(parts)

    lines = [f"{result['split']} split: {result['n_images']} images, {result['n_groups']} "
             f"{result['bootstrap']['unit']}s, {result['bootstrap']['n_boot']} bootstrap "
             "replicates"]
    lines.append(line("plain", result))
    if "tta" in result:
        lines.append(line("tta", result["tta"]))
    if "calibration" in result:
        cal = result["calibration"]
        lines.append(f"temperature {cal['temperature']:.3f}: ECE {cal['test_ece_before']:.3f} -> "
                     f"{cal['test_ece_after']:.3f}")
    return lines


# --------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help="a run folder or a predictions CSV")
    parser.add_argument("--split", default="test", choices=SPLITS)
    parser.add_argument("--n-boot", type=non_negative_int, default=metrics.DEFAULT_N_BOOT,
                        help="bootstrap replicates (lesions resampled where lesion_id is known)")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--specificity", type=probability, default=metrics.DEFAULT_SPECIFICITY,
                        help="operating point of the melanoma sensitivity metric")
    parser.add_argument("--tta", action="store_true", help="also evaluate 8-view TTA predictions")
    parser.add_argument("--calibrate", action="store_true",
                        help="also evaluate temperature-scaled predictions (fitted on val)")
    parser.add_argument("--no-plots", action="store_true")


def run(args: argparse.Namespace) -> int:
    result = evaluate(args.target, args.split, args.n_boot, args.seed, args.specificity,
                      args.tta, args.calibrate, plots=not args.no_plots)
    for text in summary_lines(result):
        print(text)
    _, out_dir = locate(args.target, args.split)
    print(f"wrote {paths.display(out_dir / runs.metrics_names(args.split)[0])} and plots/")
    return 0

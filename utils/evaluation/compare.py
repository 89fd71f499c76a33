"""`python -m utils compare [--runs runs/] [--out reports/comparison]`: one table over all runs.

One row per run folder holding predictions_test.csv: dataset, backbone, image size, weights,
epochs, test balanced accuracy with its 95 % bootstrap CI, macro-F1, macro AUC, the melanoma
operating point (threshold fixed on validation at the target specificity, default 0.80: its test
sensitivity and test specificity), and training time. Metrics come from the run's
metrics.json (`python -m utils evaluate`) and are computed in memory where it is missing or was
made from other predictions. Written atomically as <out>.csv and <out>.md; README results come
from this table, never typed by hand.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from utils import fileio, paths
from utils.arguments import non_negative_int
from utils.evaluation.model_card import headline_section
from utils.scoring import metrics, predictions
from utils.tables import format_ci, markdown_table
from utils.training import runs
from utils.training.config import TrainConfig

PREDICTION_LABELS = {"plain": "plain", "tta": "TTA (8 views)", "metadata": "plain + metadata",
                     "tta_metadata": "TTA (8 views) + metadata"}
COLUMNS = ("run", "dataset", "backbone", "image_size", "weights", "epochs", "prediction", "n_test",
           "balanced_accuracy", "balanced_accuracy_ci_low", "balanced_accuracy_ci_high",
           "macro_f1", "macro_auc", "melanoma_val_fixed_specificity_target",
           "melanoma_sensitivity_val_fixed", "melanoma_specificity_val_fixed", "train_time_s")


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{paths.display(path)}: not valid JSON ({error}); fix or delete it") from None


def run_metrics(run_dir: Path, n_boot: int = metrics.DEFAULT_N_BOOT,
                seed: int = 0) -> dict[str, Any]:
    """The test metrics of a run: metrics.json where it was made from predictions_test.csv
    (with the validation-fixed melanoma operating point), otherwise computed now (nothing is
    written)."""
    stored = _read_json(run_dir / runs.metrics_names("test")[0])
    if (stored.get("predictions") == runs.predictions_name("test") and "metrics" in stored
            and "operating_point" in stored):
        return stored
    frame = predictions.read_predictions(run_dir / runs.predictions_name("test"))
    val = run_dir / runs.predictions_name("val")
    return metrics.evaluate_predictions(
        frame, n_boot=n_boot, seed=seed,
        val_frame=predictions.read_predictions(val) if val.is_file() else None)


def run_row(run_dir: Path, n_boot: int = metrics.DEFAULT_N_BOOT, seed: int = 0) -> dict[str, Any]:
    """One table row (see COLUMNS) of a finished run folder."""
    config = _read_json(run_dir / runs.CONFIG)
    info = _read_json(run_dir / runs.RUN_INFO)
    result = run_metrics(run_dir, n_boot, seed)
    result, variant = headline_section(result, bool(config.get("predict_tta")),
                                       bool(config.get("metadata_fusion")))
    values = result["metrics"]
    point = result.get("operating_point") or {}
    planned = TrainConfig.from_dict(config).total_epochs if config else None
    ba = values["balanced_accuracy"]
    return {
        "run": run_dir.name,
        "dataset": config.get("dataset"),
        "backbone": config.get("backbone") + (f" x{config['members']} (ensemble)"
                                              if config.get("members", 1) > 1 else ""),
        "image_size": config.get("image_size"),
        "weights": config.get("weights") or "none (from scratch)",
        "epochs": info.get("epochs_completed", planned),
        "prediction": PREDICTION_LABELS[variant],
        "n_test": result["n_images"],
        "balanced_accuracy": ba["value"],
        "balanced_accuracy_ci_low": ba["ci_low"],
        "balanced_accuracy_ci_high": ba["ci_high"],
        "macro_f1": values["macro_f1"]["value"],
        "macro_auc": values["macro_auc"]["value"],
        "melanoma_val_fixed_specificity_target": point.get("target_specificity"),
        "melanoma_sensitivity_val_fixed":
            values.get(point.get("sensitivity_name", ""), {}).get("value"),
        "melanoma_specificity_val_fixed":
            values.get(point.get("specificity_name", ""), {}).get("value"),
        "train_time_s": info.get("duration_s"),
    }


def comparison_table(runs_root: str | os.PathLike | None = None,
                     n_boot: int = metrics.DEFAULT_N_BOOT, seed: int = 0,
                     report=None) -> pd.DataFrame:
    """Rows for every run folder under `runs_root` (default runs/) that has test predictions,
    best balanced accuracy first. Unfinished runs are listed on `report` (stderr) and skipped."""
    rows = []
    for run_dir in runs.list_runs(runs_root):
        if not (run_dir / runs.predictions_name("test")).is_file():
            print(f"skipped {paths.display(run_dir)}: no predictions_test.csv (unfinished run)",
                  file=report or sys.stderr)
            continue
        rows.append(run_row(run_dir, n_boot, seed))
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    return table.sort_values("balanced_accuracy", ascending=False, na_position="last",
                             ignore_index=True)


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub markdown table: balanced accuracy shown with its 95 % CI."""
    header = ["run", "dataset", "backbone", "size", "weights", "epochs", "prediction",
              "test images",
              "balanced acc. [95 % CI]", "macro-F1", "macro AUC",
              "mel. sens. / spec. (threshold fixed on val. at spec. 0.80)", "train time (min)"]
    rows = []
    for row in table.itertuples(index=False):
        seconds = row.train_time_s
        minutes = None if seconds is None or pd.isna(seconds) else f"{seconds / 60:.1f}"
        rows.append([row.run, row.dataset, row.backbone, row.image_size, row.weights, row.epochs,
                     row.prediction, row.n_test,
                     format_ci({"value": row.balanced_accuracy,
                                "ci_low": row.balanced_accuracy_ci_low,
                                "ci_high": row.balanced_accuracy_ci_high}),
                     row.macro_f1, row.macro_auc, _operating_point_cell(row), minutes])
    return markdown_table(rows, header) + "\n"


def _operating_point_cell(row: Any) -> str:
    """`sensitivity / specificity` on test of the validation-fixed melanoma rule (its target
    specificity in brackets where it is not the default)."""
    sens, spec = row.melanoma_sensitivity_val_fixed, row.melanoma_specificity_val_fixed
    if sens is None or spec is None or pd.isna(sens) or pd.isna(spec):
        return ""
    target = row.melanoma_val_fixed_specificity_target
    note = "" if target == metrics.DEFAULT_SPECIFICITY else f" (val. spec. {target:.2f})"
    return f"{sens:.3f} / {spec:.3f}{note}"


def write_comparison(table: pd.DataFrame, out: str | os.PathLike) -> tuple[Path, Path]:
    """<out>.csv and <out>.md, atomically."""
    out = Path(out)
    base = out.with_suffix("") if out.suffix in (".csv", ".md") else out
    csv = fileio.write_csv(f"{base}.csv", table)
    md = fileio.write_text(f"{base}.md", to_markdown(table))
    return csv, md


README_BLOCK = "results"  # README.md's <!-- results:start --> ... <!-- results:end --> block


def update_readme(readme: str | os.PathLike, table_markdown: str, command: str) -> Path:
    """Replace the results block of a README with the generated table."""
    return fileio.replace_block(readme, README_BLOCK,
                                f"Generated by `{command}` from the run folders; do not edit by "
                                f"hand.\n\n{table_markdown}")


# --------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", default=None, help="folder of run folders (default: runs/)")
    parser.add_argument("--out", default=None,
                        help="output path without extension (default: reports/comparison)")
    parser.add_argument("--n-boot", type=non_negative_int, default=metrics.DEFAULT_N_BOOT,
                        help="bootstrap replicates for runs without metrics.json")
    parser.add_argument("--readme", default=None,
                        help="also write the table into this README's results block")


def run(args: argparse.Namespace) -> int:
    runs_root = Path(args.runs) if args.runs else paths.runs_dir()
    table = comparison_table(runs_root, args.n_boot)
    if table.empty:
        print(f"no finished runs under {paths.display(runs_root)}; train one with "
              f"`python -m utils train` first", file=sys.stderr)
        return 1
    out = Path(args.out) if args.out else paths.reports_dir() / "comparison"
    csv, md = write_comparison(table, out)
    print(to_markdown(table))
    print(f"wrote {paths.display(csv)} and {paths.display(md)}")
    if args.readme:
        command = "python -m utils compare" + "".join(
            f" --{name} {value}" for name, value in (("runs", args.runs), ("out", args.out),
                                                     ("readme", args.readme)) if value)
        update_readme(args.readme, to_markdown(table), command)
        print(f"updated the results block of {paths.display(args.readme)}")
    return 0

"""`python -m utils evaluate <run folder or predictions CSV>`: metrics with bootstrap confidence
intervals, plots, selective prediction, subgroups, optionally test-time augmentation, temperature
scaling and corruptions, and the model card.

Writes into the run folder (the CSV's folder when given a CSV), atomically:
- metrics.json (test split; metrics_<split>.json otherwise): point estimates with 95 % CIs,
  confusion matrix, bootstrap settings, the validation-fixed melanoma operating point; sections
  "tta", "calibration", "selective", "subgroups", "corruptions" when computed;
- metrics.csv (metrics_<split>.csv): one row per metric, class and variant (plain / tta /
  calibrated): per class precision, sensitivity, specificity, F1, MCC and AUC;
- selective.csv, subgroups.csv, corruptions.csv (test split), plots/;
- model_card.md, for the test split of a run folder (utils.evaluation.model_card).

The validation predictions (predictions_val.csv beside the test predictions, or
--val-predictions) fix everything the test split must not choose: the melanoma threshold, the
temperature (--calibrate) and the abstention thresholds. --tta re-predicts the split (and the
validation split) from model.keras over the 8 dihedral views. --corruptions re-predicts the test
split under 6 corruptions x 5 severities (utils.evaluation.corruptions; needs the run folder).
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from utils import fileio, paths
from utils.arguments import non_negative_int, probability
from utils.data.manifest import load_manifest
from utils.errors import DataError
from utils.evaluation import calibration
from utils.evaluation import selective as selective_module
from utils.evaluation import subgroups as subgroups_module
from utils.scoring import metrics, predictions
from utils.scoring.predictions import predictions_frame
from utils.training import runs
from utils.training.config import TrainConfig

SPLITS = ("test", "val")


def headline(result: dict[str, Any]) -> tuple[str, ...]:
    """The headline metric names of a result (the operating point's where one was fixed)."""
    point = result.get("operating_point") or {}
    return ("balanced_accuracy", "macro_f1", "macro_auc",
            *((point["sensitivity_name"], point["specificity_name"]) if point else ()))


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


def validation_frame(out_dir: Path, split: str,
                     val_predictions: str | os.PathLike | None) -> pd.DataFrame | None:
    """The validation predictions that fix thresholds (None for the val split itself, or where
    there are none)."""
    if split == "val":
        return None
    path = Path(val_predictions) if val_predictions else out_dir / runs.predictions_name("val")
    if not path.is_file():
        if val_predictions:
            raise DataError(f"{path}: validation predictions not found")
        return None
    frame = predictions.read_predictions(path)
    return frame if len(frame) else None


def _run_parts(run_dir: Path, what: str) -> runs.Run:
    for name in (runs.MODEL, runs.CONFIG, runs.MANIFEST):
        if not (run_dir / name).is_file():
            raise DataError(f"{paths.display(run_dir)}: {what} needs {name} of the run folder")
    return runs.load_run(run_dir)


def tta_predictions(run_dir: Path, split: str, classes: Sequence[str],
                    views: Sequence[str]) -> pd.DataFrame:
    """Re-predict one split of a run with test-time augmentation (training's preprocessing)."""
    from utils.evaluation import tta
    from utils.training import models, pipeline
    from utils.training.data import pipeline_preprocess

    run = _run_parts(run_dir, "--tta")
    manifest = run.manifest
    rows = manifest[manifest["split"] == split].reset_index(drop=True)
    model = models.load_model(run.model_path, compile=False)
    data = pipeline.make_dataset(rows, run.config.image_size, run.config.batch_size, training=False,
                                 num_classes=len(classes), resize_policy=run.config.resize_policy,
                                 preprocess=pipeline_preprocess(run.config))
    return predictions_frame(rows, tta.predict_tta(model, data, views), classes)


def metadata_requested(out_dir: Path, metadata: bool | None) -> bool:
    """Whether to evaluate the metadata-fused variants: `metadata`, or (None) the run config's
    metadata_fusion."""
    if metadata is not None:
        return metadata
    config = out_dir / runs.CONFIG
    return config.is_file() and TrainConfig.load(config).metadata_fusion


def metadata_variants(out_dir: Path, manifest: pd.DataFrame | None,
                      variants: dict[str, pd.DataFrame],
                      val_variants: dict[str, pd.DataFrame | None]
                      ) -> list[tuple[str, pd.DataFrame, pd.DataFrame | None, dict[str, Any]]]:
    """(name, fused split frame, fused val frame, summary) of the plain and TTA variants fused
    with the run's metadata model (fitted on the training split of its `manifest`)."""
    from utils.scoring import metadata_fusion

    if manifest is None:
        raise DataError(f"{paths.display(out_dir)}: metadata fusion needs the run's "
                        f"{runs.MANIFEST} (age, sex and site of every image, and which images "
                        "trained the model)")
    classes = predictions.class_columns(variants["plain"])
    model = metadata_fusion.run_model(out_dir, manifest, classes)
    summary = {"metadata_model": metadata_fusion.MODEL_FILE, "fitted_on": model["fitted_on"],
               "sites": len(model["sites"])}
    out = []
    for source, name in (("plain", "metadata"), ("tta", "tta_metadata")):
        if source not in variants:
            continue
        val = val_variants.get(source)
        out.append((name, metadata_fusion.fused_frame(variants[source], manifest, model),
                    None if val is None else metadata_fusion.fused_frame(val, manifest, model),
                    {**summary, "fuses": source}))
    return out


def corruption_results(run_dir: Path, split: str, classes: Sequence[str], n_boot: int,
                       seed: int) -> tuple[dict[str, Any], pd.DataFrame]:
    """The corruption section of one split of a run (its model, size and resize policy)."""
    from utils.evaluation import corruptions
    from utils.training import models

    run = _run_parts(run_dir, "--corruptions")
    manifest = run.manifest
    rows = manifest[manifest["split"] == split].reset_index(drop=True)
    model = models.load_model(run.model_path, compile=False)
    return corruptions.corruption_section(model, rows, classes, run.config.image_size,
                                          run.config.resize_policy, n_boot, seed,
                                          batch_size=run.config.batch_size)


def evaluate(target: str | os.PathLike, split: str = "test", n_boot: int = metrics.DEFAULT_N_BOOT,
             seed: int = 0, specificity: float = metrics.DEFAULT_SPECIFICITY, tta: bool = False,
             calibrate: bool = False, plots: bool = True, selective: bool = True,
             subgroups: bool = True, corruptions: bool = False, card: bool = True,
             val_predictions: str | os.PathLike | None = None,
             command: str | None = None, metadata: bool | None = None) -> dict[str, Any]:
    """Evaluate a run folder's (or a CSV's) predictions; writes metrics, tables, plots and (test
    split of a run folder) the model card; returns the metrics.

    metadata: also evaluate the predictions (and the TTA ones) fused with a metadata model
    fitted on the run's training split (utils.scoring.metadata_fusion); None: where the run's
    config has metadata_fusion."""
    from utils.evaluation import tta as tta_module

    csv, out_dir = locate(target, split)
    frame = predictions.read_predictions(csv)
    if len(frame) == 0:
        raise DataError(f"{paths.display(csv)} has no rows; the {split} split is empty")
    classes = predictions.class_columns(frame)
    val_frame = validation_frame(out_dir, split, val_predictions)

    def section(test: pd.DataFrame, val: pd.DataFrame | None) -> dict[str, Any]:
        return metrics.evaluate_predictions(test, n_boot=n_boot, seed=seed,
                                            specificity=specificity, val_frame=val)

    result: dict[str, Any] = {"split": split, "predictions": csv.name, **section(frame, val_frame)}
    variants, val_variants = {"plain": frame}, {"plain": val_frame}
    if tta:
        views = tuple(tta_module.DIHEDRAL_VIEWS)
        tta_started = time.perf_counter()
        variants["tta"] = tta_predictions(out_dir, split, classes, views)
        fileio.write_csv(out_dir / runs.predictions_name(split, "tta"), variants["tta"])
        val_variants["tta"] = None
        if val_frame is not None:
            val_variants["tta"] = tta_predictions(out_dir, "val", classes, views)
            fileio.write_csv(out_dir / runs.predictions_name("val", "tta"), val_variants["tta"])
        tta_s = time.perf_counter() - tta_started  # the TTA predictions (split and val), no scoring
        result["tta"] = {"views": list(views), "predict_s": round(tta_s, 1),
                         **section(variants["tta"], val_variants["tta"])}
    fuse_metadata = metadata_requested(out_dir, metadata)
    manifest_path = out_dir / runs.MANIFEST
    manifest = (load_manifest(manifest_path) if (fuse_metadata or subgroups)
                and manifest_path.is_file() else None)
    if fuse_metadata:
        for name, fused, val_fused, summary in metadata_variants(out_dir, manifest, variants,
                                                                 val_variants):
            variants[name], val_variants[name] = fused, val_fused
            fileio.write_csv(out_dir / runs.predictions_name(split, name), fused)
            result[name] = {**summary, **section(fused, val_fused)}
    if calibrate:
        fit_on = val_frame if val_frame is not None else predictions.read_predictions(
            out_dir / runs.predictions_name("val"))
        calibrated, summary = calibration.calibrate_predictions(fit_on, frame)
        variants["calibrated"] = calibrated
        val_variants["calibrated"] = (calibration.apply_to_frame(val_frame, summary["temperature"])
                                      if val_frame is not None else None)
        fileio.write_csv(out_dir / runs.predictions_name(split, "calibrated"), calibrated)
        result["calibration"] = {**summary, **section(calibrated, val_variants["calibrated"])}
    tables: dict[str, pd.DataFrame] = {}
    if selective:
        source = "calibrated" if calibrate else "plain"
        result["selective"] = selective_module.selective_section(
            variants[source], val_variants[source], n_boot, seed,
            confidence_source="temperature-scaled" if calibrate else "plain")
        tables[runs.SELECTIVE] = selective_module.table(result["selective"])
    if subgroups:
        result["subgroups"] = subgroups_module.subgroup_section(frame, manifest, n_boot, seed)
        tables[runs.SUBGROUPS] = subgroups_module.table(result["subgroups"])
    if corruptions:
        result["corruptions"], tables[runs.CORRUPTIONS] = corruption_results(
            out_dir, split, classes, n_boot, seed)
    json_name, csv_name = runs.metrics_names(split)
    fileio.write_json(out_dir / json_name, result)
    fileio.write_csv(out_dir / csv_name, metrics_csv(result))
    if split == "test":
        for name, table in tables.items():
            fileio.write_csv(out_dir / name, table)
    if plots:
        write_plots(out_dir, split, variants, result)
    if card and split == "test" and (out_dir / runs.CONFIG).is_file():
        from utils.evaluation import model_card

        fileio.write_text(out_dir / runs.MODEL_CARD, model_card.build_card(
            out_dir, result, command or f"python -m utils evaluate {paths.display(out_dir)}"))
    return result


def metrics_csv(result: dict[str, Any]) -> pd.DataFrame:
    """metrics.csv: every scalar and per-class metric of each variant."""
    tables = []
    for name, section in (("plain", result), ("tta", result.get("tta")),
                          ("metadata", result.get("metadata")),
                          ("tta_metadata", result.get("tta_metadata")),
                          ("calibrated", result.get("calibration"))):
        if section is not None:
            tables.append(metrics.metrics_table(section).assign(variant=name))
    return pd.concat(tables, ignore_index=True)


def write_plots(out_dir: Path, split: str, variants: dict[str, pd.DataFrame],
                result: dict[str, Any] | None = None) -> dict[str, Path]:
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
    written.update(section_plots(plot_dir, split, result or {}))
    return written


def section_plots(plot_dir: Path, split: str, result: dict[str, Any]) -> dict[str, Path]:
    """Risk-coverage, subgroup and corruption figures of the sections present in `result`."""
    from utils.evaluation import corruptions

    written = {}
    if "selective" in result:
        written["selective"] = plot_dir / f"{split}_risk_coverage.png"
        selective_module.plot(result["selective"], written["selective"])
    if "subgroups" in result:
        written["subgroups"] = plot_dir / f"{split}_subgroups.png"
        subgroups_module.plot(result["subgroups"], result["metrics"]["balanced_accuracy"],
                              written["subgroups"])
    if "corruptions" in result:
        written["corruptions"] = plot_dir / f"{split}_corruptions.png"
        corruptions.plot(pd.DataFrame(result["corruptions"]["table"]), written["corruptions"])
    return written


def summary_lines(result: dict[str, Any]) -> list[str]:
    """A short human summary: headline metrics with CIs."""
    def line(label: str, section: dict) -> str:
        parts = []
        for name in headline(section):
            stats = section["metrics"].get(name)
            if stats and stats["value"] is not None:
                parts.append(f"{name} {stats['value']:.3f} "
                             f"[{stats['ci_low']:.3f}, {stats['ci_high']:.3f}]")
        return f"{label}: " + "; ".join(parts)

    lines = [f"{result['split']} split: {result['n_images']} images, {result['n_groups']} "
             f"{result['bootstrap']['unit']}s, {result['bootstrap']['n_boot']} bootstrap "
             "replicates"]
    lines.append(line("plain", result))
    for name in ("tta", "metadata", "tta_metadata"):
        if name in result:
            lines.append(line(name.replace("_", " + "), result[name]))
    if "calibration" in result:
        cal = result["calibration"]
        lines.append(f"temperature {cal['temperature']:.3f}: ECE {cal['test_ece_before']:.3f} -> "
                     f"{cal['test_ece_after']:.3f}")
    if "selective" in result:
        lines.append(f"AURC {result['selective']['aurc']['value']:.3f}")
    if "corruptions" in result:
        lines.append("mean balanced accuracy under corruptions "
                     f"{result['corruptions']['mean_balanced_accuracy']:.3f} (clean "
                     f"{result['corruptions']['clean_balanced_accuracy']:.3f})")
    return lines


# --------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help="a run folder or a predictions CSV")
    parser.add_argument("--split", default="test", choices=SPLITS)
    parser.add_argument("--n-boot", type=non_negative_int, default=metrics.DEFAULT_N_BOOT,
                        help="bootstrap replicates (lesions resampled where lesion_id is known)")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--specificity", type=probability, default=metrics.DEFAULT_SPECIFICITY,
                        help="validation specificity that fixes the melanoma operating point")
    parser.add_argument("--val-predictions", default=None,
                        help="validation predictions CSV (default: predictions_val.csv beside "
                             "the evaluated predictions)")
    parser.add_argument("--tta", action="store_true",
                        help="also evaluate 8-view TTA predictions (the result of a run whose "
                             "recipe predicts with TTA, config predict_tta)")
    parser.add_argument("--metadata", action=argparse.BooleanOptionalAction, default=None,
                        help="also evaluate predictions fused with a metadata model (age, sex, "
                             "site) fitted on the run's training split (default: where the run's "
                             "recipe has metadata_fusion)")
    parser.add_argument("--calibrate", action="store_true",
                        help="also evaluate temperature-scaled predictions (fitted on val)")
    parser.add_argument("--corruptions", action="store_true",
                        help="also predict the split under 6 corruptions x 5 severities (costly)")
    parser.add_argument("--no-selective", action="store_true",
                        help="skip the risk-coverage (abstention) section")
    parser.add_argument("--no-subgroups", action="store_true",
                        help="skip the subgroup section")
    parser.add_argument("--no-card", action="store_true", help="do not write model_card.md")
    parser.add_argument("--no-plots", action="store_true")


def command_line(args: argparse.Namespace) -> str:
    """The command as typed (options left at their defaults omitted), for the model card."""
    defaults = argparse.ArgumentParser()
    add_arguments(defaults)
    parts = ["python -m utils evaluate", str(args.target)]
    for name in ("split", "n_boot", "seed", "specificity", "val_predictions"):
        value = getattr(args, name)
        if value != defaults.get_default(name):
            parts.append(f"--{name.replace('_', '-')} {value}")
    parts += [f"--{name.replace('_', '-')}" for name in (
        "tta", "calibrate", "corruptions", "no_selective", "no_subgroups", "no_plots")
        if getattr(args, name)]
    if args.metadata is not None:
        parts.append("--metadata" if args.metadata else "--no-metadata")
    return " ".join(parts)


def run(args: argparse.Namespace) -> int:
    result = evaluate(args.target, args.split, args.n_boot, args.seed, args.specificity,
                      args.tta, args.calibrate, plots=not args.no_plots,
                      selective=not args.no_selective, subgroups=not args.no_subgroups,
                      corruptions=args.corruptions, card=not args.no_card,
                      val_predictions=args.val_predictions, command=command_line(args),
                      metadata=args.metadata)
    for text in summary_lines(result):
        print(text)
    _, out_dir = locate(args.target, args.split)
    print(f"wrote {paths.display(out_dir / runs.metrics_names(args.split)[0])} and plots/")
    return 0

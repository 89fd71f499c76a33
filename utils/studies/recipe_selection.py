"""Choosing the budgeted recipe by paired screening runs on the VALIDATION split.

    python -m utils select-recipe --data-dir ../shared/data/HAM10000 --budget cpu-5min \\
        --seeds 0 1 --report reports/cpu_recipe_selection

Every variant changes one thing of the base recipe (utils.training.budget.CPU_RECIPE) and is
trained with the same wall-clock budget, on the same lesion-grouped split (the one the final run
uses: lesion_split of the dataset at seed 0) and with the same training seeds as the base. The
test rows are dropped from the manifest before any training: screening never reads the test
split. Each variant's validation balanced accuracy is compared with the base's, run for run
(same seed), and the 95 % CI of the mean paired difference comes from resampling validation
LESIONS (one set of bootstrap weights shared by all runs, so the pairing holds in every
replicate). Three variants need no training of their own (RESCORED): "tta" predicts the base
runs' validation images over the 8 dihedral views, "metadata" fuses the base runs' validation
predictions with a metadata model fitted on the training split (utils.scoring.metadata_fusion),
"tta_metadata" does both. "ensemble2" is the recipe with members=2
(utils.training.ensemble): two models trained in turn with half the budget each, averaged into
one model. Runs are resumable: a finished run folder is reused.

Limits, stated in the report (limits_text) from the settings it ran with: a horizon shorter
than the final run's (a technique that needs long training, e.g. mixup, can look worse there),
few seeds (one seed: the CIs cover the validation lesions, not training's own spread), one
split; the final recipe combines winners that were only tested one at a time.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from utils import fileio, paths
from utils.arguments import non_negative_float, non_negative_int, positive_int
from utils.data import datasets
from utils.scoring import metrics
from utils.tables import markdown_table
from utils.training import runs
from utils.training.config import TrainConfig

# name -> (what changes, TrainConfig overrides of the base recipe)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "base": ("the base recipe", {}),
    "no_ema": ("no weight averaging", {"weight_average": "none"}),
    "swa": ("SWA of epoch-end weights (second half) instead of EMA", {"weight_average": "swa"}),
    "size96": ("96 px instead of 64 px (fewer epochs fit)", {"image_size": 96}),
    # the base samples balanced batches since the first real screening (it beat class weights)
    "class_weight": ("class weights instead of balanced sampling",
                     {"imbalance": "class_weight"}),
    "label_smoothing": ("label smoothing 0.1", {"label_smoothing": 0.1}),
    "mixup": ("mixup, alpha 0.2", {"mixup_alpha": 0.2}),
    "cutmix": ("CutMix, alpha 1.0, half the batches", {"cutmix_alpha": 1.0, "mix_prob": 0.5}),
    "adamw": ("AdamW, weight decay 0.05", {"optimizer": "adamw", "weight_decay": 0.05}),
    "plateau": ("constant rate reduced on plateau instead of cosine",
                {"lr_schedule": "plateau", "warmup_epochs": 0.0}),
    "ensemble2": ("two models of half the budget each, probabilities averaged", {"members": 2}),
    "tta": ("the base runs with 8-view test-time augmentation (validation)", {}),
    "metadata": ("the base runs' predictions fused with a metadata model (age, sex, site) "
                 "fitted on the training split", {}),
    "tta_metadata": ("the base runs' TTA predictions fused with the metadata model", {}),
}
DEFAULT_VARIANTS = tuple(VARIANTS)
# variants that re-score the base runs instead of training their own: (TTA, metadata fusion)
RESCORED: dict[str, tuple[bool, bool]] = {"tta": (True, False), "metadata": (False, True),
                                          "tta_metadata": (True, True)}
# config fields that change how a run predicts, not how it trains (screening scores plain)
PREDICTION_FIELDS = ("predict_tta", "metadata_fusion")


def screening_manifest(config: TrainConfig) -> pd.DataFrame:
    """The final run's lesion-grouped split (seed 0) without its test rows."""
    from utils.data import splits
    from utils.training.data import load_table

    table = load_table(replace(config, seed=0))
    manifest = splits.lesion_split(table, fractions=config.split_fractions, seed=0)
    return manifest[manifest["split"] != "test"].reset_index(drop=True)


def run_config(base: TrainConfig, variant: str, seed: int,
               epochs: int | None = None) -> TrainConfig:
    """The TrainConfig of one screening run.

    epochs: equal compute instead of equal wall clock: `epochs` at the base's image size, scaled
    by the pixel count at another size (training cost grows with it) and shared by an
    ensemble's members, no sizing by measurement."""
    overrides = dict(VARIANTS[variant][1])
    config = replace(base, **overrides, seed=seed)
    if epochs is not None:
        pixels = (int(base.image_size) / int(config.image_size)) ** 2
        config = replace(config, budget_s=0.0,
                         epochs=max(1, int(round(epochs * pixels / config.members))))
    return config


def run_folder(root: Path, variant: str, seed: int) -> Path:
    return root / f"{variant}-seed{seed}"


def val_probabilities(run_dirs: Sequence[Path], tta: bool = False, metadata: bool = False,
                      tta_frames: dict[Path, pd.DataFrame] | None = None
                      ) -> tuple[pd.DataFrame, np.ndarray]:
    """(validation rows, mean class probabilities over the runs) of finished run folders;
    tta: re-predicted over the 8 dihedral views (kept in `tta_frames` by run folder, so the tta
    and tta_metadata rows predict once); metadata: fused with the run's metadata model."""
    from utils.scoring.predictions import class_columns, read_predictions

    tta_frames = {} if tta_frames is None else tta_frames
    frames = []
    for run_dir in run_dirs:
        frame = read_predictions(run_dir / runs.predictions_name("val"))
        if tta and run_dir not in tta_frames:
            from utils.evaluation import evaluate
            from utils.evaluation import tta as tta_module

            tta_frames[run_dir] = evaluate.tta_predictions(run_dir, "val", class_columns(frame),
                                                           tuple(tta_module.DIHEDRAL_VIEWS))
        if tta:
            frame = tta_frames[run_dir]
        if metadata:
            from utils.data.manifest import load_manifest
            from utils.scoring import metadata_fusion

            manifest = load_manifest(run_dir / runs.MANIFEST)
            model = metadata_fusion.run_model(run_dir, manifest, class_columns(frame))
            frame = metadata_fusion.fused_frame(frame, manifest, model)
        frames.append(frame)
    classes = list(class_columns(frames[0]))
    return frames[0], np.mean([f[classes].to_numpy(float) for f in frames], axis=0)


def balanced_accuracy_replicates(y: np.ndarray, probs: np.ndarray,
                                 weights: np.ndarray | None) -> np.ndarray:
    """Balanced accuracy (ties wrong, as reported) for each row of bootstrap `weights`."""
    matrices = metrics.confusion_matrices(y, metrics.predicted_labels(probs), probs.shape[1],
                                          weights)
    return metrics.rates_from_confusion(matrices)["balanced_accuracy"]


def compare(results: Mapping[str, Mapping[int, np.ndarray]], y: np.ndarray, groups: np.ndarray,
            n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per variant: validation balanced accuracy per seed, seed mean with a lesion-bootstrap CI,
    and the mean paired difference from the base over the seeds both have, with its CI."""
    weights = metrics.bootstrap_weights(groups, len(y), n_boot, seed)
    point = {v: {s: float(balanced_accuracy_replicates(y, p, None)[0]) for s, p in by.items()}
             for v, by in results.items()}
    boot = {v: {s: balanced_accuracy_replicates(y, p, weights) for s, p in by.items()}
            for v, by in results.items()}
    base = results.get("base", {})
    rows = []
    for variant, by_seed in results.items():
        seeds = sorted(by_seed)
        mean_boot = np.mean([boot[variant][s] for s in seeds], axis=0)
        low, high = metrics.percentile_interval(mean_boot)
        row = {"variant": variant, "seeds": seeds,
               "val_balanced_accuracy": {s: point[variant][s] for s in seeds},
               "mean": float(np.mean([point[variant][s] for s in seeds])),
               "mean_ci": [low, high]}
        paired = [s for s in seeds if s in base]
        if variant != "base" and paired:
            diff_boot = np.mean([boot[variant][s] - boot["base"][s] for s in paired], axis=0)
            d_low, d_high = metrics.percentile_interval(diff_boot)
            row.update(paired_seeds=paired,
                       difference=float(np.mean([point[variant][s] - point["base"][s]
                                                 for s in paired])),
                       difference_ci=[d_low, d_high])
        rows.append(row)
    return pd.DataFrame(rows)


def verdict(row: Mapping[str, Any]) -> str:
    """Reading of a paired difference: pays off / hurts only when its CI excludes zero."""
    if "difference_ci" not in row or not isinstance(row.get("difference_ci"), list):
        return "reference" if row["variant"] == "base" else "no paired base run"
    low, high = row["difference_ci"]
    if low > 0:
        return "better (CI above 0)"
    if high < 0:
        return "worse (CI below 0)"
    return "no clear difference"


def run_info_summary(run_dirs: Sequence[Path]) -> dict[str, Any]:
    """Epochs, training images per second and wall clock of the runs (means)."""
    epochs, rates, durations, shares = [], [], [], []
    for run_dir in run_dirs:
        info = json.loads((run_dir / runs.RUN_INFO).read_text())
        epochs.append(info.get("epochs_completed", 0))
        durations.append(info.get("duration_s", 0.0))
        report = run_dir / runs.BUDGET
        if report.is_file():
            budget_report = json.loads(report.read_text())
            rates.append(budget_report["measured"][-1]["train_images_per_s"])
            share = budget_report.get("outcome", {}).get("other_processes_cpu_share")
            if share is not None:
                shares.append(share)
    return {"epochs": float(np.mean(epochs)), "duration_s": float(np.mean(durations)),
            "train_images_per_s": float(np.mean(rates)) if rates else None,
            "others_share": float(np.mean(shares)) if shares else None}


def select(base: TrainConfig, seeds: Sequence[int], variants: Sequence[str], root: Path,
           n_boot: int = 1000, epochs: int | None = None) -> dict[str, Any]:
    """Train (or reuse) every screening run, seed by seed (all variants of one seed before the
    next seed: a run cut short still leaves paired results), and compare them."""
    from utils.training import train

    manifest = screening_manifest(base)
    trained: dict[str, dict[int, list[Path]]] = {}
    reused = 0
    for seed in seeds:
        for variant in variants:
            if variant in RESCORED:
                continue
            folder = run_folder(root, variant, seed)
            reused += int((folder / runs.RUN_INFO).is_file())
            print(f"[select-recipe] {variant} seed {seed}", flush=True)
            # a finished folder is reused as it is (train.train), a killed one resumes
            trained.setdefault(variant, {})[seed] = [
                train.train(run_config(base, variant, seed, epochs), run_dir=folder,
                            manifest=manifest)]
    results: dict[str, dict[int, np.ndarray]] = {}
    rows = None
    for variant, by_seed in trained.items():
        for seed, folders in by_seed.items():
            rows, probs = val_probabilities(folders)
            results.setdefault(variant, {})[seed] = probs
    tta_frames: dict[Path, pd.DataFrame] = {}
    for variant in (v for v in variants if v in RESCORED and "base" in trained):
        tta, metadata = RESCORED[variant]
        for seed, folders in trained["base"].items():
            _, results.setdefault(variant, {})[seed] = val_probabilities(
                folders, tta, metadata, tta_frames)
    y = rows["label_index"].to_numpy(int)
    table = compare(results, y, rows["lesion_id"].astype(str).to_numpy(), n_boot=n_boot)
    summaries = {v: run_info_summary([f for fs in trained["base" if v in RESCORED else v].values()
                                      for f in fs]) for v in results}
    return {"table": table, "summaries": summaries, "n_val_images": int(len(y)),
            "runs_reused": reused,
            "n_val_lesions": int(rows["lesion_id"].nunique()),
            "val_counts": rows["label"].value_counts().reindex(
                datasets.class_order(rows["label"])).astype(int).to_dict()}


def write_report(result: dict[str, Any], base: TrainConfig, command: str, out: Path,
                 seeds: Sequence[int], epochs: int | None = None) -> tuple[Path, Path]:
    """<out>.md (the table, the reading, the limits) and <out>.json (everything)."""
    table = result["table"]
    lines = [
        "# Choosing the CPU recipe: paired screening runs on the validation split",
        "",
        f"Generated by `{command}` (utils/studies/recipe_selection.py) on this project's "
        f"{os.cpu_count()}-core CPU machine (no GPU; {platform.processor() or 'CPU'}; "
        + _share_text(result.get("others_share"), result.get("runs_reused", 0))
        + "); every number below comes from that "
        "command. The test split was dropped from the "
        "manifest before any training: these runs never read it.",
        "",
        (f"- Base recipe (equal compute: {epochs} epochs per run at {base.image_size} px, "
         "scaled by pixel count at another size and shared by an ensemble's members; equal wall "
         "clock is not comparable on a machine shared with other jobs): " if epochs else
         f"- Base recipe ({base.budget}, {float(base.budget_s):.0f} s of wall clock per run, "
         "epochs sized by measuring on the machine): ")
        + ", ".join(f"{k}={v}" for k, v in sorted(_recipe_fields(base).items())) + ". Every "
        "row scores plain (one-view) image-only validation predictions except the rescored "
        "rows (tta, metadata, tta_metadata: the base runs predicted another way), whatever the "
        "recipe's own prediction mode (predict_tta, metadata_fusion) is.",
        f"- Split: lesion-grouped (seed 0, the final run's split), validation "
        f"{result['n_val_images']} images of {result['n_val_lesions']} lesions "
        f"({', '.join(f'{k} {v}' for k, v in result['val_counts'].items())}).",
        f"- Seeds {', '.join(map(str, seeds))}: each variant is paired with the base run of "
        "the same seed; 95 % CIs from 1,000 lesion-bootstrap replicates of the validation "
        "split, shared by all runs.",
        "",
    ]
    rows = []
    for row in table.to_dict("records"):
        summary = result["summaries"].get(row["variant"], {})
        per_seed = " / ".join(f"{row['val_balanced_accuracy'][s]:.3f}" for s in row["seeds"])
        diff = (f"{row['difference']:+.3f} [{row['difference_ci'][0]:+.3f}, "
                f"{row['difference_ci'][1]:+.3f}]" if isinstance(row.get("difference_ci"), list)
                else "")
        rows.append([row["variant"], VARIANTS.get(row["variant"], ("",))[0],
                     f"{summary.get('epochs', 0):.1f}", f"{summary.get('duration_s', 0):.0f}",
                     per_seed,
                     f"{row['mean']:.3f} [{row['mean_ci'][0]:.3f}, {row['mean_ci'][1]:.3f}]",
                     diff, verdict(row)])
    lines.append(markdown_table(rows, [
        "variant", "change from the base", "epochs (mean)", "wall clock per run (s)",
        "val BA per seed", "val BA mean [CI]", "paired Δ vs base [CI]", "reading"]))
    lines += [
        "",
        limits_text(base, seeds, epochs, list(table["variant"])),
    ]
    md = fileio.write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    payload = {"command": command, "base": base.to_dict(), "seeds": list(seeds),
               "epochs": epochs,
               "variants": {v: {"change": VARIANTS[v][0], "overrides": VARIANTS[v][1]}
                            for v in table["variant"]},
               "rows": json.loads(table.to_json(orient="records")),
               "summaries": result["summaries"], "n_val_images": result["n_val_images"],
               "runs_reused": result.get("runs_reused", 0),
               "n_val_lesions": result["n_val_lesions"], "val_counts": result["val_counts"]}
    js = fileio.write_json(out.with_suffix(".json"), payload)
    return md, js


def limits_text(base: TrainConfig, seeds: Sequence[int], epochs: int | None,
                variants: Sequence[str] = ()) -> str:
    """The report's limits paragraph, from the settings the screening actually had."""
    from utils.training.budget import BUDGETS

    final = BUDGETS["cpu-30min"].seconds
    if epochs or float(base.budget_s or 0) < final:
        horizon = ((f"{epochs} epochs per run at equal compute" if epochs else
                    f"{float(base.budget_s):.0f} s of wall clock per run")
                   + f" is a shorter horizon than the final {final / 60:.0f}-minute run "
                   "(techniques that need long training, such as mixup, can look worse here "
                   "than they would there)")
    else:
        horizon = (f"each run had the final run's horizon ({float(base.budget_s):.0f} s of wall "
                   "clock, its epochs sized on this machine)")
    spread = (f"{len(seeds)} training seeds" if len(seeds) > 1 else
              "one training seed: the CIs cover which validation lesions were drawn, not how "
              "much training itself varies from seed to seed or with CPU timing (see the "
              "30-minute runs in reports/README.md: same recipe and seed, several points apart)")
    combined = ("variants were tested one at a time, not in combination (except tta_metadata, "
                "TTA and metadata fusion together)" if "tta_metadata" in variants else
                "variants were tested one at a time, not in combination")
    return (f"Limits: {horizon}; {spread}; one split; {combined}; an ensemble's epochs and wall "
            "clock are those of all its members together. The final recipe "
            "(utils.training.budget.CPU_RECIPE) keeps a technique only when the 95 % CI of its "
            "paired difference lies above 0 here (\"better\"); a "
            "point estimate above 0 with a CI that includes 0 does not count. The model card of "
            "the final run reports its own test numbers.")


def _share_text(share: float | None, reused: int = 0) -> str:
    if reused:
        return (f"{reused} finished run folders were reused from an earlier invocation of the "
                "same command, so the CPU share other jobs took while they trained is not "
                "known to this one")
    if share is None:
        return "the CPU time of other jobs was not measured"
    return f"other jobs took {100 * share:.0f} % of its CPU time while this command ran"


def _recipe_fields(config: TrainConfig) -> dict[str, Any]:
    from utils.training.budget import CPU_RECIPE

    return {k: getattr(config, k) for k in CPU_RECIPE if k not in PREDICTION_FIELDS}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=None, help="dataset folder (default: synthetic)")
    parser.add_argument("--dataset", default="ham10000", choices=("ham10000", "isic2019"))
    parser.add_argument("--budget", default="cpu-5min", help="budget of each screening run")
    parser.add_argument("--budget-s", type=non_negative_float, default=None,
                        help="override the budget's seconds per run")
    parser.add_argument("--seeds", type=non_negative_int, nargs="+", default=[0, 1])
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS),
                        choices=list(VARIANTS))
    parser.add_argument("--runs-root", default=None,
                        help="where the run folders go (default runs/recipe_selection)")
    parser.add_argument("--report", default="reports/cpu_recipe_selection",
                        help="report path without suffix (.md and .json are written)")
    parser.add_argument("--epochs", type=positive_int, default=None,
                        help="equal compute instead of equal wall clock: this many epochs at the "
                             "base image size (scaled by pixel count at other sizes); for a "
                             "machine shared with other jobs, where wall clock is not comparable")
    parser.add_argument("--n-boot", type=non_negative_int, default=1000)


def base_config(args: argparse.Namespace) -> TrainConfig:
    from utils.training import budget

    dataset = args.dataset if args.data_dir else "synthetic"
    config = budget.apply_budget(args.budget, TrainConfig(dataset=dataset,
                                                          data_dir=args.data_dir))
    if args.budget_s is not None:
        config = replace(config, budget_s=float(args.budget_s))
    return config


def run(args: argparse.Namespace) -> int:
    base = base_config(args)
    root = Path(args.runs_root) if args.runs_root else paths.runs_dir() / "recipe_selection"
    command = "python -m utils select-recipe " + " ".join(sys.argv[2:]) if \
        sys.argv[1:2] == ["select-recipe"] else "python -m utils select-recipe"
    from utils.training import budget

    started, cpu = time.time(), budget.cpu_snapshot()
    result = select(base, args.seeds, args.variants, root, args.n_boot, args.epochs)
    result["others_share"] = budget.others_share(cpu, budget.cpu_snapshot())
    md, _ = write_report(result, base, command, Path(args.report), args.seeds, args.epochs)
    print(f"report: {paths.display(md)} ({time.time() - started:.0f} s)")
    return 0

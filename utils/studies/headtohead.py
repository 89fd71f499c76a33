"""The paper's backbones head to head at equal cost: one recipe, one image size, one split, the
same wall-clock budget each.

    python -m utils headtohead --data-dir ../shared/data/HAM10000 --budget cpu-5min \\
        --report reports/backbones_head_to_head

Each backbone trains with the budget's recipe (utils.training.budget) at one image size (default:
the largest minimum input size among them, 75 px for the Inception networks), sized by the same
measurement to the same wall clock, on the same lesion-grouped split (seed 0). Each model's test
split is predicted once and scored with lesion-bootstrap CIs; the table also gives the measured
training images per second (after tracing), the tracing time, the epochs that fitted and the
validation balanced accuracy of the epoch kept. Runs are resumable: finished run folders are
reused. With `--weights imagenet` on a machine that has the ImageNet weights (and a GPU for the
larger networks), the same command fine-tunes in two stages and writes the same table.
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
from typing import Any, Sequence

import pandas as pd

from utils import fileio, paths
from utils.arguments import non_negative_float, non_negative_int, positive_int
from utils.tables import format_ci, markdown_table
from utils.training import backbones, runs
from utils.training.config import TrainConfig

PAPER_BACKBONES = ("VGG16", "ResNet50", "InceptionV3", "DenseNet121", "DenseNet201",
                   "InceptionResNetV2", "EfficientNetB0", "MobileNetV2")
HEADLINE = ("balanced_accuracy", "macro_f1", "macro_auc")


def common_size(names: Sequence[str]) -> int:
    """The smallest image size every backbone accepts (the largest of their minimum sizes)."""
    return max(backbones.get_backbone(n).min_size for n in names)


def shared_manifest(config: TrainConfig) -> pd.DataFrame:
    """The lesion-grouped split (seed 0) every backbone trains and is tested on."""
    from utils.training.data import build_manifest

    return build_manifest(replace(config, seed=0))


def score_one(run_dir: Path, n_boot: int) -> dict[str, Any]:
    """Test metrics with CIs (the model's single read of the test split) and the run's facts."""
    import keras

    from utils.evaluation import evaluate
    from utils.training import models

    result = evaluate.evaluate(run_dir, split="test", n_boot=n_boot, plots=False)
    info = json.loads((run_dir / runs.RUN_INFO).read_text())
    report = json.loads((run_dir / runs.BUDGET).read_text()) if \
        (run_dir / runs.BUDGET).is_file() else {}
    measured = (report.get("measured") or [{}])[-1]
    params = models.load_model(run_dir / runs.MODEL, compile=False).count_params()
    keras.backend.clear_session()
    return {
        "params_m": params / 1e6,
        "trace_s": measured.get("trace_s"),
        "train_images_per_s": measured.get("train_images_per_s"),
        "epochs": info.get("epochs_completed"),
        "steps_per_epoch": report.get("chosen", {}).get("steps_per_epoch"),
        "duration_s": info.get("duration_s"),
        "best_val_balanced_accuracy": info.get("best_val_balanced_accuracy"),
        "others_share": report.get("outcome", {}).get("other_processes_cpu_share"),
        "test": {name: result["metrics"][name] for name in HEADLINE},
        "test_images": result["n_images"],
    }


def head_to_head(base: TrainConfig, names: Sequence[str], size: int, root: Path,
                 n_boot: int = 1000) -> dict[str, dict[str, Any]]:
    """Train (or reuse) and score every backbone in turn."""
    from utils.training import train

    manifest = shared_manifest(base)
    if base.cache:  # write the cache of resized images before any backbone's clock starts
        from utils.training.data import dataset_info, make_datasets

        make_datasets(manifest, replace(base, image_size=size), dataset_info(base).num_classes)
    results = {}
    for name in names:
        spec = backbones.get_backbone(name)
        config = replace(base, backbone=spec.name, image_size=size)
        run_dir = root / f"{spec.key}-{size}"
        print(f"[headtohead] {spec.name} @ {size} px", flush=True)
        train.train(config, run_dir=run_dir, manifest=manifest)  # a finished one: reused
        results[spec.name] = {"run_dir": paths.display(run_dir), **score_one(run_dir, n_boot)}
    return results


def table_rows(results: dict[str, dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for name, r in results.items():
        epochs = r["epochs"]
        if r.get("steps_per_epoch") and epochs == 1:
            epochs = f"1 ({r['steps_per_epoch']} steps)"
        rows.append([name, f"{r['params_m']:.1f}", _num(r["trace_s"], 0),
                     _num(r["train_images_per_s"], 1), epochs,
                     _num(r["best_val_balanced_accuracy"], 3),
                     *(format_ci(r["test"][m]) for m in HEADLINE), _num(r["duration_s"], 0)])
    return rows


def _num(value: Any, digits: int) -> str:
    return "" if value is None else f"{float(value):.{digits}f}"


HEADER = ["backbone", "params (M)", "tracing (s)", "train img/s", "epochs",
          "val BA (kept epoch)", "test balanced accuracy [CI]", "test macro-F1 [CI]",
          "test macro AUC [CI]", "wall clock (s)"]


def write_report(results: dict[str, dict[str, Any]], base: TrainConfig, size: int,
                 command: str, out: Path) -> Path:
    """<out>.md, <out>.csv and <out>.json."""
    shares = [r["others_share"] for r in results.values() if r["others_share"] is not None]
    n_test = next(iter(results.values()))["test_images"] if results else 0
    weights = base.weights or "none (from scratch)"
    lines = [
        "# The paper's backbones head to head at equal cost",
        "",
        f"Generated by `{command}` (utils/studies/headtohead.py) on this project's "
        f"{os.cpu_count()}-core CPU machine (no GPU; {platform.processor() or 'CPU'}"
        + (f"; other jobs took on average {100 * sum(shares) / len(shares):.0f} % of its CPU "
           "time during the runs" if shares else "") + "); every number comes from that command.",
        "",
        f"- Every backbone: the `{base.budget}` recipe ({float(base.budget_s):.0f} s of wall "
        f"clock per model for data, tracing, training, validation and predictions; epochs sized "
        f"by measuring each model on the machine), {size} px (the largest minimum input size "
        f"among them), weights {weights}, the same lesion-grouped split (seed 0) and seed "
        f"{base.seed}.",
        f"- Test: {n_test} images, each model's plain (one-view) predictions read once, "
        "whatever the recipe's prediction mode; 95 % CIs from 1,000 "
        "lesion-bootstrap replicates. `train img/s`: training throughput measured after "
        "tracing (batch " + f"{base.batch_size}). `val BA`: validation balanced accuracy of the "
        "epoch kept (checkpoint selection on validation).",
        "",
        markdown_table(table_rows(results), HEADER),
        "",
        "Reading: at equal wall clock on a CPU, a network's speed decides how many epochs it gets; "
        "the slow networks see only a fraction of the training set and score near chance, so "
        "this table ranks cost-effectiveness on this machine, not what each architecture can "
        "reach. With ImageNet weights and a GPU the same command "
        "(`--weights imagenet`, two-stage fine-tuning, the budget sized on that machine) "
        "produces the same table for that setting.",
    ]
    md = fileio.write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    frame = pd.DataFrame(table_rows(results), columns=HEADER)
    fileio.write_csv(out.with_suffix(".csv"), frame)
    fileio.write_json(out.with_suffix(".json"), {"command": command, "image_size": size,
                                                 "config": base.to_dict(), "results": results})
    return md


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=None, help="dataset folder (default: synthetic)")
    parser.add_argument("--dataset", default="ham10000", choices=("ham10000", "isic2019"))
    parser.add_argument("--budget", default="cpu-5min", help="budget of each backbone's run")
    parser.add_argument("--budget-s", type=non_negative_float, default=None,
                        help="override the budget's seconds per backbone")
    parser.add_argument("--backbones", nargs="+", default=list(PAPER_BACKBONES))
    parser.add_argument("--image-size", type=positive_int, default=None,
                        help="default: the largest minimum size among the backbones")
    parser.add_argument("--weights", default=None, help="imagenet | none (default: the recipe's)")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--runs-root", default=None,
                        help="where the run folders go (default runs/headtohead)")
    parser.add_argument("--report", default="reports/backbones_head_to_head",
                        help="report path without suffix (.md, .csv and .json are written)")
    parser.add_argument("--n-boot", type=non_negative_int, default=1000)


def run(args: argparse.Namespace) -> int:
    from utils.training import budget

    dataset = args.dataset if args.data_dir else "synthetic"
    base = budget.apply_budget(args.budget, TrainConfig(dataset=dataset, data_dir=args.data_dir,
                                                        seed=args.seed))
    if args.budget_s is not None:
        base = replace(base, budget_s=float(args.budget_s))
    if args.weights is not None:
        base = replace(base, weights=None if args.weights.lower() == "none" else args.weights)
    size = args.image_size or common_size(args.backbones)
    root = Path(args.runs_root) if args.runs_root else paths.runs_dir() / "headtohead"
    command = "python -m utils headtohead " + " ".join(sys.argv[2:]) if \
        sys.argv[1:2] == ["headtohead"] else "python -m utils headtohead"
    started = time.time()
    results = head_to_head(base, args.backbones, size, root, args.n_boot)
    md = write_report(results, base, size, command, Path(args.report))
    print(f"report: {paths.display(md)} ({time.time() - started:.0f} s)")
    return 0

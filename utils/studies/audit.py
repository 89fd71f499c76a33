"""Leakage audit: the published protocol against the lesion-grouped protocol.

The published repository (Villa-Pulgarin et al. 2022) augmented every image of each class folder
*before* splitting, then split the folder with an interleaved counter (every 6th file to
validation, every 12th to test), ignoring `lesion_id`. Images of one lesion, and augmented copies
of one image, therefore sit on both sides of the split. This module trains the same model with the
same budget on the same images under both protocols and reports both test scores and the gap:

    python -m utils audit --data-dir ../shared/data/HAM10000 --out reports/leakage_audit.md

Both protocols see exactly the same images (optionally capped per class, by whole lesions, to fit
a CPU budget) and balance every class to the same target with the same transforms and seed.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from utils import fileio, paths
from utils.arguments import non_negative_int
from utils.data.manifest import save_manifest
from utils.errors import ConfigError
from utils.training import runs
from utils.training.config import TrainConfig

PROTOCOLS = ("paper", "lesion")


@dataclass(frozen=True)
class AuditConfig:
    """Settings shared by both protocols (the 'same model, same budget' of the audit)."""

    dataset: str = "synthetic"  # ham10000 | isic2019 | synthetic (generated default)
    data_dir: str | None = None  # dataset folder; None -> the synthetic default
    synthetic_images: int = 1000  # size of the synthetic default
    cap_per_class: int | None = None  # keep at most this many images per class (whole lesions)
    target_per_class: int | None = None  # balance every class to this many images (None = max)
    backbone: str = "mobilenetv2"  # registry name
    image_size: int = 64  # input side in pixels
    weights: str | None = None  # None (from scratch) | "imagenet" | weights file
    epochs: int = 8  # epochs of each protocol's training
    batch_size: int = 32  # batch size of both
    seed: int = 0  # one seed for subsetting, balancing, splitting and training
    n_boot: int = 1000  # bootstrap replicates for the confidence intervals


def cap_per_class(table: pd.DataFrame, cap: int | None, seed: int) -> pd.DataFrame:
    """At most `cap` images per class, drawn as whole lesions in a seeded order."""
    if cap is None:
        return table
    rng = np.random.default_rng(seed)
    keep = []
    for _, rows in table.groupby("label", sort=True):
        lesions = rows["lesion_id"].drop_duplicates().to_numpy()
        rng.shuffle(lesions)
        sizes = rows.groupby("lesion_id").size()
        cumulative = np.cumsum(sizes.loc[lesions].to_numpy())
        chosen = set(lesions[cumulative <= cap]) or {lesions[0]}
        keep.append(rows[rows["lesion_id"].isin(chosen)])
    capped = pd.concat(keep).sort_index()
    capped.attrs = dict(table.attrs)
    return capped


def paper_manifest(table: pd.DataFrame, config: AuditConfig, out_dir: Path) -> pd.DataFrame:
    """Published protocol: augment whole class folders (every image), then the counter split."""
    from utils.augmentation import balance
    from utils.data import splits

    everything = table.assign(split="train")
    everything.attrs = dict(table.attrs)
    balanced = balance.balance_manifest(everything, out_dir, target=config.target_per_class,
                                        seed=config.seed, image_size=config.image_size)
    manifest = splits.paper_counter_split(balanced)
    manifest.attrs = dict(table.attrs)
    return manifest


def lesion_manifest(table: pd.DataFrame, config: AuditConfig, out_dir: Path) -> pd.DataFrame:
    """Our protocol: lesion-grouped split first, then balance the training split only."""
    from utils.augmentation import balance
    from utils.data import splits

    manifest = splits.lesion_split(table, seed=config.seed)
    balanced = balance.balance_manifest(manifest, out_dir, target=config.target_per_class,
                                        seed=config.seed, image_size=config.image_size)
    balanced.attrs = dict(table.attrs)
    return balanced


def leakage(manifest: pd.DataFrame) -> dict[str, Any]:
    """How much of the test split is already in training: shared lesions and augmented kin."""
    test = manifest[manifest["split"] == "test"]
    train = manifest[manifest["split"] == "train"]
    source = manifest.get("source_image_id", pd.Series("", index=manifest.index)).fillna("")
    origin = source.where(source != "", manifest["image_id"])  # the raw image each row comes from
    train_origins = set(origin[train.index])
    return {
        "n_train": int(len(train)),
        "n_val": int((manifest["split"] == "val").sum()),
        "n_test": int(len(test)),
        "test_augmented_share": float(test.get("augmented", pd.Series(False, index=test.index))
                                      .fillna(False).astype(bool).mean()) if len(test) else 0.0,
        "test_lesion_in_train_share": float(test["lesion_id"].isin(set(train["lesion_id"])).mean())
        if len(test) else 0.0,
        "test_origin_in_train_share": float(origin[test.index].isin(train_origins).mean())
        if len(test) else 0.0,
    }


def train_config(config: AuditConfig, manifest_path: Path) -> TrainConfig:
    """The one training configuration both protocols use; only the manifest differs."""
    return TrainConfig(
        dataset=config.dataset,
        data_dir=config.data_dir,
        manifest=str(manifest_path),
        backbone=config.backbone,
        image_size=config.image_size,
        weights=config.weights,
        epochs=config.epochs,
        stage1_epochs=max(1, config.epochs // 4),
        stage2_epochs=config.epochs - config.epochs // 4,
        batch_size=config.batch_size,
        augment="offline",
        imbalance="class_weight",
        patience=0,
        seed=config.seed,
        synthetic_images=config.synthetic_images,
    )


def run_protocol(protocol: str, table: pd.DataFrame, config: AuditConfig,
                 work_dir: Path) -> dict[str, Any]:
    """Build one protocol's manifest, train, evaluate its own test split; returns a summary."""
    from utils.evaluation import evaluate
    from utils.training import train

    build = paper_manifest if protocol == "paper" else lesion_manifest
    manifest = build(table, config, work_dir / f"{protocol}-augmented")
    manifest_path = work_dir / f"{protocol}-manifest.csv"
    save_manifest(manifest, manifest_path)
    run_dir = work_dir / f"{protocol}-run"
    started = time.time()
    train.train(train_config(config, manifest_path), run_dir=run_dir)
    result = evaluate.evaluate(run_dir, split="test", n_boot=config.n_boot, seed=config.seed)
    return {"protocol": protocol, "run_dir": paths.display(run_dir),
            "train_seconds": round(time.time() - started, 1), **leakage(manifest),
            "metrics": {name: result["metrics"][name] for name in
                        ("balanced_accuracy", "accuracy", "macro_f1", "macro_auc")}}


def load_table(config: AuditConfig) -> pd.DataFrame:
    """The dataset table (the synthetic default is generated on first use)."""
    from utils.data import readers
    from utils.training import data as training_data

    probe = TrainConfig(
        dataset=config.dataset,
        data_dir=config.data_dir,
        synthetic_images=config.synthetic_images,
        seed=config.seed,
    )
    return readers.read_table(training_data.data_dir(probe))


def check_inputs(config: AuditConfig) -> None:
    """ConfigError / DataError for settings no training could use or a missing data folder."""
    from utils.data import readers

    train_config(config, Path(runs.MANIFEST)).resolve(gpu_visible=False)
    if config.data_dir is not None:
        readers.detect_layout(config.data_dir)


def audit(config: AuditConfig, work_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Run both protocols (resumable: finished runs are reused) and return the comparison."""
    work_dir = Path(work_dir or paths.runs_dir() / f"leakage-audit-{config.dataset}")
    check_inputs(config)  # before any folder is made
    work_dir.mkdir(parents=True, exist_ok=True)
    saved = work_dir / "audit_config.json"
    if saved.is_file() and json.loads(saved.read_text()) != dataclasses.asdict(config):
        raise ConfigError(f"{paths.display(work_dir)} holds an audit with other settings; "
                         f"choose another --work-dir or delete that folder")
    fileio.write_json(saved, dataclasses.asdict(config))
    table = cap_per_class(load_table(config), config.cap_per_class, config.seed)
    results = {}
    for protocol in PROTOCOLS:
        done = work_dir / f"{protocol}-result.json"
        if not done.is_file():
            fileio.write_json(done, run_protocol(protocol, table, config, work_dir))
        results[protocol] = json.loads(done.read_text())
    paper = results["paper"]["metrics"]["balanced_accuracy"]["value"]
    lesion = results["lesion"]["metrics"]["balanced_accuracy"]["value"]
    return {"config": dataclasses.asdict(config), "n_images": int(len(table)),
            "n_lesions": int(table["lesion_id"].nunique()), "results": results,
            "balanced_accuracy_gap": None if paper is None or lesion is None else paper - lesion}


def final_train_accuracy(run_dir: str) -> float | None:
    """Training accuracy of a run's last epoch (history.csv), to show how far it fitted."""
    history = paths.repo_root() / run_dir / "history.csv"
    if not history.is_file():
        return None
    frame = pd.read_csv(history)
    return float(frame["accuracy"].iloc[-1]) if "accuracy" in frame and len(frame) else None


def _ci(stats: dict[str, Any]) -> str:
    if stats["value"] is None:
        return "n/a"
    return f"{stats['value']:.3f} [{stats['ci_low']:.3f}, {stats['ci_high']:.3f}]"


def markdown(summary: dict[str, Any], command: str) -> str:
    """The audit report (reports/leakage_audit.md)."""
    config = summary["config"]
    lines = [
        "# Leakage audit: published protocol vs lesion-grouped protocol", "",
        f"Generated by `{command}` (utils/studies/audit.py). Do not edit by hand.", "",
        f"Data: {config['dataset']} ({config['data_dir'] or 'synthetic default'}), "
        f"{summary['n_images']} images of {summary['n_lesions']} lesions"
        + (f" (at most {config['cap_per_class']} images per class, whole lesions)"
           if config["cap_per_class"] else "") + ".",
        f"Model and budget, identical for both: {config['backbone']} at {config['image_size']} px, "
        f"weights={config['weights']!r}, {config['epochs']} epochs, batch {config['batch_size']}, "
        f"seed {config['seed']}; every class balanced to "
        f"{config['target_per_class'] or 'the largest class'} images with the same transforms.", "",
        "| protocol | train / val / test images | test images whose lesion is in train | "
        "test images whose source image is in train | test balanced accuracy [95 % CI] | "
        "macro-F1 | macro AUC |",
        "|---|---|---|---|---|---|---|",
    ]
    names = {"paper": "published: augment class folders, then counter split",
             "lesion": "ours: lesion-grouped split, then balance train only"}
    for protocol in PROTOCOLS:
        r = summary["results"][protocol]
        m = r["metrics"]
        lines.append(
            f"| {names[protocol]} | {r['n_train']} / {r['n_val']} / {r['n_test']} | "
            f"{r['test_lesion_in_train_share']:.1%} | {r['test_origin_in_train_share']:.1%} | "
            f"{_ci(m['balanced_accuracy'])} | {_ci(m['macro_f1'])} | {_ci(m['macro_auc'])} |")
    gap = summary["balanced_accuracy_gap"]
    fitted = {p: final_train_accuracy(summary["results"][p]["run_dir"]) for p in PROTOCOLS}
    lines += ["", f"Gap (published − lesion-grouped) in test balanced accuracy: "
              f"**{gap:+.3f}**." if gap is not None else "Gap: n/a.", ""]
    if all(value is not None for value in fitted.values()):
        lines += [f"Training accuracy in the last epoch: published {fitted['paper']:.3f}, "
                  f"lesion-grouped {fitted['lesion']:.3f}. The leak pays off only as far as a "
                  "model memorises what it saw, so the gap measured here holds for this budget "
                  "and model; rerun the command with more epochs, a larger image size or "
                  "pre-trained weights to measure it for those.", ""]
    lines.append("The published protocol's test score is measured on images whose lesions, and "
                 "augmented copies of which, were trained on; only the lesion-grouped score "
                 "estimates performance on new lesions. Confidence intervals: percentile "
                 "bootstrap over lesions (images where no lesion id is known).")
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for item in dataclasses.fields(AuditConfig):
        flag = "--" + item.name.replace("_", "-")
        kind = {"int": non_negative_int, "int | None": non_negative_int}.get(str(item.type), str)
        parser.add_argument(flag, type=kind, default=None, metavar=item.name.upper())
    parser.add_argument("--work-dir", default=None, help="where manifests and runs go "
                        "(default runs/leakage-audit-<dataset>; reused to resume)")
    parser.add_argument("--out", default=str(paths.reports_dir() / "leakage_audit.md"),
                        help="markdown report (a JSON twin is written beside it)")


def run(args: argparse.Namespace) -> int:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(AuditConfig)
              if getattr(args, f.name) is not None}
    if values.get("weights", "").lower() in ("none", "null"):
        values["weights"] = None
    if "data_dir" in values and "dataset" not in values:
        values["dataset"] = "ham10000"
    config = replace(AuditConfig(), **values)
    summary = audit(config, args.work_dir)
    command = "python -m utils audit " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in values.items())
    out = Path(args.out)
    fileio.write_text(out, markdown(summary, command.strip()))
    fileio.write_json(out.with_suffix(".json"), summary)
    print(markdown(summary, command.strip()))
    print(f"report: {paths.display(out)}")
    return 0

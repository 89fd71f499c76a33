"""Leakage audit: the published protocol against the lesion-grouped protocol, paired.

    python -m utils audit --data-dir ../shared/data/HAM10000 --dataset ham10000
    python -m utils audit --data-dir data/raw/ISIC_2019 --dataset isic2019 --weights imagenet

Design (utils/studies/paper_protocol.py has the two protocols, audit_stats.py the statistics):
1. A clean test set is held out first: lesion-disjoint, class-stratified, untouched originals
   (`clean_test_fraction` of the lesions). Neither protocol ever sees it.
2. On the remaining images both protocols build their manifests: the published one (whole class
   folders augmented with the published recipe and copies, then the published counter split) and
   ours (lesion-grouped split, then balancing of the training split only).
3. The same backbone trains under each protocol for the same number of optimizer steps (epochs
   counted over the published training split; both get epochs x its steps per epoch), the same
   schedule (cosine decay), no checkpoint selection (the published notebooks kept the last
   epoch), for every seed; each model is scored on its own protocol's test split and on the clean
   test: accuracy (the paper's metric) and balanced accuracy with lesion-bootstrap CIs, and the
   inflation (own - clean) with a paired bootstrap over seeds and lesions.
4. A budget sweep (image size x epochs, first seed) shows how the inflation grows as the models
   memorise; near-duplicate images across lesion ids and a metadata-only classifier are counted.

Everything goes under the work folder (default runs/leakage-audit-<dataset>/); finished runs are
reused, so a killed audit resumes. The report is written there unless --out names a path.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import time
import typing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from utils import fileio, paths
from utils.arguments import checked, non_negative_int, positive_int, probability
from utils.data import datasets
from utils.data.manifest import load_manifest, save_manifest
from utils.errors import ConfigError
from utils.studies import paper_protocol
from utils.studies.paper_protocol import PROTOCOLS
from utils.training.config import TrainConfig

MANIFESTS = {"published": "published-manifest.csv", "lesion": "lesion-manifest.csv",
             "clean": "clean-test-manifest.csv"}
PUBLISHED_ACCURACY = 0.9787  # DenseNet201, HAM10000: 3,498 / 3,574 on its own test split
# Settings that choose which models to run or report, not how they are made: a work folder
# resumes with other values of these (finished models are found by size, epochs and seed).
DATASETS = ("ham10000", "isic2019", "synthetic")
RUN_FIELDS = ("image_size", "epochs", "sweep", "seeds", "n_boot", "workers", "run_eagerly")


@dataclass(frozen=True)
class AuditConfig:
    """Everything the audit depends on (its JSON twin records the resolved values)."""

    dataset: str = "synthetic"  # ham10000 | isic2019 | synthetic (generated, HAM10000 layout)
    data_dir: str | None = None  # dataset folder (read only); None: the synthetic default
    synthetic_images: int = 1000  # images of the synthetic default
    cap_per_class: int | None = None  # at most this many images per class, whole lesions
    clean_test_fraction: float = 0.15  # share of each class's images held out first (lesions)
    copies: str | None = None  # copies per image, e.g. "akiec=25,df=62" (None: the published)
    collisions: bool = True  # replay save_to_dir's name collisions (10**4 names per class folder)
    balance_target: int | None = None  # ours: training images per class (None: largest class)
    backbone: str = "mobilenetv2"  # a name of utils.training.backbones, the same for both
    weights: str | None = None  # None (from scratch) | "imagenet" | a weights file
    image_size: int = 64  # input side in pixels of the main budget
    epochs: int = 4  # main budget: epochs over the published protocol's training split
    sweep: str = "32x2,64x8"  # more budgets SIZExEPOCHS, first seed only ("" = none)
    batch_size: int = 32  # batch size of both protocols
    learning_rate: float = 1e-3  # Adam, cosine decay to zero over the budget
    seeds: str = "0,1,2"  # training seeds of the main budget (>= 3 for the paired CIs)
    data_seed: int = 0  # seed of the clean test, our split, both augmentations and collisions
    n_boot: int = 1000  # bootstrap replicates of every confidence interval
    workers: int = 2  # threads writing augmented images and reading images for the hashes
    run_eagerly: bool = False  # no graph tracing: faster only for tiny (test) runs

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ConfigError(f"dataset {self.dataset!r} is not one of {', '.join(DATASETS)}")
        if not 0 < self.clean_test_fraction < 0.5:
            raise ConfigError(f"clean_test_fraction must lie in (0, 0.5), got "
                              f"{self.clean_test_fraction}")
        try:
            if len(self.seed_list) < 1:
                raise ValueError
        except ValueError:
            raise ConfigError(f"seeds {self.seeds!r}: name at least one integer seed, e.g. "
                              "0,1,2") from None
        self.budgets()  # validates the sweep

    @property
    def seed_list(self) -> list[int]:
        return [int(s) for s in str(self.seeds).split(",") if s.strip()]

    def budgets(self) -> list[tuple[int, int]]:
        """[(image size, epochs)]: the main budget first, then the sweep."""
        found = [(self.image_size, self.epochs)]
        for item in filter(None, (part.strip() for part in self.sweep.split(","))):
            size, _, epochs = item.partition("x")
            if not (size.isdigit() and epochs.isdigit()):
                raise ConfigError(f"bad sweep item {item!r}: use SIZExEPOCHS, e.g. 32x2,64x8")
            if (int(size), int(epochs)) not in found:
                found.append((int(size), int(epochs)))
        return found


# --- data -----------------------------------------------------------------------------------------

def load_table(config: AuditConfig) -> pd.DataFrame:
    """The dataset table (the synthetic default is generated on first use), capped if asked."""
    from utils.data import location, readers

    layout = "isic2019" if config.dataset == "isic2019" else "ham10000"
    folder = location.dataset_folder(config.data_dir, layout, config.synthetic_images,
                                     config.data_seed)
    table = readers.read_table(folder)
    return cap_per_class(table, config.cap_per_class, config.data_seed)


def cap_per_class(table: pd.DataFrame, cap: int | None, seed: int) -> pd.DataFrame:
    """At most `cap` images per class, drawn as whole lesions in a seeded order (table order)."""
    import numpy as np

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


def build_manifests(table: pd.DataFrame, config: AuditConfig,
                    work_dir: Path) -> dict[str, pd.DataFrame]:
    """The clean test and both protocols' manifests (written once, then read back)."""
    from utils.data import splits

    if all((work_dir / name).is_file() for name in MANIFESTS.values()):
        return {key: load_manifest(work_dir / name) for key, name in MANIFESTS.items()}
    f = config.clean_test_fraction
    held = splits.lesion_split(table, (1.0 - f, 0.0, f), seed=config.data_seed)
    clean = held[held["split"] == "test"]
    pool = held[held["split"] == "train"].drop(columns="split")
    pool.attrs = dict(table.attrs)
    manifests = {
        "published": paper_protocol.published_manifest(
            pool, work_dir / "published-images", config.dataset, config.data_seed,
            copies_used(config, table),
            config.collisions, config.workers),
        "lesion": paper_protocol.lesion_manifest(pool, work_dir / "balanced-images",
                                                 config.data_seed, config.balance_target),
        "clean": clean,
    }
    for key, manifest in manifests.items():
        save_manifest(manifest, work_dir / MANIFESTS[key])
    return {key: load_manifest(work_dir / name) for key, name in MANIFESTS.items()}


def copies_used(config: AuditConfig, table: pd.DataFrame) -> dict[str, int]:
    """The copies per source image of the published protocol (given, or the published ones)."""
    from utils.augmentation.published import copies_for, parse_copies

    if config.copies:
        return parse_copies(config.copies)
    return copies_for(config.dataset, list(datasets.class_order(table["label"])))


# --- one model ------------------------------------------------------------------------------------

def train_config(config: AuditConfig, protocol: str, manifest_path: Path, size: int, epochs: int,
                 steps_per_epoch: int, seed: int) -> TrainConfig:
    """The training configuration of one model; only the manifest differs between protocols."""
    pretrained = config.weights is not None
    return TrainConfig(
        dataset=config.dataset, data_dir=config.data_dir, manifest=str(manifest_path),
        backbone=config.backbone, image_size=size, weights=config.weights, epochs=epochs,
        stage1_epochs=max(1, epochs // 4) if pretrained else 0,
        stage2_epochs=epochs - epochs // 4 if pretrained else 0,
        learning_rate=config.learning_rate, stage1_lr=config.learning_rate,
        stage2_lr=config.learning_rate / 10, lr_schedule="cosine", batch_size=config.batch_size,
        steps_per_epoch=steps_per_epoch, augment="offline", imbalance="none", patience=0,
        select_best=False, seed=seed, synthetic_images=config.synthetic_images, verbose=2,
        run_eagerly=config.run_eagerly)


def clean_predictions(run_dir: Path, clean: pd.DataFrame) -> pd.DataFrame:
    """The run's model.keras on the clean test (its own preprocessing and resize policy)."""
    from utils.scoring.predictions import predictions_frame
    from utils.training import models, pipeline, runs
    from utils.training.data import dataset_info

    run = runs.load_run(run_dir)
    model = models.load_model(run.model_path, compile=False)
    classes = dataset_info(run.config).classes
    data = pipeline.make_dataset(clean, run.config.image_size, run.config.batch_size,
                                 training=False, num_classes=len(classes),
                                 resize_policy=run.config.resize_policy)
    return predictions_frame(clean, model.predict(data, verbose=0), classes)


def run_model(config: AuditConfig, protocol: str, size: int, epochs: int, seed: int,
              manifests: dict[str, pd.DataFrame], work_dir: Path) -> Path:
    """Train (or resume) one model and write its clean-test predictions; returns its folder."""
    from utils.training import runs, train

    run_dir = work_dir / "runs" / f"{protocol}-{size}px-{epochs}ep-seed{seed}"
    clean_csv = run_dir / runs.predictions_name("clean")
    if clean_csv.is_file():
        return run_dir
    n_train = int((manifests["published"]["split"] == "train").sum())
    steps = math.ceil(n_train / config.batch_size)
    train.train(train_config(config, protocol, work_dir / MANIFESTS[protocol], size, epochs,
                             steps, seed), run_dir=run_dir)
    fileio.write_csv(clean_csv, clean_predictions(run_dir, manifests["clean"]))
    import keras

    keras.backend.clear_session()  # free the graph before the next model
    return run_dir


def check_inputs(config: AuditConfig) -> None:
    """ConfigError / DataError for settings no training could use or a missing data folder."""
    from utils.data import readers

    for size, epochs in config.budgets():
        train_config(config, "published", Path("manifest.csv"), size, epochs, 1,
                     config.seed_list[0]).resolve(gpu_visible=False)
    if config.data_dir is not None:
        readers.detect_layout(config.data_dir)


# --- the study ------------------------------------------------------------------------------------

def audit(config: AuditConfig, work_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Run the whole audit (resumable) and return its summary (the JSON report)."""
    from utils.studies import audit_checks
    from utils.training import runs

    started = time.time()
    work_dir = Path(work_dir or paths.runs_dir() / f"leakage-audit-{config.dataset}").resolve()
    check_inputs(config)  # before any folder is made
    work_dir.mkdir(parents=True, exist_ok=True)
    saved = work_dir / "audit_config.json"
    settings = json.loads(json.dumps(dataclasses.asdict(config)))
    if saved.is_file():
        before = json.loads(saved.read_text())
        changed = [k for k in settings if k not in RUN_FIELDS and before.get(k) != settings[k]]
        if changed:
            raise ConfigError(f"{paths.display(work_dir)} holds an audit whose "
                              f"{', '.join(changed)} differ; choose another --work-dir or delete "
                              "that folder")
    fileio.write_json(saved, settings)
    table = load_table(config)
    manifests = build_manifests(table, config, work_dir)
    results: dict[str, Any] = {"budgets": []}
    for index, (size, epochs) in enumerate(config.budgets()):
        seeds = config.seed_list if index == 0 else config.seed_list[:1]
        frames: dict[tuple[int, str], dict[str, pd.DataFrame]] = {}
        for seed in seeds:
            for protocol in PROTOCOLS:
                run_dir = run_model(config, protocol, size, epochs, seed, manifests, work_dir)
                run = runs.load_run(run_dir)
                frames[(seed, protocol)] = {"own_test": run.predictions("test"),
                                            "clean_test": run.predictions("clean")}
        results["budgets"].append(audit_checks.budget_result(
            size, epochs, seeds, frames, config.n_boot, config.data_seed, work_dir))
    summary = {
        "config": settings, "command": None, "published_accuracy": PUBLISHED_ACCURACY,
        "data": audit_checks.data_summary(table, manifests),
        "copies": copies_used(config, table),
        "leakage": {p: paper_protocol.leakage(manifests[p]) for p in PROTOCOLS},
        **results,
        "near_duplicates": audit_checks.near_duplicates(table, manifests, config),
        "metadata_leak": audit_checks.metadata_check(table, config),
        "seconds": round(time.time() - started, 1),
        "train_seconds": round(sum(runs.load_run(p).info.get("duration_s", 0.0)
                                   for p in sorted((work_dir / "runs").iterdir())), 1),
    }
    return summary


# --- command line ---------------------------------------------------------------------------------

# argparse types of the options whose values a plain str/int/float does not check
OPTION_TYPES = {"dataset": checked(lambda text: _choice(text, DATASETS), "dataset"),
                "backbone": checked(lambda text: backbone_name(text), "backbone"),
                "clean_test_fraction": probability, "image_size": positive_int,
                "epochs": positive_int, "batch_size": positive_int, "n_boot": positive_int,
                "workers": positive_int, "synthetic_images": positive_int}


def _choice(text: str, choices: tuple[str, ...]) -> str:
    if text not in choices:
        raise ValueError(f"{text!r} is not one of {', '.join(choices)}")
    return text


def backbone_name(text: str) -> str:
    from utils.training.config import backbone_name as check

    return check(text)


def _option_type(name: str, annotation: Any) -> Any:
    if name in OPTION_TYPES:
        return OPTION_TYPES[name]
    text = str(annotation)
    for kind_name, kind in (("bool", bool), ("float", float), ("int", non_negative_int)):
        if kind_name in text:
            return kind
    return str


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per AuditConfig field, its comment as help, its default shown."""
    from utils.training.config import field_comments

    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    comments = field_comments(AuditConfig)
    hints = typing.get_type_hints(AuditConfig)
    for item in dataclasses.fields(AuditConfig):
        flag = "--" + item.name.replace("_", "-")
        kind = _option_type(item.name, hints[item.name])
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=item.default,
                                help=comments.get(item.name))
        else:
            parser.add_argument(flag, type=kind, default=item.default,
                                metavar=item.name.upper(), help=comments.get(item.name))
    parser.add_argument("--work-dir", default=None,
                        help="manifests, images and runs (default runs/leakage-audit-<dataset>/; "
                             "reused to resume)")
    parser.add_argument("--out", default=None, help="markdown report; a JSON twin and the figure "
                        "go beside it (default <work dir>/leakage_audit.md)")
    parser.add_argument("--readme", default=None,
                        help="also write the result in plain words into this file's "
                             "<!-- audit:start --> ... <!-- audit:end --> block")
    parser.add_argument("--note", default=None,
                        help="words added to the report's timing line, e.g. that other jobs "
                             "shared the machine (default: none)")


def config_from_args(args: argparse.Namespace) -> AuditConfig:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(AuditConfig)}
    if isinstance(values["weights"], str) and values["weights"].lower() in ("none", "null"):
        values["weights"] = None
    if values["data_dir"] is not None and values["dataset"] == "synthetic":
        values["dataset"] = "ham10000"
    return replace(AuditConfig(), **values)


def command_line(config: AuditConfig) -> str:
    """The shortest `python -m utils audit` command that gives this config."""
    default = AuditConfig()
    parts = []
    for item in dataclasses.fields(AuditConfig):
        value, flag = getattr(config, item.name), "--" + item.name.replace("_", "-")
        if value == getattr(default, item.name):
            continue
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + flag[2:])
        else:
            parts.append(f"{flag} {shlex.quote(str(value))}")
    return " ".join(["python -m utils audit", *parts])


def run(args: argparse.Namespace) -> int:
    from utils.studies import audit_report

    config = config_from_args(args)
    work_dir = Path(args.work_dir) if args.work_dir else \
        paths.runs_dir() / f"leakage-audit-{config.dataset}"
    summary = audit(config, work_dir)
    summary["command"] = command_line(config) + (f" --out {args.out}" if args.out else "")
    out = Path(args.out) if args.out else work_dir / "leakage_audit.md"
    if args.readme:
        summary["command"] += f" --readme {args.readme}"
    if args.note:
        summary["command"] += f" --note {shlex.quote(args.note)}"
        summary["note"] = args.note
    written = audit_report.write_report(summary, out)
    if args.readme:
        fileio.replace_block(args.readme, "audit", audit_report.readme_text(summary, out,
                                                                            args.readme))
        written.append(Path(args.readme))
    print(audit_report.plain_summary(summary))
    print("report: " + ", ".join(paths.display(p) for p in written))
    return 0

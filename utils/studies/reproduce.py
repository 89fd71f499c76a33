"""The end-to-end job: data → lesion-grouped split → balancing → training → evaluation → report.

    python -m utils reproduce                         # synthetic default, < 3 min on 2 cores
    python -m utils reproduce --data-dir data/raw/HAM10000 --backbone DenseNet201 \
        --image-size 224 --weights imagenet           # a published recipe (see the README)

One `JobConfig` drives everything (its training part is a `utils.training.config.TrainConfig`);
the job
writes its resolved settings as job_config.json, and the report folder `<run>/report/` holds the
metrics with confidence intervals, the plots, Grad-CAM localisation (where lesion masks exist)
and a model card. Re-running with `--run-dir` resumes a killed run.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from utils import fileio, paths
from utils.arguments import non_negative_float
from utils.augmentation.modes import AUGMENT_MODES
from utils.data.manifest import load_manifest
from utils.evaluation.submission import OFFICIAL_NAME
from utils.training import budget, runs
from utils.training.config import PRESETS, SYNTHETIC_OF, TrainConfig, preset

# The synthetic default: 1,000 generated images (look-alike classes and 15 % label noise, as
# utils.data.synthetic_looks sets them, so the model lands between chance and perfect),
# MobileNetV2 from scratch at 64 px, every class balanced offline to the largest training class;
# under 3 minutes on 2 idle CPU cores.
SYNTHETIC_DEFAULT = replace(
    PRESETS["synthetic"], synthetic_images=1000, backbone="mobilenetv2", image_size=64,
    epochs=8, augment="offline", balance_target=None, imbalance="class_weight", patience=0)


# lesion: lesion-grouped split, then balance the training split only (every number we report);
# paper: the published protocol (augment every class folder, then a counter split that ignores
# lesion_id), so a reader can rerun the paper's recipe and see what its test split measures.
PROTOCOLS = ("lesion", "paper")


@dataclass(frozen=True)
class JobConfig:
    """Everything the end-to-end job depends on."""

    train: TrainConfig = field(default_factory=lambda: SYNTHETIC_DEFAULT)  # training settings
    n_boot: int = 1000  # bootstrap replicates of every confidence interval
    tta: bool = True  # also report test-time augmentation (8 dihedral views)
    calibrate: bool = True  # temperature scaling fitted on validation, ECE before/after
    gradcam_images: int = 60  # test images explained with Grad-CAM (0 = skip)
    protocol: str = "lesion"  # lesion (lesion-grouped split) | paper (published protocol: LEAKS)
    corruptions: bool = True  # balanced accuracy under 6 corruptions x 5 severities
    external: tuple[str, ...] = ()  # external test folders (ISIC 2018 Task 3 test, ISIC 2019)

    def __post_init__(self) -> None:
        if self.train.predict_tta and not self.tta:
            raise ValueError("the training config predicts with TTA (predict_tta), so the job "
                             "must evaluate TTA: set tta=True")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol={self.protocol!r} is not one of {', '.join(PROTOCOLS)}")
        if self.protocol == "paper" and self.train.augment not in ("offline", "both"):
            raise ValueError(
                f"protocol 'paper' augments whole class folders before splitting (offline), "
                f"so augment must be offline or both, got {self.train.augment!r}")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "train": self.train.to_dict(),
                "external": list(self.external)}


def job_config(data_dir: str | None = None, dataset: str = "ham10000",
               budget_name: str | None = None, **train_overrides: Any) -> JobConfig:
    """The synthetic default (in the layout of `dataset`: labelled synthetic or
    synthetic_isic2019), or the dataset preset when a data folder is given; a budget
    (utils.training.budget) puts its recipe and wall clock on top."""
    if data_dir is None:
        base = replace(SYNTHETIC_DEFAULT, dataset=SYNTHETIC_OF[dataset])
    else:
        base = preset(dataset, data_dir=str(data_dir))
    if budget_name:
        base = budget.apply_budget(budget_name, base)
    return JobConfig(train=replace(base, **train_overrides))


def published_protocol_manifest(config: TrainConfig) -> pd.DataFrame:
    """The manifest of the published protocol for a (resolved) training config: every image of
    each class folder augmented with the published recipe and copies per image, then the
    published counter split, which ignores lesion_id (LEAKS: its test score is not an estimate
    on new lesions). One implementation, shared with the leakage audit
    (utils.studies.paper_protocol.published_manifest); the copies go under
    data/processed/published/."""
    import hashlib

    from utils.studies import paper_protocol
    from utils.training import data as training_data

    table = training_data.load_table(config)
    files = sorted(table["image_id"].astype(str) + "\t" + table["path"].astype(str))
    key = hashlib.sha256("\n".join(files).encode()).hexdigest()[:12]
    out_dir = (paths.processed_dir() / "published" / f"{config.dataset}-seed{config.seed}-{key}")
    return paper_protocol.published_manifest(table, out_dir, config.dataset, config.seed)


def gradcam_report(run_dir: Path, manifest: pd.DataFrame, config: TrainConfig, mask_root: Path,
                   n_images: int, out_dir: Path) -> pd.DataFrame | None:
    """Grad-CAM localisation on test images that have a lesion mask; None where none has."""
    from utils.evaluation import gradcam
    from utils.training import ensemble, models
    from utils.training.data import pipeline_preprocess

    test = manifest[(manifest["split"] == "test") & ~manifest.get(
        "augmented", pd.Series(False, index=manifest.index)).fillna(False).astype(bool)]
    has_mask = test["image_id"].map(lambda i: _has_mask(i, mask_root))
    test = test[has_mask]
    if n_images <= 0 or test.empty:
        return None
    sample = test.groupby("label", sort=False).head(max(1, n_images // 7)).head(n_images)
    # an ensemble: Grad-CAM explains its first member (utils.training.ensemble)
    model = ensemble.explained_member(models.load_model(run_dir / runs.MODEL))
    scores = gradcam.localisation_scores(model, sample, mask_root, config.image_size,
                                         config.resize_policy,
                                         preprocess=pipeline_preprocess(config))
    summary = gradcam.summarise_localisation(scores)
    fileio.write_csv(out_dir / "gradcam_localisation.csv", scores)
    fileio.write_csv(out_dir / "gradcam_localisation_summary.csv", summary)
    return summary


def _has_mask(image_id: str, root: Path) -> bool:
    from utils.evaluation import gradcam

    try:
        return gradcam.mask_path_for(image_id, root).is_file()
    except (FileNotFoundError, ValueError):
        return False


def model_card(run_dir: Path, job: JobConfig, result: dict[str, Any], manifest: pd.DataFrame,
               localisation: pd.DataFrame | None, command: str) -> str:
    """The report's markdown (utils.evaluation.model_card.build_card: the run folder's config,
    manifest and external results with the job's evaluation `result`)."""
    from utils.evaluation.model_card import build_card

    return build_card(run_dir, result, command, localisation)


REPORT_FILES = (*runs.metrics_names("test"), runs.CONFIG, runs.RUN_INFO, runs.JOB_CONFIG,
                runs.HISTORY, runs.SELECTIVE, runs.SUBGROUPS, runs.CORRUPTIONS)
REPORT_PLOTS = ("training_curves.png", "test_confusion_matrix.png",
                "test_confusion_matrix_normalised.png", "test_roc_curves.png",
                "test_classification_report.png", "test_reliability_compared.png",
                "test_risk_coverage.png", "test_subgroups.png", "test_corruptions.png")
# per external test set: its metrics (not its predictions or submission, which list image ids)
REPORT_EXTERNAL_FILES = (*runs.metrics_names("test"), OFFICIAL_NAME)


def copy_outputs(run_dir: Path, report_dir: Path) -> None:
    """Copy the run's metrics, settings and summary plots into the report folder (no images of
    the data: reports may be committed, the data may not)."""
    for name in REPORT_FILES:
        if (run_dir / name).is_file():
            fileio.write_bytes(report_dir / name, (run_dir / name).read_bytes())
    for name in REPORT_PLOTS:
        source = run_dir / runs.PLOTS_DIR / name
        if source.is_file():
            fileio.write_bytes(report_dir / runs.PLOTS_DIR / name, source.read_bytes())
    external = run_dir / runs.EXTERNAL_DIR
    for folder in sorted(external.iterdir()) if external.is_dir() else []:
        for name in REPORT_EXTERNAL_FILES:
            if (folder / name).is_file():
                fileio.write_bytes(report_dir / runs.EXTERNAL_DIR / folder.name / name,
                                   (folder / name).read_bytes())


def reproduce(job: JobConfig, run_dir: str | os.PathLike | None = None,
              command: str = "python -m utils reproduce",
              report_dir: str | os.PathLike | None = None) -> Path:
    """Run the whole job; returns the report folder (default <run>/report)."""
    from utils.evaluation import evaluate, external
    from utils.training import data as training_data
    from utils.training import train

    manifest = None
    resuming = run_dir is not None and (Path(run_dir) / runs.MANIFEST).is_file()
    if job.protocol == "paper" and not resuming:
        manifest = published_protocol_manifest(job.train.resolve())
    run_dir = train.train(job.train, run_dir=run_dir, manifest=manifest)
    fileio.write_json(run_dir / runs.JOB_CONFIG, job.to_dict())
    for folder in job.external:
        external.evaluate_external(run_dir, folder, n_boot=job.n_boot, seed=job.train.seed)
    result = evaluate.evaluate(run_dir, split="test", n_boot=job.n_boot, seed=job.train.seed,
                               tta=job.tta, calibrate=job.calibrate,
                               corruptions=job.corruptions, card=False)
    manifest = load_manifest(run_dir / runs.MANIFEST)
    report_dir = Path(report_dir) if report_dir is not None else run_dir / "report"
    copy_outputs(run_dir, report_dir)
    resolved = TrainConfig.load(run_dir / runs.CONFIG)
    localisation = gradcam_report(run_dir, manifest, resolved, training_data.data_dir(resolved),
                                  job.gradcam_images, report_dir)
    card = model_card(run_dir, replace(job, train=resolved), result, manifest, localisation,
                      command)
    fileio.write_text(report_dir / "model_card.md", card)
    return report_dir


class _BackboneNames(Sequence):
    """The registry's backbone names, read on first use: `python -m utils --help` builds every
    command's parser and must not import TensorFlow for it."""

    def _names(self) -> tuple[str, ...]:
        from utils.training import backbones

        return backbones.list_backbones()

    def __getitem__(self, index):
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def __contains__(self, name: object) -> bool:
        return name in self._names()


def _backbone(text: str) -> str:
    """A backbone name in the registry's spelling (any case); unknown names pass through to
    argparse's choices check, which lists the valid ones."""
    from utils.training import backbones

    return {name.lower(): name for name in backbones.list_backbones()}.get(text.lower(), text)


def _count(minimum: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}")
        return value

    return parse


def _defaults(name: str) -> str:
    """'(default: X)' for a training setting, naming the synthetic default's value and the
    dataset preset's where they differ (read from SYNTHETIC_DEFAULT and PRESETS)."""
    synthetic, real = getattr(SYNTHETIC_DEFAULT, name), getattr(PRESETS["ham10000"], name)
    if synthetic == real:
        return f"(default: {synthetic})"
    return f"(default: {synthetic} on the synthetic default, {real} with --data-dir)"


# the options written into the model card's command line
OPTION_ORDER = ("data_dir", "dataset", "backbone", "image_size", "weights", "epochs",
                "batch_size", "seed", "subset", "augment", "preprocess", "protocol", "budget",
                "budget_s", "n_boot", "gradcam_images", "report_dir")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "The end-to-end job: data, lesion-grouped split, balancing, training, evaluation with "
        "CIs, Grad-CAM and a model card. Without --data-dir it runs the synthetic default "
        f"(MobileNetV2 from scratch at {SYNTHETIC_DEFAULT.image_size} px, "
        f"{SYNTHETIC_DEFAULT.epochs} epochs, the training split balanced offline); with "
        "--data-dir it starts from the dataset preset (two-stage fine-tuning, online "
        "augmentation).")
    parser.add_argument("--data-dir", default=None,
                        help="dataset folder (default: none: the generated synthetic default)")
    parser.add_argument("--dataset", default="ham10000", choices=("ham10000", "isic2019"),
                        help="layout and preset of --data-dir (default: ham10000)")
    parser.add_argument("--backbone", type=_backbone, choices=_BackboneNames(), default=None,
                        metavar="NAME",
                        help="one of %(choices)s, any case (default: MobileNetV2)")
    parser.add_argument("--image-size", type=_count(32), default=None, metavar="PX",
                        help=f"input side in pixels (default: {SYNTHETIC_DEFAULT.image_size} on "
                        "the synthetic default; with --data-dir the backbone's default size in "
                        "utils/training/backbones.py)")
    parser.add_argument("--weights", default=None,
                        help="imagenet | none | a weights file (default: none on the synthetic "
                        "default, imagenet with --data-dir)")
    parser.add_argument("--epochs", type=_count(1), default=None,
                        help="from scratch: epochs; with weights: stage-2 (fine-tuning) epochs "
                        f"after {PRESETS['ham10000'].stage1_epochs} head-only epochs (default: "
                        f"{SYNTHETIC_DEFAULT.epochs} on the synthetic default; with --data-dir "
                        f"{PRESETS['ham10000'].stage2_epochs} for ham10000, "
                        f"{PRESETS['isic2019'].stage2_epochs} for isic2019)")
    parser.add_argument("--batch-size", type=_count(1), default=None, metavar="N",
                        help=f"global batch size {_defaults('batch_size')}")
    parser.add_argument("--seed", type=_count(0), default=None,
                        help="seeds the data, split, balancing, weights and tf.data "
                        f"{_defaults('seed')}")
    parser.add_argument("--subset", type=_count(7), default=None, metavar="N",
                        help="train and test on a seeded random subset of N images (default: "
                        "every image)")
    parser.add_argument("--augment", choices=AUGMENT_MODES, default=None,
                        help="none | online (random transforms every epoch) | offline (balance "
                        "the training split with augmented copies) | both "
                        f"{_defaults('augment')}")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="lesion",
                        help="lesion: lesion-grouped split, training split balanced; paper: the "
                        "published protocol (augment every class folder, then a counter split "
                        "ignoring lesion_id), which LEAKS: its test score is not a result "
                        "(default: lesion)")
    parser.add_argument("--preprocess", default=None,
                        help="dermoscopy preprocessing: none | colour,hair,fov (recorded in the "
                             "run's config; applied at evaluation and predict too; default: none)")
    parser.add_argument("--budget", default=None, choices=sorted(budget.BUDGETS),
                        help="train the budget's CPU recipe (utils/training/budget.py), its "
                        "epochs sized by measuring on this machine to fit the budget's wall "
                        "clock (default: none)")
    parser.add_argument("--budget-s", type=non_negative_float, default=None, metavar="S",
                        help="override the budget's seconds; 0 = no sizing, train --epochs "
                        "(default: the budget's)")
    parser.add_argument("--n-boot", type=_count(0), default=1000,
                        help="bootstrap replicates of every CI (default: 1000)")
    parser.add_argument("--gradcam-images", type=_count(0), default=60,
                        help="test images explained with Grad-CAM, 0 = skip (default: 60)")
    parser.add_argument("--no-corruptions", action="store_true",
                        help="skip the corruption evaluation (6 corruptions x 5 severities; "
                        "default: evaluated)")
    parser.add_argument("--external", action="append", default=[], metavar="DIR",
                        help="also evaluate on this external test folder (ISIC 2018 Task 3 test "
                             "or ISIC 2019; repeatable; HAM10000-trained runs; default: none)")
    parser.add_argument("--run-dir", default=None,
                        help="resume this run folder (default: a new runs/<time>-<dataset>-"
                        "<backbone>-<size>/)")
    parser.add_argument("--report-dir", default=None,
                        help="where the report goes (default: <run folder>/report)")


def job_from_args(args: argparse.Namespace) -> JobConfig:
    """The JobConfig of parsed options (ValueError on a combination that cannot run)."""
    overrides: dict[str, Any] = {}
    for name in ("backbone", "image_size", "batch_size", "seed", "subset", "augment", "preprocess"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.weights is not None:
        overrides["weights"] = None if args.weights.lower() in ("none", "null") else args.weights
    if args.protocol == "paper" and args.augment is None:
        overrides["augment"] = "offline"  # the published protocol augments before splitting
    budget_name = getattr(args, "budget", None)
    if getattr(args, "budget_s", None) is not None:
        overrides["budget_s"] = float(args.budget_s)
    if args.epochs is not None:
        default_weights = (budget.get_budget(budget_name).recipe.get("weights") if budget_name
                           else "imagenet" if args.data_dir else None)
        weighted = overrides.get("weights", default_weights)
        overrides["stage2_epochs" if weighted else "epochs"] = args.epochs
    job = replace(job_config(args.data_dir, args.dataset, budget_name, **overrides),
                  n_boot=args.n_boot, gradcam_images=args.gradcam_images, protocol=args.protocol,
                  corruptions=not args.no_corruptions, external=tuple(args.external))
    job.train.resolve(gpu_visible=False)  # backbone and size checked before any folder is made
    return job


def command_line(args: argparse.Namespace) -> str:
    """The command as the user could retype it (given options only, in OPTION_ORDER)."""
    defaults = {"dataset": "ham10000" if args.data_dir else None, "protocol": "lesion",
                "n_boot": 1000, "gradcam_images": 60}
    parts = ["python -m utils reproduce"]
    for name in OPTION_ORDER:
        value = getattr(args, name, None)
        if value is not None and value != defaults.get(name, None) and \
                not (name == "dataset" and not args.data_dir):
            parts.append(f"--{name.replace('_', '-')} {value}")
    parts += [f"--external {folder}" for folder in getattr(args, "external", [])]
    if getattr(args, "no_corruptions", False):
        parts.append("--no-corruptions")
    return " ".join(parts)


def run(args: argparse.Namespace) -> int:
    try:
        job = job_from_args(args)
    except ValueError as error:  # a combination of valid options that cannot run
        print(f"error: {error}", file=sys.stderr)
        return 2
    report_dir = reproduce(job, args.run_dir, command_line(args), args.report_dir)
    print(f"report: {paths.display(report_dir / 'model_card.md')}")
    return 0

"""The end-to-end job: data → lesion-grouped split → balancing → training → evaluation → report.

    python -m utils reproduce                         # synthetic default, < 5 min on 2 cores
    python -m utils reproduce --data-dir data/raw/HAM10000 --weights imagenet   # real data

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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from utils import fileio, paths
from utils.data.manifest import load_manifest
from utils.evaluation.submission import OFFICIAL_NAME
from utils.training import runs
from utils.training.config import PRESETS, TrainConfig, preset

# The synthetic default: 1,000 generated images, MobileNetV2 from scratch at 64 px, every class
# balanced offline to the largest training class; about 3-4 minutes on 2 CPU cores.
SYNTHETIC_DEFAULT = replace(
    PRESETS["synthetic"], synthetic_images=1000, backbone="mobilenetv2", image_size=64,
    epochs=8, augment="offline", balance_target=None, imbalance="class_weight", patience=0)


@dataclass(frozen=True)
class JobConfig:
    """Everything the end-to-end job depends on."""

    train: TrainConfig = field(default_factory=lambda: SYNTHETIC_DEFAULT)  # training settings
    n_boot: int = 1000  # bootstrap replicates of every confidence interval
    tta: bool = True  # also report test-time augmentation (8 dihedral views)
    calibrate: bool = True  # temperature scaling fitted on validation, ECE before/after
    gradcam_images: int = 60  # test images explained with Grad-CAM (0 = skip)
    corruptions: bool = True  # balanced accuracy under 6 corruptions x 5 severities
    external: tuple[str, ...] = ()  # external test folders (ISIC 2018 Task 3 test, ISIC 2019)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "train": self.train.to_dict(),
                "external": list(self.external)}


def job_config(data_dir: str | None = None, dataset: str = "ham10000",
               **train_overrides: Any) -> JobConfig:
    """The synthetic default, or the dataset preset when a data folder is given."""
    base = SYNTHETIC_DEFAULT if data_dir is None else preset(dataset, data_dir=str(data_dir))
    return JobConfig(train=replace(base, **train_overrides))


def gradcam_report(run_dir: Path, manifest: pd.DataFrame, config: TrainConfig, mask_root: Path,
                   n_images: int, out_dir: Path) -> pd.DataFrame | None:
    """Grad-CAM localisation on test images that have a lesion mask; None where none has."""
    from utils.evaluation import gradcam
    from utils.training import models

    test = manifest[(manifest["split"] == "test") & ~manifest.get(
        "augmented", pd.Series(False, index=manifest.index)).fillna(False).astype(bool)]
    has_mask = test["image_id"].map(lambda i: _has_mask(i, mask_root))
    test = test[has_mask]
    if n_images <= 0 or test.empty:
        return None
    sample = test.groupby("label", sort=False).head(max(1, n_images // 7)).head(n_images)
    model = models.load_model(run_dir / runs.MODEL)
    scores = gradcam.localisation_scores(model, sample, mask_root, config.image_size,
                                         config.resize_policy)
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

    run_dir = train.train(job.train, run_dir=run_dir)
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=None,
                        help="dataset folder (default: the generated synthetic dataset)")
    parser.add_argument("--dataset", default="ham10000", choices=("ham10000", "isic2019"))
    parser.add_argument("--backbone", default=None)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--weights", default=None, help="imagenet | none | a weights file")
    parser.add_argument("--epochs", type=int, default=None,
                        help="from-scratch epochs (with weights: stage-2 epochs)")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--gradcam-images", type=int, default=60)
    parser.add_argument("--no-corruptions", action="store_true",
                        help="skip the corruption evaluation (6 corruptions x 5 severities)")
    parser.add_argument("--external", action="append", default=[], metavar="DIR",
                        help="also evaluate on this external test folder (ISIC 2018 Task 3 test "
                             "or ISIC 2019; repeatable; HAM10000-trained runs)")
    parser.add_argument("--run-dir", default=None, help="resume this run folder")
    parser.add_argument("--report-dir", default=None,
                        help="where the report goes (default <run folder>/report)")


def run(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    for name in ("backbone", "image_size"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.weights is not None:
        overrides["weights"] = None if args.weights.lower() in ("none", "null") else args.weights
    if args.epochs is not None:
        weighted = overrides.get("weights", "imagenet" if args.data_dir else None)
        overrides["stage2_epochs" if weighted else "epochs"] = args.epochs
    job = replace(job_config(args.data_dir, args.dataset, **overrides), n_boot=args.n_boot,
                  gradcam_images=args.gradcam_images, corruptions=not args.no_corruptions,
                  external=tuple(args.external))
    command = "python -m utils reproduce" + "".join(
        f" --{k} {v}"
        for k, v in (
            ("data-dir", args.data_dir),
            ("dataset", args.dataset if args.data_dir else None),
            ("backbone", args.backbone),
            ("image-size", args.image_size),
            ("weights", args.weights),
            ("epochs", args.epochs),
        )
        if v
    )
    command += "".join(f" --external {folder}" for folder in args.external)
    command += " --no-corruptions" if args.no_corruptions else ""
    if args.run_dir:
        command += f" --run-dir {args.run_dir}"
    if args.report_dir:
        command += f" --report-dir {args.report_dir}"
    report_dir = reproduce(job, args.run_dir, command, args.report_dir)
    print(f"report: {paths.display(report_dir / 'model_card.md')}")
    return 0

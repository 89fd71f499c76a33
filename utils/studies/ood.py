"""Unknown lesion types: train with one class held out entirely, then score how well the model's
confidence, energy and feature distances tell that class's images from the known test images.

    python -m utils ood --smoke                                    # code path, about 30 s
    python -m utils ood --data-dir data/raw/HAM10000 --weights imagenet        # df held out
    python -m utils ood --data-dir data/raw/ISIC_2019 --dataset isic2019       # SCC held out

Every image of every lesion of the held-out class (default `DEFAULT_HOLDOUT`: df on HAM10000, SCC
on ISIC 2019) is removed before the lesion-grouped split, so it is in no set; the model trains on
the remaining classes (its output for the held-out class never sees a positive example and is
left out of the scores). Its test split (known classes) and every held-out image are then scored
(utils.evaluation.ood_scores): AUROC and FPR at 95 % TPR with lesion-bootstrap CIs. The run
folder keeps the per-image scores (ood_scores.csv); the report folder (--out) gets the markdown
report, metrics and a plot, without image ids or pixels.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from utils import fileio, paths
from utils.errors import DataError
from utils.tables import format_ci, markdown_table
from utils.training import runs
from utils.training.config import PRESETS, TrainConfig, preset, smoke_config

DEFAULT_HOLDOUT = {"ham10000": "df", "synthetic": "df", "isic2019": "SCC",
                   "synthetic_isic2019": "SCC"}
SPLIT_NAME = "ood_known_classes_split.csv"  # the split of the known classes (run folder)
SCORES_NAME = "ood_scores.csv"  # per-image scores (run folder only: it names images)
REPORT_NAME = "ood_report.md"
METRICS_NAME = "ood_metrics.json"
TABLE_NAME = "ood_detection.csv"
PLOT_NAME = "ood_scores.png"


@dataclass(frozen=True)
class OODConfig:
    """The unknown-lesion study's settings."""

    train: TrainConfig  # training settings of the model that never sees the held-out class
    holdout: str | None = None  # class left out of every set; None -> DEFAULT_HOLDOUT
    n_boot: int = 1000  # bootstrap replicates of every confidence interval

    @property
    def holdout_class(self) -> str:
        return self.holdout or DEFAULT_HOLDOUT[self.train.dataset]

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "train": self.train.to_dict(),
                "holdout": self.holdout_class}


def split_without(table: pd.DataFrame, holdout: str,
                  config: TrainConfig) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """(lesion-grouped split of the known classes, the held-out class's images, images of the
    held-out lesions dropped because they carry another label)."""
    from utils.data import splits

    if holdout not in set(table["label"]):
        raise DataError(f"class {holdout!r} is not in the data (classes: "
                        f"{', '.join(sorted(set(table['label'])))}); pass --holdout")
    lesions = set(table.loc[table["label"] == holdout, "lesion_id"])
    in_lesions = table["lesion_id"].isin(lesions)
    unknown = table[table["label"] == holdout].reset_index(drop=True)
    known = table[~in_lesions].copy()
    known.attrs = dict(table.attrs)
    split = splits.lesion_split(known, fractions=config.split_fractions, seed=config.seed)
    return split, unknown, int((in_lesions & (table["label"] != holdout)).sum())


def train_model(config: OODConfig, run_dir: str | os.PathLike | None) -> tuple[Path, pd.DataFrame]:
    """Train on the known classes (or resume `run_dir`); returns the run folder and the
    held-out images."""
    from utils.data.manifest import save_manifest
    from utils.training import data as training_data
    from utils.training import train

    resolved = config.train.resolve()
    table = training_data.load_table(resolved)
    split, unknown, dropped = split_without(table, config.holdout_class, resolved)
    unknown.attrs["dropped_other_images"] = dropped
    if run_dir is None:
        run_dir = runs.new_run_dir(resolved)
    run_dir = Path(run_dir)
    split_path = run_dir / SPLIT_NAME
    if not split_path.is_file():
        save_manifest(split, split_path)
    train_config = replace(config.train, manifest=str(split_path.resolve()))
    return train.train(train_config, run_dir=run_dir), unknown


def score_run(run_dir: Path, unknown: pd.DataFrame, holdout: str, n_boot: int,
              seed: int) -> dict[str, Any]:
    """Known-class metrics, the three scores of every known test and held-out image, and how
    well each separates them."""
    from utils.data.manifest import augmented_mask
    from utils.evaluation import ood_scores
    from utils.scoring import metrics
    from utils.scoring.predictions import predictions_frame
    from utils.training import models, pipeline
    from utils.training.data import dataset_info

    run = runs.load_run(run_dir)
    classes = dataset_info(run.config).classes
    keep = [k for k, c in enumerate(classes) if c != holdout]
    manifest = run.manifest
    model = models.load_model(run.model_path, compile=False)

    train_rows = manifest[(manifest["split"] == "train") & ~augmented_mask(manifest)]
    test_rows = manifest[manifest["split"] == "test"].reset_index(drop=True)
    parts = [train_rows, test_rows, unknown]
    columns = ["path", "label_index"]
    data = pipeline.make_dataset(pd.concat([p[columns] for p in parts], ignore_index=True),
                                 run.config.image_size, run.config.batch_size, training=False,
                                 num_classes=len(classes), resize_policy=run.config.resize_policy)
    features, logits = ood_scores.features_and_logits(model, data)  # one pass, one trace
    ends = np.cumsum([len(p) for p in parts])[:-1]
    train_features, test_features, unknown_features = np.split(features, ends)
    _, test_logits, unknown_logits = np.split(logits, ends)
    detector = ood_scores.Mahalanobis(train_features, train_rows["label_index"].to_numpy())

    known_classes = [classes[k] for k in keep]
    known_probs = np.exp(test_logits[:, keep] - test_logits[:, keep].max(axis=1, keepdims=True))
    known_probs /= known_probs.sum(axis=1, keepdims=True)
    known = metrics.evaluate_predictions(predictions_frame(test_rows, known_probs, known_classes),
                                         n_boot=n_boot, seed=seed)
    logits = np.concatenate([test_logits, unknown_logits])
    scores = {"max_softmax": ood_scores.max_softmax(logits, keep),
              "energy": ood_scores.energy(logits, keep),
              "mahalanobis": detector.score(np.concatenate([test_features, unknown_features]))}
    is_unknown = np.r_[np.zeros(len(test_rows), bool), np.ones(len(unknown), bool)]
    groups = np.r_[test_rows["lesion_id"].astype(str), unknown["lesion_id"].astype(str)]
    detection = ood_scores.detection_metrics(scores, is_unknown, groups, n_boot, seed)
    per_image = pd.DataFrame({"image_id": np.r_[test_rows["image_id"], unknown["image_id"]],
                              "lesion_id": groups,
                              "label": np.r_[test_rows["label"], unknown["label"]],
                              "held_out": is_unknown, **scores})
    fileio.write_csv(run_dir / SCORES_NAME, per_image)
    return {"holdout": holdout, "classes_trained": known_classes, "known": known,
            "detection": detection, "n_known_test": int(len(test_rows)),
            "n_unknown": int(len(unknown)),
            "n_unknown_lesions": int(unknown["lesion_id"].nunique()),
            "dropped_other_images": int(unknown.attrs.get("dropped_other_images", 0)),
            "n_train_features": int(len(train_rows)), "feature_dim": int(train_features.shape[1]),
            "_scores": scores, "_is_unknown": is_unknown}


def report(result: dict[str, Any], config: TrainConfig, info: dict, manifest: pd.DataFrame,
           command: str) -> str:
    """The markdown report of the study."""
    from utils.data import datasets

    holdout = result["holdout"]
    names = {**datasets.HAM10000.class_names, **datasets.ISIC2019.class_names}
    counts = pd.crosstab(manifest["label"], manifest["split"])
    detection = result["detection"]
    fpr_name = next(k for k in next(iter(detection.values())) if k.startswith("fpr"))
    known = result["known"]
    lines = [
        f"# Unknown lesion types: {holdout} held out ({config.dataset})", "",
        f"Generated by `{command}` (utils/studies/ood.py); every number below comes from this "
        "run.", "",
        "## Setup",
        f"- Held out: **{holdout}** ({names.get(holdout, holdout)}): {result['n_unknown']} images "
        f"of {result['n_unknown_lesions']} lesions, in no set (not in training, validation or "
        f"test); {result['dropped_other_images']} other images of those lesions dropped.",
        f"- Model: {config.backbone} at {config.image_size} px, weights "
        f"{config.weights or 'none (from scratch)'}, {info.get('epochs_completed', '?')} epochs "
        f"({info.get('duration_s', 0):.0f} s on {info.get('device', '?')}), trained on the "
        f"{len(result['classes_trained'])} other classes ({', '.join(result['classes_trained'])}); "
        "best epoch by validation balanced accuracy.",
        f"- Known-class test split: {result['n_known_test']} images; balanced accuracy "
        f"{format_ci(known['metrics']['balanced_accuracy'])}, macro AUC "
        f"{format_ci(known['metrics']['macro_auc'])} (95 % bootstrap CI over "
        f"{known['bootstrap']['unit']}s).", "",
        markdown_table(counts, ["class", *counts.columns], index=True), "",
        f"## Telling {holdout} from the known classes "
        f"({result['n_unknown']} held-out vs {result['n_known_test']} known test images)", "",
        markdown_table([[name, format_ci(values["auroc"]), format_ci(values[fpr_name])]
                        for name, values in detection.items()],
                       ["score", "AUROC [95 % CI]", "FPR at 95 % TPR [95 % CI]"]), "",
        "AUROC: probability that a held-out image scores as more unusual than a known test image "
        "(0.5 = chance). FPR at 95 % TPR: share of known test images flagged as unknown when the "
        "threshold catches 95 % of the held-out images (lower is better). CIs resample lesions "
        f"({known['bootstrap']['n_boot']} replicates).", "",
        "- `max_softmax`: minus the largest softmax probability over the known classes.",
        "- `energy`: minus logsumexp of the known classes' logits (read from the penultimate "
        "features and the Dense head).",
        f"- `mahalanobis`: smallest squared Mahalanobis distance of the {result['feature_dim']}-"
        "dimensional penultimate features to a class mean; means and one shared covariance "
        f"(Ledoit-Wolf shrinkage) fitted on the {result['n_train_features']} training images.",
        "", f"Plot: [score distributions and ROC curves](plots/{PLOT_NAME}).", "",
        "## Limits",
        "One held-out class and one training run: a different class, seed or model can rank "
        "the scores differently. The held-out images come from the same dataset (same devices "
        "and clinics) as the known ones; lesion types from other sources are a different shift.",
    ]
    return "\n".join(lines) + "\n"


def ood(config: OODConfig, run_dir: str | os.PathLike | None = None,
        out_dir: str | os.PathLike | None = None, command: str = "python -m utils ood") -> Path:
    """Run the study; returns the report folder (default <run>/ood)."""
    started = time.time()
    run_dir, unknown = train_model(config, run_dir)
    result = score_run(run_dir, unknown, config.holdout_class, config.n_boot, config.train.seed)
    from utils.evaluation import ood_scores

    out = Path(out_dir) if out_dir is not None else run_dir / "ood"
    run = runs.load_run(run_dir)
    ood_scores.plot(result.pop("_scores"), result.pop("_is_unknown"), result["holdout"],
                    out / runs.PLOTS_DIR / PLOT_NAME)
    result.update(command=command, config=config.to_dict(), run=run_dir.name,
                  wall_time_s=round(time.time() - started, 1))
    fileio.write_json(out / METRICS_NAME, result)
    fileio.write_csv(out / TABLE_NAME, ood_scores.detection_table(result["detection"]))
    fileio.write_text(out / REPORT_NAME,
                      report(result, run.config, run.info, run.manifest, command))
    return out


# --------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    from utils.arguments import non_negative_int
    from utils.studies.reproduce import _backbone, _BackboneNames, _count

    parser.add_argument("--data-dir", default=None,
                        help="dataset folder (default: the generated synthetic dataset)")
    parser.add_argument("--dataset", default="ham10000", choices=("ham10000", "isic2019"))
    parser.add_argument("--holdout", default=None,
                        help="class left out of every set (default: df on HAM10000, SCC on "
                             "ISIC 2019)")
    parser.add_argument("--backbone", type=_backbone, choices=_BackboneNames(), default=None,
                        metavar="NAME", help="one of %(choices)s, any case (default: MobileNetV2)")
    parser.add_argument("--image-size", type=_count(32), default=None, metavar="PX")
    parser.add_argument("--weights", default=None, help="imagenet | none | a weights file")
    parser.add_argument("--epochs", type=_count(1), default=None,
                        help="from-scratch epochs (with weights: stage-2 epochs)")
    parser.add_argument("--n-boot", type=non_negative_int, default=1000)
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--smoke", action="store_true",
                        help="tiny run from scratch (1 epoch, minimum size): checks the code path")
    parser.add_argument("--run-dir", default=None, help="run folder (an existing one resumes)")
    parser.add_argument("--out", default=None, help="report folder (default <run folder>/ood)")


def config_from_args(args: argparse.Namespace) -> OODConfig:
    overrides: dict[str, Any] = {"seed": args.seed}
    for name in ("backbone", "image_size"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.weights is not None:
        overrides["weights"] = None if args.weights.lower() in ("none", "null") else args.weights
    if args.smoke:  # synthetic by definition: labelled so even with a --data-dir
        dataset = "synthetic_isic2019" if args.dataset == "isic2019" else "synthetic"
        train = smoke_config(data_dir=args.data_dir, dataset=dataset, **overrides)
        if args.epochs is not None:
            train = replace(train, epochs=args.epochs)
    else:
        base = (preset(args.dataset, data_dir=args.data_dir) if args.data_dir else
                replace(PRESETS["synthetic"], dataset=args.dataset))
        if args.epochs is not None:
            weighted = overrides.get("weights", base.weights)
            overrides["stage2_epochs" if weighted else "epochs"] = args.epochs
        train = replace(base, **overrides)
    return OODConfig(train=train, holdout=args.holdout, n_boot=args.n_boot)


def command_line(args: argparse.Namespace) -> str:
    """The command as typed (options left at their defaults omitted), for the report."""
    defaults = argparse.ArgumentParser()
    add_arguments(defaults)
    parts = ["python -m utils ood"]
    for name in ("data_dir", "dataset", "holdout", "backbone", "image_size", "weights", "epochs",
                 "n_boot", "seed", "run_dir", "out"):
        value = getattr(args, name)
        if value is not None and value != defaults.get_default(name):
            parts.append(f"--{name.replace('_', '-')} {value}")
    return " ".join(parts + (["--smoke"] if args.smoke else []))


def run(args: argparse.Namespace) -> int:
    out = ood(config_from_args(args), args.run_dir, args.out, command_line(args))
    print(f"report: {paths.display(out / REPORT_NAME)}")
    return 0

"""`python -m utils ablate`: does each dermoscopy preprocessing step help? Measured, not assumed.

Trains the same model with the same seeds and budget once per arm (default: no preprocessing,
each step alone, all three together; utils.augmentation.preprocess) and seed, all on ONE
lesion-grouped split (built once, saved as manifest.csv and given to every run), so every arm is
scored on the same test images. Reports, from the runs' test predictions (utils.scoring.paired):

- test balanced accuracy of each arm (mean over seeds) with a 95 % bootstrap CI;
- the PAIRED difference of each arm against the first arm ("none"): the same lesion draw and
  the same seed draw for both arms in every bootstrap replicate;
- what each step did to the test images (share cropped to the field of view, share of pixels
  inpainted as hair);
- corruption robustness per arm where utils.evaluation.corruptions offers a `corruption_section`
  that applies the run's preprocessing (`preprocess` parameter); otherwise the report says it
  was not measured.

Writes <out>.md, <out>.json and <out>.png (default reports/preprocessing_ablation). Resumable:
finished runs are reused, an interrupted one resumes from its last epoch, and a work folder
holding an ablation with other settings is refused. Model selection inside each run uses the
validation split only (best epoch on validation balanced accuracy); the test split chooses
nothing.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from utils import fileio, paths
from utils.augmentation.preprocess import parse_preprocessing
from utils.data.manifest import load_manifest, save_manifest
from utils.errors import DataError
from utils.scoring import paired
from utils.scoring.predictions import arrays_from_predictions, read_predictions
from utils.training import runs
from utils.training.config import TrainConfig

DEFAULT_ARMS = ("none", "colour", "hair", "fov", "colour,hair,fov")


@dataclass(frozen=True)
class AblationConfig:
    """Settings shared by every arm: the same data, split, model, seeds and budget."""

    dataset: str = "ham10000"  # ham10000 | isic2019 (without data_dir: the synthetic default)
    data_dir: str | None = None  # dataset folder (read only); None -> the synthetic default
    arms: tuple[str, ...] = DEFAULT_ARMS  # preprocessing of each arm; the first is the reference
    seeds: tuple[int, ...] = (0, 1)  # training seeds; every arm is trained once per seed
    split_seed: int = 0  # seed of the one lesion-grouped split all runs share
    backbone: str = "mobilenetv2"  # registry name (utils.training.backbones)
    image_size: int = 64  # input side in pixels
    weights: str | None = None  # None (from scratch) | "imagenet" | a weights file
    epochs: int = 5  # epochs per run (from scratch; with weights: fine-tuning epochs)
    batch_size: int = 32  # batch size
    learning_rate: float = 1e-3  # Adam learning rate (from scratch)
    lr_schedule: str = "cosine"  # cosine | plateau | constant
    augment: str = "online"  # online augmentation after preprocessing (none | online)
    cache: bool = True  # cache the preprocessed, resized images on disk (paid once per arm)
    subset: int | None = None  # a seeded subset of this many images (quick runs)
    synthetic_images: int = 1000  # size of the synthetic default when data_dir is None
    steps_per_epoch: int | None = None  # cap on training steps per epoch (smoke runs)
    n_boot: int = 1000  # bootstrap replicates of every interval
    smoke: bool = False  # tiny eager runs that check the code path, not a result

    def __post_init__(self) -> None:
        specs = [parse_preprocessing(arm).spec() for arm in self.arms]  # ValueError if bad
        if len(self.arms) < 2 or len(set(specs)) != len(specs):
            raise ValueError(f"arms must be two or more different preprocessings, got "
                             f"{list(self.arms)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and at least one, got {self.seeds}")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


SMOKE = dict(image_size=32, epochs=1, batch_size=16, steps_per_epoch=2, cache=False,
             arms=("none", "colour,hair,fov"), seeds=(0, 1), n_boot=200, smoke=True,
             synthetic_images=300, lr_schedule="constant", augment="none")


def arm_name(arm: str) -> str:
    """The short name of an arm ("none", "colour", "fov+hair+colour")."""
    return parse_preprocessing(arm).short_name()


def train_config(config: AblationConfig, arm: str, seed: int) -> TrainConfig:
    """The one training configuration of every run; only `preprocess` and `seed` vary."""
    pretrained = config.weights is not None
    return TrainConfig(
        dataset=config.dataset, data_dir=config.data_dir, backbone=config.backbone,
        image_size=config.image_size, weights=config.weights, epochs=config.epochs,
        stage1_epochs=1 if pretrained else 5, stage2_epochs=config.epochs,
        learning_rate=config.learning_rate, batch_size=config.batch_size,
        lr_schedule=config.lr_schedule, patience=0, steps_per_epoch=config.steps_per_epoch,
        augment=config.augment, imbalance="class_weight", cache=config.cache,
        subset=config.subset, synthetic_images=config.synthetic_images, seed=seed,
        preprocess=arm, smoke=config.smoke, run_eagerly=config.smoke,
        split_fractions=(0.7, 0.15, 0.15),
    )


def work_folder(config: AblationConfig, work_dir: str | os.PathLike | None) -> Path:
    """runs/ablation/<dataset>-<backbone>-<size> unless given; refuses other settings."""
    folder = Path(work_dir) if work_dir is not None else (
        paths.runs_dir() / "ablation" / f"{config.dataset}-{config.backbone}-{config.image_size}")
    folder.mkdir(parents=True, exist_ok=True)
    saved = folder / "ablation_config.json"
    if saved.is_file() and json.loads(saved.read_text()) != config.to_dict():
        raise DataError(f"{paths.display(folder)} holds an ablation with other settings; choose "
                        "another --work-dir or delete that folder")
    fileio.write_json(saved, config.to_dict())
    return folder


def shared_manifest(config: AblationConfig, folder: Path) -> pd.DataFrame:
    """The one lesion-grouped split of every run (built once, then read back)."""
    from utils.data import splits
    from utils.training.data import load_table

    path = folder / runs.MANIFEST
    if path.is_file():
        return load_manifest(path)
    probe = replace(train_config(config, "none", config.split_seed), seed=config.split_seed)
    table = load_table(probe.resolve(gpu_visible=False))
    manifest = splits.lesion_split(table, fractions=probe.split_fractions, seed=config.split_seed)
    save_manifest(manifest, path)
    return load_manifest(path)


def run_arm(config: AblationConfig, arm: str, seed: int, manifest: pd.DataFrame,
            folder: Path) -> Path:
    """Train (or resume, or reuse) the run of one arm and seed; returns its run folder."""
    from utils.training import train

    run_dir = folder / f"{arm_name(arm)}-seed{seed}"
    wanted = train_config(config, arm, seed).resolve()
    if (run_dir / runs.CONFIG).is_file():
        saved = TrainConfig.load(run_dir / runs.CONFIG)
        if replace(saved, mixed_precision=wanted.mixed_precision,
                   jit_compile=wanted.jit_compile) != wanted:
            raise DataError(f"{paths.display(run_dir)} holds a run with other settings; delete "
                            "it or choose another --work-dir")
        if runs.load_run(run_dir).complete:
            return run_dir
    print(f"ablation: arm {arm_name(arm)}, seed {seed} -> {paths.display(run_dir)}", flush=True)
    return train.train(wanted, run_dir=run_dir, manifest=manifest)


def step_effects(rows: pd.DataFrame, arms: tuple[str, ...]) -> dict[str, float]:
    """What the selected steps do to these images: share cropped to the field of view, mean
    share of pixels found to be hair (steps with their settings from the arms)."""
    from tqdm.auto import tqdm

    from utils.augmentation import preprocess
    from utils.augmentation.preprocess_dataset import decode

    settings = {}
    for arm in arms:
        steps = parse_preprocessing(arm)
        for step in steps.steps:
            settings.setdefault(step, getattr(steps, step))
    effects: dict[str, list[float]] = {"fov": [], "hair": []}
    for path in tqdm(rows["path"], desc="step effects", unit="img", leave=False):
        image = decode(Path(path).read_bytes())
        if "fov" in settings:
            effects["fov"].append(preprocess.field_of_view_box(image, settings["fov"]) is not None)
        if "hair" in settings:
            effects["hair"].append(float(preprocess.hair_mask(image, settings["hair"]).mean()))
    result = {}
    if effects["fov"]:
        result["fov_cropped_share"] = float(np.mean(effects["fov"]))
    if effects["hair"]:
        result["hair_pixel_share"] = float(np.mean(effects["hair"]))
        result["hair_images_over_1pct"] = float(np.mean(np.asarray(effects["hair"]) > 0.01))
    return result


def corruption_results(run_dir: Path, config: TrainConfig, n_boot: int) -> dict[str, Any]:
    """Corruption robustness of a run through utils.evaluation.corruptions, when that module
    exists and applies the run's preprocessing; else {"available": False, "reason": ...}."""
    import importlib.util

    name = "utils.evaluation.corruptions"
    if importlib.util.find_spec(name) is None:
        return {"available": False, "reason": f"{name} is not part of this version"}
    module = importlib.import_module(name)
    section = getattr(module, "corruption_section", None)
    if section is None or "preprocess" not in inspect.signature(section).parameters:
        return {"available": False,
                "reason": f"{name}.corruption_section does not take the run's `preprocess`, so "
                          "corrupted images would skip the arm's preprocessing"}
    from utils.training import models
    from utils.training.data import dataset_info, pipeline_preprocess

    manifest = load_manifest(run_dir / runs.MANIFEST)
    rows = manifest[manifest["split"] == "test"].reset_index(drop=True)
    model = models.load_model(run_dir / runs.MODEL, compile=False)
    result, _ = section(model, rows, dataset_info(config).classes, config.image_size,
                        config.resize_policy, n_boot=n_boot, seed=config.seed,
                        preprocess=pipeline_preprocess(config))
    return {"available": True, "mean_relative_to_clean": result.get("mean_relative_to_clean"),
            "mean_balanced_accuracy": result.get("mean_balanced_accuracy")}


def ablate(config: AblationConfig, work_dir: str | os.PathLike | None = None,
           corruptions: bool = True) -> dict[str, Any]:
    """Train every arm and seed (resumable) and compare them; returns the summary."""
    folder = work_folder(config, work_dir)
    manifest = shared_manifest(config, folder)
    run_dirs = {arm: [run_arm(config, arm, seed, manifest, folder) for seed in config.seeds]
                for arm in config.arms}
    reference = config.arms[0]
    frames = {arm: [read_predictions(d / runs.predictions_name("test")) for d in dirs]
              for arm, dirs in run_dirs.items()}
    first = frames[reference][0]
    for arm, arm_frames in frames.items():
        for frame in arm_frames:
            if list(frame["image_id"]) != list(first["image_id"]):
                raise DataError(f"arm {arm}: its test predictions are not the shared split's "
                                f"test images; delete {paths.display(folder)} and rerun")
    y_true, _, lesions = arrays_from_predictions(first)
    has_lesions = bool((lesions != first["image_id"].astype(str).to_numpy()).any())
    probs = {arm: [arrays_from_predictions(f)[1] for f in arm_frames]
             for arm, arm_frames in frames.items()}
    comparison = paired.paired_comparison(y_true, probs, reference,
                                          lesions if has_lesions else None, config.n_boot,
                                          seed=config.split_seed)
    test_rows = manifest[manifest["split"] == "test"]
    details = {}
    for arm, dirs in run_dirs.items():
        infos = [runs.load_run(d).info for d in dirs]
        resolved = runs.load_run(dirs[0]).config
        details[arm] = {
            "name": arm_name(arm), "preprocess": resolved.preprocess,
            "run_dirs": [paths.display(d) for d in dirs],
            "train_seconds": [i.get("duration_s") for i in infos],
            "best_val_balanced_accuracy": [i.get("best_val_balanced_accuracy") for i in infos],
            "corruptions": (corruption_results(dirs[0], resolved, config.n_boot) if corruptions
                            else {"available": False, "reason": "not asked (--no-corruptions)"}),
        }
    return {
        "config": config.to_dict(),
        "data": {"data_dir": config.data_dir, "dataset": resolved.dataset,
                 "n_train": int((manifest["split"] == "train").sum()),
                 "n_val": int((manifest["split"] == "val").sum()),
                 "n_test": int(len(test_rows)), "n_test_lesions": int(test_rows["lesion_id"]
                                                                      .nunique())},
        "train_config": {k: v for k, v in resolved.to_dict().items()
                         if k not in ("seed", "preprocess")},
        "device": runs.load_run(run_dirs[reference][0]).info.get("device"),
        "step_effects_on_test": step_effects(test_rows, config.arms),
        "comparison": comparison,
        "arms": details,
    }


# --------------------------------------------------------------------------- CLI
def _flag_type(annotation: str) -> Any:
    for name, kind in (("bool", bool), ("float", float), ("int", int)):
        if name in annotation:
            return kind
    return str


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per AblationConfig field, plus --smoke, --work-dir, --out, --note."""
    from utils.arguments import non_negative_int

    comments = _field_comments()
    for item in dataclasses.fields(AblationConfig):
        flag, help_text = "--" + item.name.replace("_", "-"), comments.get(item.name)
        if item.name == "smoke":
            continue
        if item.name in ("arms", "seeds"):
            parser.add_argument(flag, nargs="+",
                                type=non_negative_int if item.name == "seeds" else str,
                                default=None, help=help_text)
        elif _flag_type(str(item.type)) is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                                help=help_text)
        else:
            parser.add_argument(flag, type=_flag_type(str(item.type)), default=None,
                                metavar=item.name.upper(), help=help_text)
    parser.add_argument("--smoke", action="store_true",
                        help="tiny eager runs on synthetic data: checks the code path")
    parser.add_argument("--work-dir", default=None,
                        help="where the split and runs go (default runs/ablation/<dataset>-"
                             "<backbone>-<size>; reused to resume)")
    parser.add_argument("--out", default=str(paths.reports_dir() / "preprocessing_ablation.md"),
                        help="the markdown report (.json and .png are written beside it)")
    parser.add_argument("--note", default=None,
                        help="text added to the report's timing line, e.g. the machine")
    parser.add_argument("--no-corruptions", action="store_true",
                        help="skip the corruption robustness of each arm")


def _field_comments() -> dict[str, str]:
    comments = {}
    for line in inspect.getsource(AblationConfig).splitlines():
        name, colon, rest = line.strip().partition(":")
        if colon and name.isidentifier() and "  # " in rest:
            comments[name] = rest.split("  # ", 1)[1].strip()
    return comments


def config_from_args(args: argparse.Namespace) -> tuple[AblationConfig, dict[str, Any]]:
    """The config (smoke preset first when --smoke) and the options given, for the command."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(AblationConfig)
             if getattr(args, f.name, None) is not None and f.name != "smoke"}
    if isinstance(given.get("weights"), str) and given["weights"].lower() in ("none", "null"):
        given["weights"] = None
    values = {**(SMOKE if args.smoke else {}), **given}
    for name in ("arms", "seeds"):
        if name in values:
            values[name] = tuple(values[name])
    return replace(AblationConfig(), **values), given


def _option(name: str, value: Any) -> str:
    """An option as typed on the command line (the report names the command that made it)."""
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return f" {flag}" if value else f" --no-{name.replace('_', '-')}"
    if isinstance(value, (list, tuple)):
        return f" {flag} " + " ".join(map(str, value))
    return f" {flag} {value}"


def run(args: argparse.Namespace) -> int:
    from utils.studies import ablation_report

    try:
        config, given = config_from_args(args)
    except ValueError as error:
        raise DataError(str(error)) from None
    summary = ablate(config, args.work_dir, corruptions=not args.no_corruptions)
    command = "python -m utils ablate" + (" --smoke" if args.smoke else "") + "".join(
        _option(k, v) for k, v in given.items())
    for option, value in (("work-dir", args.work_dir), ("out", args.out), ("note", args.note)):
        if value is not None and not (option == "out" and Path(value).resolve() == (
                paths.reports_dir() / "preprocessing_ablation.md").resolve()):
            command += f" --{option} {json.dumps(value) if option == 'note' else value}"
    report = ablation_report.write(summary, args.out, command, args.note)
    print(report.read_text(encoding="utf-8"))
    print(f"report: {paths.display(report)}")
    return 0

"""Train a classifier: `train(config) -> run folder`, and the `python -m utils train` command.

Flow: table (read_table) -> lesion-grouped split (or a given manifest) -> optional offline
balancing -> tf.data pipelines -> model from the backbone registry -> fit -> best model ->
predictions CSVs. With pre-trained weights, stage 1 trains the head on a frozen backbone and
stage 2 fine-tunes from the registry's block boundary at a lower learning rate (BatchNorm kept in
inference mode); from scratch (weights=None) the whole network trains in one stage with
BatchNorm momentum 0.9. A killed run resumes from its last completed epoch (BackupAndRestore).

Failures: the options, data folder, manifest and weights file are checked before a run folder
is made; the process training into a folder holds its lock (utils.training.runs.lock_run), so a
second run pointed at it stops with a message; a run that fails before completing an epoch
removes the folder it made; a NaN loss stops the run with TrainingDivergedError (the best
checkpoint is kept); a damaged resume state stops it with the file to delete.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import time
import typing
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from utils import fileio, paths
from utils.arguments import checked
from utils.data.manifest import check_manifest, load_manifest, save_manifest
from utils.errors import ConfigError, DataError
from utils.scoring.predictions import write_predictions as write_predictions_csv
from utils.training import budget, runs
from utils.training.callbacks import (
    backup_dir,
    best_so_far,
    check_resume_state,
    make_callbacks,
    trim_history,
)
from utils.training.config import FIELD_CHOICES, TrainConfig, backbone_name, smoke_config
from utils.training.data import build_manifest, dataset_info, make_datasets
from utils.training.devices import configure_devices


# --------------------------------------------------------------------------- fit
def _compile(model: Any, lr: Any, config: TrainConfig) -> None:
    from utils.training import optim

    model.compile(optimizer=optim.make_optimizer(config, lr), loss=optim.make_loss(config),
                  metrics=["accuracy"], run_eagerly=config.run_eagerly,
                  jit_compile=bool(config.jit_compile) and not config.run_eagerly)


# a budgeted run's last stage may train up to this many times its planned epochs, until its
# deadline (fit_stages)
DEADLINE_EPOCH_FACTOR = 2


def stage_plan(config: TrainConfig) -> list[dict]:
    """[(stage, first epoch, last epoch, lr)]: one stage from scratch, two when pre-trained."""
    if not config.pretrained:
        return [dict(stage=0, start=0, end=config.epochs, lr=config.learning_rate)]
    return [dict(stage=1, start=0, end=config.stage1_epochs, lr=config.stage1_lr),
            dict(stage=2, start=config.stage1_epochs, end=config.total_epochs, lr=config.stage2_lr)]


def stage_weights(run_dir: Path, stage: int) -> Path:
    """Weights saved when a stage completes (a resume skips completed stages)."""
    return run_dir / "checkpoints" / f"stage{stage}.weights.h5"


def fit_stages(model: Any, data: dict, labels: dict, config: TrainConfig, run_dir: Path,
               class_weight: dict | None, deadline: float | None = None,
               compiled: bool = False) -> None:
    """Run each stage of stage_plan; completed stages (on resume) are skipped; `compiled`: the
    model is compiled (traced) for the first stage already (a budget's timing probe).

    deadline (time.time(), a budgeted run): the last stage trains until the deadline, up to
    DEADLINE_EPOCH_FACTOR times its planned epochs (the plan rests on a dozen timed steps, which
    can be off by a quarter either way), its cosine spread over that cap or the clock, whichever
    is further on (optim.cosine_callback); it stops early where the machine is slower than
    measured."""
    from utils.training import models

    plans = stage_plan(config)
    for plan in plans:
        stage = plan["stage"]
        if plan["end"] <= plan["start"]:
            continue
        if stage == 1:
            models.freeze_backbone(model)
        elif stage == 2:
            models.unfreeze_from(model, _unfreeze_layer(config))
        done = stage_weights(run_dir, stage)
        if done.is_file():  # finished before a restart: take its weights, go on
            models.load_weights_file(model, done, f"does not fit this run's {config.backbone}",
                                     f"delete it to train stage {stage} again")
            continue
        if not backup_dir(run_dir, stage).is_dir():  # no resume state: the stage starts over
            trim_history(run_dir, plan["start"])
        if not compiled:
            _compile(model, plan["lr"], config)
        compiled = False
        end = plan["end"]
        if deadline is not None and plan is plans[-1]:
            end = plan["start"] + DEADLINE_EPOCH_FACTOR * (plan["end"] - plan["start"])
        model.fit(
            data["train"], epochs=end, initial_epoch=plan["start"],
            steps_per_epoch=data["steps"], class_weight=class_weight, verbose=config.verbose,
            shuffle=False,  # tf.data shuffles (seeded, every epoch)
            callbacks=make_callbacks(run_dir, config, data["val"], labels["val"], stage,
                                     plan["end"] - plan["start"], plan["start"], deadline,
                                     plan["lr"], schedule_epochs=end - plan["start"]),
        )
        with _keras_tmp(done, ".weights.h5") as tmp:
            model.save_weights(str(tmp))


def _unfreeze_layer(config: TrainConfig) -> str:
    from utils.training import backbones

    return backbones.get_backbone(config.backbone).unfreeze_from


class _keras_tmp:
    """Atomic save for Keras files (Keras insists on the file suffix)."""

    def __init__(self, destination: Path, suffix: str):
        self.destination, self.suffix = Path(destination), suffix
        self.tmp = self.destination.with_name(f".{self.destination.stem}.part{suffix}")

    def __enter__(self) -> Path:
        self.destination.parent.mkdir(parents=True, exist_ok=True)
        return self.tmp

    def __exit__(self, kind, value, trace) -> None:
        if kind is None:
            os.replace(self.tmp, self.destination)
        elif self.tmp.exists():
            self.tmp.unlink()




# --------------------------------------------------------------------------- outputs
def write_predictions(model: Any, data: dict, manifest: pd.DataFrame, classes: Sequence[str],
                      run_dir: Path, splits: Sequence[str] = ("val", "test")) -> dict[str, Path]:
    """predictions_val.csv and predictions_test.csv of the run's model (`splits` of them)."""
    written = {}
    for split in splits:
        rows = manifest[manifest["split"] == split]
        if data.get(split) is None:
            probs = np.zeros((0, len(classes)))
        else:
            probs = model.predict(data[split], verbose=0)
        written[split] = write_predictions_csv(run_dir / runs.predictions_name(split), rows,
                                               probs, classes)
    return written


def git_commit() -> str | None:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=paths.repo_root(),
                                capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def run_info(started: float, config: TrainConfig, run_dir: Path, strategy: Any) -> dict:
    import keras
    import tensorflow as tf

    history = pd.read_csv(run_dir / runs.HISTORY) if (run_dir / runs.HISTORY).is_file() else None
    previous = run_dir / runs.RUN_INFO  # a resumed run adds the time of its earlier sessions
    earlier = json.loads(previous.read_text()).get("duration_s", 0.0) if previous.is_file() else 0.0
    gpus = tf.config.list_physical_devices("GPU")
    return {
        "duration_s": round(earlier + time.time() - started, 2),
        "device": f"{len(gpus)} GPU" if gpus else f"CPU ({os.cpu_count()} cores)",
        "replicas": int(strategy.num_replicas_in_sync),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "git_commit": git_commit(),
        "epochs_completed": 0 if history is None else int(len(history)),
        "best_val_balanced_accuracy": best_so_far(run_dir),
    }


# --------------------------------------------------------------------------- entry points
def prepare_run(config: TrainConfig, run_dir: str | os.PathLike | None,
                runs_root: str | os.PathLike | None = None) -> tuple[TrainConfig, Path]:
    """A new run folder (under runs_root, default runs/), or an existing one to resume (its
    config.json wins)."""
    if run_dir is not None and (Path(run_dir) / runs.CONFIG).is_file():
        run_dir = Path(run_dir)
        return TrainConfig.load(run_dir / runs.CONFIG), run_dir
    config = config.resolve()
    if run_dir is None:
        run_dir = runs.new_run_dir(config, root=runs_root)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config.save(run_dir / runs.CONFIG)
    return config, run_dir


def check_inputs(config: TrainConfig, run_dir: str | os.PathLike | None = None) -> TrainConfig:
    """The resolved config a run will use (a resumed folder's config.json wins), checked before
    any folder is made: option values (ConfigError), the data folder's layout, the manifest and
    the weights file (DataError / ModelFileError naming them)."""
    from utils.training import models

    if run_dir is not None and (Path(run_dir) / runs.CONFIG).is_file():
        config = TrainConfig.load(Path(run_dir) / runs.CONFIG)
        resuming_data = (Path(run_dir) / runs.MANIFEST).is_file()
    else:
        config, resuming_data = config.resolve(), False
    if not resuming_data and config.manifest is not None:
        if not Path(config.manifest).is_file():
            raise DataError(f"{config.manifest}: manifest not found; write one with "
                            "`python -m utils split`")
    elif not resuming_data and config.data_dir is not None:
        from utils.data import readers

        readers.detect_layout(config.data_dir)
    if config.weights not in (None, "imagenet") and not Path(config.weights).expanduser().is_file():
        raise models.MissingModelFileError(
            f"{config.weights}: weights file not found; pass None, 'imagenet' or the path of a "
            f"no-top weights file of {config.backbone}")
    return config


def train(config: TrainConfig, run_dir: str | os.PathLike | None = None,
          manifest: pd.DataFrame | None = None,
          runs_root: str | os.PathLike | None = None,
          predict_splits: Sequence[str] = ("val", "test")) -> Path:
    """Train per `config` into a new run folder (or resume `run_dir`); returns the folder.

    manifest: a split manifest to use instead of building one (ignored when resuming).
    runs_root: where new run folders go (default runs/). predict_splits: the splits whose
    predictions the run writes (an ensemble's members: val only). See the module docstring for
    what happens on bad input, a second process, a NaN loss or a damaged resume state."""
    from utils.training.devices import worker_run_dir

    started = time.time()
    run_dir = worker_run_dir(run_dir)  # non-chief workers of a cluster: a sub-folder of it
    config = check_inputs(config, run_dir)
    created = run_dir is None or not Path(run_dir).exists()
    folder = runs.new_run_dir(config, root=runs_root) if run_dir is None else Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with runs.lock_run(folder):
        try:
            config, folder = prepare_run(config, folder)
            return _train_in(config, folder, manifest, started, tuple(predict_splits))
        except BaseException:
            if created and runs.completed_epochs(folder) == 0:  # nothing worth keeping
                shutil.rmtree(folder, ignore_errors=True)
            raise


def _train_in(config: TrainConfig, run_dir: Path, manifest: pd.DataFrame | None,
              started: float, predict_splits: tuple[str, ...] = ("val", "test")) -> Path:
    """The training itself, in a prepared and locked run folder."""
    import keras

    from utils.training import models

    if (run_dir / runs.RUN_INFO).is_file() and (run_dir / runs.MODEL).is_file():
        # finished before: nothing to train, and its run_info.json and budget.json (time,
        # commit, CPU share of the training) stay as the training wrote them
        print(f"run folder: {paths.display(run_dir)} is finished; reused as it is")
        return run_dir
    if config.members > 1:
        return _train_ensemble(config, run_dir, _run_manifest(config, run_dir, manifest), started)
    check_resume_state(run_dir, [plan["stage"] for plan in stage_plan(config)])
    keras.utils.set_random_seed(config.seed)
    info = dataset_info(config)
    manifest = _run_manifest(config, run_dir, manifest)
    strategy = configure_devices(config)
    deadline, model = None, None
    if budget.sizes_run(config) and budget.load_report(run_dir) is None:
        # trace and time the model itself, then size the epochs to the budget
        config, data, model = budget.size_run(config, manifest, info.num_classes, strategy,
                                              started, run_dir, _compile)
        config.save(run_dir / runs.CONFIG)
        deadline = budget.load_report(run_dir)["deadline"]
    else:
        data = make_datasets(manifest, config, info.num_classes)
    labels = {s: manifest.loc[manifest["split"] == s, "label_index"].to_numpy(int)
              for s in ("train", "val", "test")}
    class_weight = None
    if config.imbalance == "class_weight" and not data.get("sample_weighted"):
        from utils.training import pipeline

        class_weight = pipeline.class_weights(labels["train"], info.num_classes)
    print(f"run folder: {paths.display(run_dir)}  ({config.backbone} @ {config.image_size} px, "
          f"{len(labels['train'])} train / {len(labels['val'])} val / {len(labels['test'])} test)")
    with strategy.scope():
        compiled = model is not None and not config.pretrained
        if model is None:
            model = models.build_classifier(
                config.backbone, info.num_classes, weights=config.weights,
                image_size=config.image_size, dropout=config.dropout,
                bn_momentum=config.bn_momentum)
        fit_stages(model, data, labels, config, run_dir, class_weight, deadline, compiled)
    finish_run(model, data, manifest, config, run_dir, started, strategy, predict_splits)
    budget.record_outcome(run_dir, config)
    return run_dir


def _run_manifest(config: TrainConfig, run_dir: Path,
                  manifest: pd.DataFrame | None) -> pd.DataFrame:
    """The run folder's manifest.csv (a resumed run's), else `manifest` or a new lesion split,
    checked and saved there."""
    if (run_dir / runs.MANIFEST).is_file():
        return load_manifest(run_dir / runs.MANIFEST)
    manifest = build_manifest(config) if manifest is None else manifest
    check_manifest(manifest, "split manifest", required_splits=("train", "val"))
    if config.metadata_fusion:  # before training, not when the result is evaluated
        from utils.scoring import metadata_fusion

        metadata_fusion.check_metadata(manifest[manifest["split"] == "train"],
                                       f"{config.dataset} training split")
    save_manifest(manifest, run_dir / runs.MANIFEST)
    return manifest


def _train_ensemble(config: TrainConfig, run_dir: Path, manifest: pd.DataFrame,
                    started: float) -> Path:
    """An ensemble run (utils.training.ensemble): its members, then the averaged model, its
    val/test predictions, run_info.json and budget.json."""
    import keras
    import tensorflow as tf

    from utils.training import ensemble

    cpu_start = budget.cpu_snapshot()
    folders = ensemble.train_members(config, run_dir, manifest, started, train)
    config = ensemble.sized_config(config, folders)
    config.save(run_dir / runs.CONFIG)
    members = [keras.saving.load_model(str(f / runs.MODEL), safe_mode=True) for f in folders]
    model = ensemble.average_model(members)
    with _keras_tmp(run_dir / runs.MODEL, ".keras") as tmp:
        model.save(str(tmp))
    info = dataset_info(config)
    data = make_datasets(manifest, config, info.num_classes)
    write_predictions(model, data, manifest, info.classes, run_dir)
    record = run_info(started, config, run_dir, tf.distribute.get_strategy())
    summary = ensemble.members_summary(folders)
    record.update(epochs_completed=int(sum(m["epochs_completed"] or 0 for m in summary)),
                best_val_balanced_accuracy=ensemble.validation_balanced_accuracy(run_dir),
                members=summary)
    report = ensemble.budget_report(config, folders, cpu_start, started)
    if report is not None:
        fileio.write_json(run_dir / runs.BUDGET, report)
    fileio.write_json(run_dir / runs.RUN_INFO, record)
    budget.record_outcome(run_dir, config)
    return run_dir


def finish_run(model: Any, data: dict, manifest: pd.DataFrame, config: TrainConfig,
               run_dir: Path, started: float, strategy: Any = None,
               predict_splits: Sequence[str] = ("val", "test")) -> Path:
    """Write the run folder's outputs: the best checkpoint's model.keras, the val/test
    predictions and run_info.json (the one writer of these files)."""
    import tensorflow as tf

    from utils.training import models

    best = run_dir / runs.BEST_CHECKPOINT
    if best.is_file() and config.select_best:  # same model object: traced predict reused
        models.load_weights_file(model, best, "is not a checkpoint of this run's model",
                                 "delete it and run again to keep the last epoch's model "
                                 "instead, or train a new run")
    with _keras_tmp(run_dir / runs.MODEL, ".keras") as tmp:
        model.save(str(tmp))
    write_predictions(model, data, manifest, dataset_info(config).classes, run_dir,
                      predict_splits)
    strategy = strategy or tf.distribute.get_strategy()
    fileio.write_json(run_dir / runs.RUN_INFO, run_info(started, config, run_dir, strategy))
    return run_dir


# --------------------------------------------------------------------------- CLI
def _field_type(annotation: Any) -> Any:
    """The argparse type of a dataclass field annotation (str, int, float, bool, tuple)."""
    text = str(annotation)
    for name, kind in (("tuple", "tuple"), ("bool", bool), ("float", float), ("int", int)):
        if name in text:
            return kind
    return str


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field (--image-size, --stage1-lr, ...) plus run options."""
    from utils.training.config import field_comments

    hints, comments = typing.get_type_hints(TrainConfig), field_comments()
    for item in dataclasses.fields(TrainConfig):
        flag = "--" + item.name.replace("_", "-")
        kind = _field_type(hints[item.name])
        if item.name in ("smoke", "data_dir", "manifest"):
            continue
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                                help=comments.get(item.name))
        elif kind == "tuple":
            parser.add_argument(flag, type=float, nargs=3, default=None, metavar="F",
                                help=comments.get(item.name))
        elif item.name in FIELD_CHOICES:
            parser.add_argument(flag, choices=FIELD_CHOICES[item.name], default=None,
                                help=comments.get(item.name))
        else:
            kind = checked(backbone_name, "backbone") if item.name == "backbone" else kind
            parser.add_argument(flag, type=kind, default=None, metavar=item.name.upper(),
                                help=comments.get(item.name))
    parser.add_argument("--preset", choices=("ham10000", "isic2019", "synthetic"), default=None,
                        help="start from a dataset preset (utils.training.config.PRESETS)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny synthetic run from scratch: checks the code path")
    parser.add_argument("--data-dir", default=None, help="dataset folder (default: synthetic)")
    parser.add_argument("--manifest", default=None, help="use this split manifest CSV")
    parser.add_argument("--run-dir", "--resume", dest="run_dir", default=None,
                        help="run folder; an existing one is resumed from its last epoch")
    parser.add_argument("--runs-root", default=None, help="where new run folders go (runs/)")


def _none_literal(value: Any) -> Any:
    return None if isinstance(value, str) and value.lower() in ("none", "null") else value


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """TrainConfig from parsed options: smoke or preset base, then the given fields."""
    from utils.training.config import preset

    overrides = {}
    for item in dataclasses.fields(TrainConfig):
        value = getattr(args, item.name, None)
        if value is not None and item.name not in ("smoke", "budget"):
            overrides[item.name] = _none_literal(value) if item.name == "weights" else value
    try:
        if args.smoke:
            base = smoke_config()
        elif args.preset:
            base = preset(args.preset)
        else:
            base = TrainConfig()
        if getattr(args, "budget", None):  # the budget's recipe, then the explicit options
            base = budget.apply_budget(args.budget, base)
        return dataclasses.replace(base, **overrides)
    except ConfigError:
        raise
    except (ValueError, TypeError) as error:  # a field's own check: still the user's option
        raise ConfigError(f"bad training option: {error}") from None


def run(args: argparse.Namespace) -> int:
    run_dir = train(config_from_args(args), run_dir=args.run_dir, runs_root=args.runs_root)
    result = json.loads((run_dir / runs.RUN_INFO).read_text())
    print(f"done in {result['duration_s']:.0f} s; best val balanced accuracy "
          f"{result['best_val_balanced_accuracy']}; run folder {paths.display(run_dir)}")
    return 0

"""Train a classifier: `train(config) -> run folder`, and the `python -m utils train` command.

Flow: table (read_table) -> lesion-grouped split (or a given manifest) -> optional offline
balancing -> tf.data pipelines -> model from the backbone registry -> fit -> best model ->
predictions CSVs. With pre-trained weights, stage 1 trains the head on a frozen backbone and
stage 2 fine-tunes from the registry's block boundary at a lower learning rate (BatchNorm kept in
inference mode); from scratch (weights=None) the whole network trains in one stage with
BatchNorm momentum 0.9. A killed run resumes from its last completed epoch (BackupAndRestore).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import time
import typing
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from utils import datasets, fileio, paths
from utils.config import TrainConfig, smoke_config

BEST_CHECKPOINT = Path("checkpoints") / "best.weights.h5"
MONITOR = "val_balanced_accuracy"


# --------------------------------------------------------------------------- data
def dataset_info(config: TrainConfig) -> datasets.DatasetInfo:
    """Class facts of the configured dataset (synthetic data uses the HAM10000 classes)."""
    return datasets.ISIC2019 if config.dataset == "isic2019" else datasets.HAM10000


def data_dir(config: TrainConfig) -> Path:
    """The dataset folder; data_dir=None generates (once) the synthetic default dataset."""
    if config.data_dir is not None:
        return Path(config.data_dir).expanduser().resolve()
    from utils import synthetic

    layout = "ISIC_2019" if config.dataset == "isic2019" else "HAM10000"
    root = paths.synthetic_dir() / f"{layout}-n{config.synthetic_images}-seed{config.seed}"
    generate = (synthetic.generate_isic2019 if config.dataset == "isic2019"
                else synthetic.generate_ham10000)
    return generate(root, n_images=config.synthetic_images, seed=config.seed)  # resumes/skips


def load_table(config: TrainConfig) -> pd.DataFrame:
    """The dataset TABLE (read_table of the data folder), a seeded subset when configured."""
    from utils import readers

    table = readers.read_table(data_dir(config))
    if config.subset is not None and config.subset < len(table):
        table = table.sample(n=config.subset, random_state=config.seed).sort_index()
    return table


def build_manifest(config: TrainConfig) -> pd.DataFrame:
    """The split manifest: a given manifest CSV, else lesion_split of the table; then the
    offline-balanced manifest when augment is offline/both."""
    from utils import splits

    if config.manifest is not None:
        manifest = splits.load_manifest(config.manifest)
    else:
        manifest = splits.lesion_split(load_table(config), fractions=config.split_fractions,
                                       seed=config.seed)
    if config.augment in ("offline", "both"):
        manifest = offline_balance(manifest, config)
    check_manifest(manifest)
    return manifest


def check_manifest(manifest: pd.DataFrame) -> None:
    missing = {"train", "val"} - set(manifest["split"])
    if missing:
        raise ValueError(f"the manifest has no {sorted(missing)} rows; training needs train and "
                         f"val splits (check split_fractions or the manifest file)")


def offline_balance(manifest: pd.DataFrame, config: TrainConfig) -> pd.DataFrame:
    """Augment the training split offline up to the balance target (utils.balance); the output
    folder under data/processed/balanced/ is keyed by the training images, size and seed."""
    import hashlib

    from utils import balance

    train_ids = manifest.loc[manifest["split"] == "train", "image_id"].astype(str)
    key = hashlib.sha256("\n".join(sorted(train_ids)).encode()).hexdigest()[:12]
    out_dir = (paths.processed_dir() / "balanced" /
               f"{config.dataset}-{config.image_size}px-seed{config.seed}-{key}")
    return balance.balance_manifest(manifest, out_dir, target=config.balance_target,
                                    seed=config.seed, image_size=config.image_size)


def online_augment(config: TrainConfig) -> Any:
    """The per-image augmentation callable of the configured mode (None without online)."""
    if config.augment not in ("online", "both"):
        return None
    from utils import augment

    return augment.online_augment_fn(augment.AugmentConfig(), seed=config.seed)


def make_datasets(manifest: pd.DataFrame, config: TrainConfig, num_classes: int) -> dict:
    """train/val/test tf.data pipelines and the training steps per epoch."""
    from utils import pipeline

    common = dict(image_size=config.image_size, batch_size=config.batch_size,
                  num_classes=num_classes, seed=config.seed, resize_policy=config.resize_policy,
                  cache=config.cache, deterministic=config.deterministic)
    train_rows = manifest[manifest["split"] == "train"]
    result = {
        "train": pipeline.make_dataset(train_rows, training=True, augment=online_augment(config),
                                       balanced=config.imbalance == "sampling", **common),
        "steps": pipeline.steps_for(len(train_rows), config.batch_size),
    }
    if config.steps_per_epoch:
        result["steps"] = min(result["steps"], config.steps_per_epoch)
    for split in ("val", "test"):
        rows = manifest[manifest["split"] == split]
        result[split] = pipeline.make_dataset(rows, training=False, **common) if len(rows) else None
    return result


# --------------------------------------------------------------------------- devices
def configure_devices(config: TrainConfig) -> Any:
    """Mixed precision + the distribution strategy; returns the strategy."""
    import keras
    import tensorflow as tf

    keras.mixed_precision.set_global_policy("mixed_float16" if config.mixed_precision
                                            else "float32")
    choice = config.strategy
    if choice == "auto":
        if os.environ.get("TF_CONFIG"):
            choice = "multiworker"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            choice = "mirrored"
        else:
            choice = "default"
    if choice == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if choice == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy(devices=[d.name for d in devices])
    return tf.distribute.get_strategy()


# --------------------------------------------------------------------------- callbacks
def balanced_accuracy(y_true: np.ndarray, probs: np.ndarray) -> float:
    """utils.metrics' balanced accuracy (tied maxima count as wrong, as the ISIC scorer), so the
    checkpoint monitors exactly the metric the evaluation reports."""
    from utils import metrics

    matrices = metrics.confusion_matrices(y_true, metrics.predicted_labels(probs),
                                          np.asarray(probs).shape[1])
    return float(metrics.rates_from_confusion(matrices)["balanced_accuracy"][0])


def _validation_callback_class():
    import keras

    class ValidationMetrics(keras.callbacks.Callback):
        """Predict the validation set at epoch end; log val_loss, val_accuracy and
        val_balanced_accuracy (fit gets no validation_data: one pass instead of two)."""

        def __init__(self, dataset: Any, labels: np.ndarray):
            super().__init__()
            self.dataset, self.labels = dataset, np.asarray(labels, dtype=int)

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            probs = self.model.predict(self.dataset, verbose=0).astype("float64")
            picked = np.clip(probs[np.arange(len(self.labels)), self.labels], 1e-7, 1.0)
            if logs is not None:
                logs["val_loss"] = float(-np.log(picked).mean())
                logs["val_accuracy"] = float((probs.argmax(1) == self.labels).mean())
                logs[MONITOR] = balanced_accuracy(self.labels, probs)

    return ValidationMetrics


def _crash_callback_class():
    import keras

    class CrashAfter(keras.callbacks.Callback):
        """Test hook: hard-kill the process after N batches of a given epoch."""

        def __init__(self, epoch: int, batches: int):
            super().__init__()
            self.epoch, self.batches, self.current = epoch, batches, -1

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.current = epoch

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            if self.current == self.epoch and batch + 1 >= self.batches:
                os._exit(17)

    return CrashAfter


def best_so_far(run_dir: Path) -> float | None:
    """The best val_balanced_accuracy already logged in history.csv (resume), else None."""
    history = run_dir / "history.csv"
    if not history.is_file():
        return None
    frame = pd.read_csv(history)
    return float(frame[MONITOR].max()) if MONITOR in frame and len(frame) else None


def make_callbacks(run_dir: Path, config: TrainConfig, val_dataset: Any, val_labels: np.ndarray,
                   stage: int, stage_epochs: int) -> list:
    """Validation metrics first (later callbacks read its logs), then logging/checkpoints."""
    import keras

    callbacks = [
        _validation_callback_class()(val_dataset, val_labels),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        keras.callbacks.ModelCheckpoint(
            str(run_dir / BEST_CHECKPOINT), monitor=MONITOR, mode="max", save_best_only=True,
            save_weights_only=True, initial_value_threshold=best_so_far(run_dir)),
        keras.callbacks.BackupAndRestore(str(run_dir / "backup" / f"stage{stage}")),
        keras.callbacks.TensorBoard(str(run_dir / "logs"), write_graph=False),
    ]
    if config.patience:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=MONITOR, mode="max", patience=config.patience, restore_best_weights=False))
    if config.lr_schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor=MONITOR, mode="max", factor=0.3,
            patience=max(2, config.patience // 2) if config.patience else 3,
            min_lr=1e-7))
    crash = os.environ.get("UTILS_TRAIN_CRASH_AFTER")  # test-only hook: "epoch:batches"
    if crash:
        epoch, batches = (int(v) for v in crash.split(":"))
        callbacks.append(_crash_callback_class()(epoch, batches))
    return callbacks


def learning_rate(base: float, config: TrainConfig, steps: int, epochs: int) -> Any:
    """A float, or a cosine decay over the stage when lr_schedule == "cosine"."""
    if config.lr_schedule != "cosine":
        return base
    import keras

    return keras.optimizers.schedules.CosineDecay(base, decay_steps=max(1, steps * epochs))


# --------------------------------------------------------------------------- fit
def _compile(model: Any, lr: Any, config: TrainConfig) -> None:
    import keras

    model.compile(optimizer=keras.optimizers.Adam(lr), loss="categorical_crossentropy",
                  metrics=["accuracy"], run_eagerly=config.run_eagerly,
                  jit_compile=bool(config.jit_compile) and not config.run_eagerly)


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
               class_weight: dict | None) -> None:
    """Run each stage of stage_plan; completed stages (on resume) are skipped."""
    from utils import models

    for plan in stage_plan(config):
        stage = plan["stage"]
        if plan["end"] <= plan["start"]:
            continue
        if stage == 1:
            models.freeze_backbone(model)
        elif stage == 2:
            models.unfreeze_from(model, _unfreeze_layer(config))
        done = stage_weights(run_dir, stage)
        if done.is_file():  # finished before a restart: take its weights, go on
            model.load_weights(str(done))
            continue
        lr = learning_rate(plan["lr"], config, data["steps"], plan["end"] - plan["start"])
        _compile(model, lr, config)
        model.fit(
            data["train"], epochs=plan["end"], initial_epoch=plan["start"],
            steps_per_epoch=data["steps"], class_weight=class_weight, verbose=config.verbose,
            shuffle=False,  # tf.data shuffles (seeded, every epoch)
            callbacks=make_callbacks(run_dir, config, data["val"], labels["val"], stage,
                                     plan["end"] - plan["start"]),
        )
        with _keras_tmp(done, ".weights.h5") as tmp:
            model.save_weights(str(tmp))


def _unfreeze_layer(config: TrainConfig) -> str:
    from utils import backbones

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
def predictions_frame(rows: pd.DataFrame, probs: np.ndarray, classes: Sequence[str]) -> pd.DataFrame:
    """PREDICTIONS CSV contract: ids, label, label_index, split, one column per class."""
    frame = rows[["image_id", "lesion_id", "label", "label_index", "split"]].reset_index(drop=True)
    probabilities = pd.DataFrame(np.asarray(probs, dtype="float64"), columns=list(classes))
    return pd.concat([frame, probabilities], axis=1)


def write_predictions(model: Any, data: dict, manifest: pd.DataFrame, classes: Sequence[str],
                      run_dir: Path) -> dict[str, Path]:
    written = {}
    for split in ("val", "test"):
        rows = manifest[manifest["split"] == split]
        if data.get(split) is None:
            probs = np.zeros((0, len(classes)))
        else:
            probs = model.predict(data[split], verbose=0)
        written[split] = fileio.write_csv(run_dir / f"predictions_{split}.csv",
                                          predictions_frame(rows, probs, classes))
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

    history = pd.read_csv(run_dir / "history.csv") if (run_dir / "history.csv").is_file() else None
    previous = run_dir / "run_info.json"  # a resumed run adds the time of its earlier sessions
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
    from utils import runs

    if run_dir is not None and (Path(run_dir) / "config.json").is_file():
        run_dir = Path(run_dir)
        return TrainConfig.load(run_dir / "config.json"), run_dir
    config = config.resolve()
    if run_dir is None:
        run_dir = runs.new_run_dir(config, root=runs_root)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config.save(run_dir / "config.json")
    return config, run_dir


def train(config: TrainConfig, run_dir: str | os.PathLike | None = None,
          manifest: pd.DataFrame | None = None,
          runs_root: str | os.PathLike | None = None) -> Path:
    """Train per `config` into a new run folder (or resume `run_dir`); returns the folder.

    manifest: a split manifest to use instead of building one (ignored when resuming).
    runs_root: where new run folders go (default runs/)."""
    import keras

    from utils import models, splits

    started = time.time()
    config, run_dir = prepare_run(config, run_dir, runs_root)
    keras.utils.set_random_seed(config.seed)
    info = dataset_info(config)
    if (run_dir / "manifest.csv").is_file():
        manifest = splits.load_manifest(run_dir / "manifest.csv")
    else:
        manifest = build_manifest(config) if manifest is None else manifest
        check_manifest(manifest)
        splits.save_manifest(manifest, run_dir / "manifest.csv")
    strategy = configure_devices(config)
    data = make_datasets(manifest, config, info.num_classes)
    labels = {s: manifest.loc[manifest["split"] == s, "label_index"].to_numpy(int)
              for s in ("train", "val", "test")}
    class_weight = None
    if config.imbalance == "class_weight":
        from utils import pipeline

        class_weight = pipeline.class_weights(labels["train"], info.num_classes)
    print(f"run folder: {paths.display(run_dir)}  ({config.backbone} @ {config.image_size} px, "
          f"{len(labels['train'])} train / {len(labels['val'])} val / {len(labels['test'])} test)")
    with strategy.scope():
        model = models.build_classifier(
            config.backbone, info.num_classes, weights=config.weights,
            image_size=config.image_size, dropout=config.dropout, bn_momentum=config.bn_momentum)
        fit_stages(model, data, labels, config, run_dir, class_weight)
    best = run_dir / BEST_CHECKPOINT
    if best.is_file():  # same model object: its traced predict function is reused
        model.load_weights(str(best))
    with _keras_tmp(run_dir / "model.keras", ".keras") as tmp:
        model.save(str(tmp))
    write_predictions(model, data, manifest, info.classes, run_dir)
    fileio.write_json(run_dir / "run_info.json", run_info(started, config, run_dir, strategy))
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
    from utils.config import field_comments

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
        else:
            parser.add_argument(flag, type=kind, default=None, metavar=item.name.upper(),
                                help=comments.get(item.name))
    parser.add_argument("--preset", choices=("ham10000", "isic2019", "synthetic"), default=None,
                        help="start from a dataset preset (utils.config.PRESETS)")
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
    from utils.config import preset

    overrides = {}
    for item in dataclasses.fields(TrainConfig):
        value = getattr(args, item.name, None)
        if value is not None and item.name != "smoke":
            overrides[item.name] = _none_literal(value) if item.name == "weights" else value
    if args.smoke:
        return smoke_config(**overrides)
    if args.preset:
        return preset(args.preset, **overrides)
    return TrainConfig(**overrides)


def run(args: argparse.Namespace) -> int:
    run_dir = train(config_from_args(args), run_dir=args.run_dir, runs_root=args.runs_root)
    result = json.loads((run_dir / "run_info.json").read_text())
    print(f"done in {result['duration_s']:.0f} s; best val balanced accuracy "
          f"{result['best_val_balanced_accuracy']}; run folder {paths.display(run_dir)}")
    return 0

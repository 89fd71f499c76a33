"""Keras callbacks of a training run: a stop on a NaN loss, validation metrics (the checkpoint
monitors the reported balanced accuracy), CSV history, best-epoch checkpoint, resume
(BackupAndRestore), TensorBoard, early stopping, the plateau schedule and a test-only crash hook;
and the checks of a run folder's resume state before a run resumes."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from utils import fileio, paths
from utils.errors import DataError, UserError
from utils.training import runs
from utils.training.config import TrainConfig

MONITOR = "val_balanced_accuracy"
BACKUP_WEIGHTS = "latest.weights.h5"  # what keras.callbacks.BackupAndRestore writes
BACKUP_METADATA = "training_metadata.json"


class TrainingDivergedError(UserError, RuntimeError):
    """The training loss became NaN or infinite; the message says what was kept."""


def diverged_message(run_dir: Path, epoch: int, batch: int, loss: Any) -> str:
    """What happened, what is kept, what to do."""
    text = (f"training diverged: the loss became {loss} in epoch {epoch + 1}, batch {batch + 1} "
            f"(run folder {paths.display(run_dir)}). ")
    best = best_so_far(run_dir) if runs.completed_epochs(run_dir) else None
    if best is not None and (run_dir / runs.BEST_CHECKPOINT).is_file():
        text += (f"The best checkpoint so far (val balanced accuracy {best:.3f}) is kept in "
                 f"{paths.display(run_dir / runs.BEST_CHECKPOINT)}. ")
    else:
        text += "No epoch had completed: there is no checkpoint to keep. "
    return text + ("Start a new run with a lower learning rate (--learning-rate, or --stage1-lr "
                   "/ --stage2-lr with pre-trained weights) or a smaller --batch-size.")


def _nan_callback_class():
    import keras

    class StopOnNaN(keras.callbacks.TerminateOnNaN):
        """keras' TerminateOnNaN raising TrainingDivergedError at once: no later callback sees
        the NaN weights (no checkpoint, backup or history row of the diverged epoch)."""

        def __init__(self, run_dir: Path):
            super().__init__(raise_error=True)
            self.run_dir, self.epoch = Path(run_dir), 0

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.epoch = epoch

        def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
            try:
                super().on_batch_end(batch, logs)
            except RuntimeError:
                loss = (logs or {}).get("loss")
                raise TrainingDivergedError(
                    diverged_message(self.run_dir, self.epoch, batch, loss)) from None

    return StopOnNaN


def balanced_accuracy(y_true: np.ndarray, probs: np.ndarray) -> float:
    """utils.scoring.metrics' balanced accuracy (tied maxima count as wrong, as the ISIC scorer),
    so the
    checkpoint monitors exactly the metric the evaluation reports."""
    from utils.scoring import metrics

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


def backup_dir(run_dir: Path, stage: int) -> Path:
    """The BackupAndRestore folder of one stage."""
    return Path(run_dir) / runs.BACKUP_DIR / f"stage{stage}"


def _h5_problem(path: Path) -> str | None:
    """Why an HDF5 weights file cannot be read in full (None when every array reads)."""
    import h5py

    def read(name: str, item: Any) -> None:
        if isinstance(item, h5py.Dataset):
            item[()]

    try:
        with h5py.File(path, "r") as handle:
            handle.visititems(read)
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        return " ".join(str(error).split())[:200] or type(error).__name__
    return None


def check_resume_state(run_dir: Path, stages: list[int]) -> None:
    """DataError, with the way out, when what a resume would read is damaged: the history, a
    stage's completed weights, or a stage's BackupAndRestore state."""
    run_dir = Path(run_dir)
    history = run_dir / runs.HISTORY
    if history.is_file() and history.stat().st_size:
        try:
            pd.read_csv(history)
        except (ValueError, OSError) as error:
            raise DataError(f"{history}: unreadable ({error}); delete the run folder "
                            f"{paths.display(run_dir)} and train again") from None
    for stage in stages:
        weights = run_dir / "checkpoints" / f"stage{stage}.weights.h5"
        problem = _h5_problem(weights) if weights.is_file() else None
        if problem:
            raise DataError(f"{weights}: the weights of completed stage {stage} are unreadable "
                            f"({problem}); delete this file to train stage {stage} again")
        folder = backup_dir(run_dir, stage)
        problem = _backup_problem(folder)
        if problem:
            raise DataError(
                f"{folder}: the saved state to resume stage {stage} from is unreadable "
                f"({problem}). Delete the folder {folder} to restart stage {stage} from its "
                "first epoch (earlier stages and the best checkpoint are kept)")


def _backup_problem(folder: Path) -> str | None:
    weights, metadata = folder / BACKUP_WEIGHTS, folder / BACKUP_METADATA
    if weights.is_file():
        problem = _h5_problem(weights)
        if problem:
            return f"{weights.name}: {problem}"
    if metadata.is_file():
        try:
            epoch = json.loads(metadata.read_text(encoding="utf-8"))["epoch"]
            if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
                raise ValueError(f"epoch {epoch!r}")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
            return f"{metadata.name}: {error}"
    return None


def trim_history(run_dir: Path, first_epoch: int) -> int:
    """Drop history rows of epochs >= first_epoch (a stage restarted from its beginning);
    returns how many were dropped."""
    history = Path(run_dir) / runs.HISTORY
    if not history.is_file() or not history.stat().st_size:
        return 0
    frame = pd.read_csv(history)
    if "epoch" not in frame:
        return 0
    kept = frame[frame["epoch"] < first_epoch]
    if len(kept) < len(frame):
        fileio.write_csv(history, kept)
    return len(frame) - len(kept)


def best_so_far(run_dir: Path) -> float | None:
    """The best val_balanced_accuracy already logged in history.csv (resume), else None."""
    history = run_dir / runs.HISTORY
    if not history.is_file():
        return None
    frame = pd.read_csv(history)
    return float(frame[MONITOR].max()) if MONITOR in frame and len(frame) else None


def make_callbacks(run_dir: Path, config: TrainConfig, val_dataset: Any, val_labels: np.ndarray,
                   stage: int, stage_epochs: int, start_epoch: int = 0,
                   deadline: float | None = None, base_lr: float | None = None,
                   schedule_epochs: int | None = None) -> list:
    """Resume, weight averaging, validation metrics (later callbacks read its logs), then
    logging/checkpoints; a wall-clock `deadline` (time.time()) stops training before an epoch
    that would end after it. schedule_epochs: the cosine's length when it differs from the
    stage's planned epochs (a budgeted run's epoch cap)."""
    import keras

    from utils.training import averaging

    # A NaN stop first (no later callback sees NaN weights), the resume state (it saves the
    # trained weights), the weight average (it swaps the averaged weights in at epoch end), then
    # what must see the averaged model.
    callbacks = [
        _nan_callback_class()(run_dir),
        keras.callbacks.BackupAndRestore(str(run_dir / runs.BACKUP_DIR / f"stage{stage}")),
    ]
    if config.lr_schedule == "cosine":
        from utils.training import optim

        callbacks.append(optim.cosine_callback(
            config.learning_rate if base_lr is None else base_lr, config,
            schedule_epochs or stage_epochs, deadline))
    average = averaging.make_callback(config, run_dir / runs.average_state_name(stage),
                                      start_epoch, start_epoch + stage_epochs)
    if average is not None:
        callbacks.append(average)
    callbacks += [
        _validation_callback_class()(val_dataset, val_labels),
        keras.callbacks.CSVLogger(str(run_dir / runs.HISTORY), append=True),
        keras.callbacks.ModelCheckpoint(
            str(run_dir / runs.BEST_CHECKPOINT), monitor=MONITOR, mode="max", save_best_only=True,
            save_weights_only=True, initial_value_threshold=best_so_far(run_dir)),
        keras.callbacks.TensorBoard(str(run_dir / runs.LOGS_DIR), write_graph=False),
    ]
    if config.patience:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=MONITOR, mode="max", patience=config.patience, restore_best_weights=False))
    if config.lr_schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor=MONITOR, mode="max", factor=0.3,
            patience=max(2, config.patience // 2) if config.patience else 3,
            min_lr=1e-7))
    if deadline is not None:
        from utils.training import budget

        callbacks.append(budget.deadline_callback(deadline))
    crash = os.environ.get("UTILS_TRAIN_CRASH_AFTER")  # test-only hook: "epoch:batches"
    if crash:
        epoch, batches = (int(v) for v in crash.split(":"))
        callbacks.append(_crash_callback_class()(epoch, batches))
    return callbacks

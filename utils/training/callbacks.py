"""Keras callbacks of a training run: validation metrics (the checkpoint monitors the reported
balanced accuracy), CSV history, best-epoch checkpoint, resume (BackupAndRestore), TensorBoard,
early stopping, the plateau schedule and a test-only crash hook."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from utils.training import runs
from utils.training.config import TrainConfig

MONITOR = "val_balanced_accuracy"


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


def best_so_far(run_dir: Path) -> float | None:
    """The best val_balanced_accuracy already logged in history.csv (resume), else None."""
    history = run_dir / runs.HISTORY
    if not history.is_file():
        return None
    frame = pd.read_csv(history)
    return float(frame[MONITOR].max()) if MONITOR in frame and len(frame) else None


def make_callbacks(run_dir: Path, config: TrainConfig, val_dataset: Any, val_labels: np.ndarray,
                   stage: int, stage_epochs: int, start_epoch: int = 0,
                   deadline: float | None = None, base_lr: float | None = None) -> list:
    """Resume, weight averaging, validation metrics (later callbacks read its logs), then
    logging/checkpoints; a wall-clock `deadline` (time.time()) stops training before an epoch
    that would end after it."""
    import keras

    from utils.training import averaging

    # Resume state first (it saves the trained weights), then the weight average (it swaps the
    # averaged weights in at epoch end), then what must see the averaged model.
    callbacks = [keras.callbacks.BackupAndRestore(str(run_dir / runs.BACKUP_DIR / f"stage{stage}"))]
    if config.lr_schedule == "cosine":
        from utils.training import optim

        callbacks.append(optim.cosine_callback(
            config.learning_rate if base_lr is None else base_lr, config, stage_epochs))
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

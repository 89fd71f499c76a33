"""Weight averaging during training: an exponential moving average (EMA, updated every step) or
stochastic weight averaging (SWA, the mean of the epoch-end weights from a start epoch on).

The average covers every model weight, BatchNorm moving statistics included (as timm's ModelEma
does), so the averaged model is evaluated with statistics that match it. At each epoch end the
averaged weights are swapped into the model: the validation callback, the history and the
best-epoch checkpoint all see the averaged model; the next epoch swaps the trained weights back
and training continues from them. The average is saved at each epoch end (`state_path`), so a
resumed run (BackupAndRestore restores the trained weights) continues the same average.

EMA decay per step: min(decay, (1 + n) / (10 + n)) after n updates (the warm-up of TensorFlow's
ExponentialMovingAverage), so early averages are not dominated by the random initialisation.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from utils import fileio
from utils.training.config import TrainConfig


def ema_decay(decay: float, updates: int) -> float:
    """The decay applied at update number `updates` (0-based), with warm-up."""
    return float(min(decay, (1.0 + updates) / (10.0 + updates)))


def swa_start_epoch(config: TrainConfig, stage_start: int, stage_end: int) -> int:
    """First epoch whose end weights SWA averages (a fraction of the stage's epochs)."""
    return stage_start + int(np.floor(float(config.swa_start) * (stage_end - stage_start)))


def _callback_class():
    import keras
    import tensorflow as tf

    class WeightAverage(keras.callbacks.Callback):
        """EMA (mode "ema") or SWA (mode "swa") of all model weights; swapped in at epoch
        ends (place it after BackupAndRestore and before validation/checkpoint callbacks)."""

        def __init__(self, mode: str, decay: float = 0.998, start_epoch: int = 0,
                     state_path: str | os.PathLike | None = None):
            super().__init__()
            if mode not in ("ema", "swa"):
                raise ValueError(f"weight averaging mode {mode!r}: use ema or swa")
            self.mode, self.decay, self.start_epoch = mode, float(decay), int(start_epoch)
            self.state_path = Path(state_path) if state_path is not None else None
            self.updates = 0  # EMA steps, or SWA epochs averaged
            self.averages: list[Any] = []
            self.trained: list[np.ndarray] | None = None  # weights swapped out at epoch end
            self._update = None

        # -- state
        def on_train_begin(self, logs: dict | None = None) -> None:
            weights = self.model.weights
            with tf.init_scope():
                self.averages = [tf.Variable(w.value if hasattr(w, "value") else w,
                                             trainable=False, dtype=w.dtype) for w in weights]
            if self.state_path is not None and self.state_path.is_file():
                with np.load(self.state_path) as state:
                    stored = [state[f"w{i}"] for i in range(len(weights)) if f"w{i}" in state]
                    if len(stored) == len(weights) and all(
                            s.shape == tuple(w.shape) for s, w in zip(stored, weights)):
                        for average, value in zip(self.averages, stored):
                            average.assign(value)
                        self.updates = int(state["updates"])

            @tf.function
            def update(decay: tf.Tensor) -> None:
                for average, weight in zip(self.averages, self.model.weights):
                    value = tf.cast(weight, average.dtype)
                    average.assign(average * tf.cast(decay, average.dtype)
                                   + value * tf.cast(1.0 - decay, average.dtype))

            self._update = update

        def _save(self) -> None:
            if self.state_path is None:
                return
            arrays = {f"w{i}": a.numpy() for i, a in enumerate(self.averages)}
            with fileio.atomic_path(self.state_path) as tmp:
                with open(tmp, "wb") as handle:
                    np.savez(handle, updates=np.asarray(self.updates), **arrays)

        # -- averaging
        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            if self.mode == "ema":
                self._update(tf.constant(ema_decay(self.decay, self.updates), tf.float32))
                self.updates += 1

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            if self.trained is not None:  # continue training from the trained weights
                for weight, value in zip(self.model.weights, self.trained):
                    weight.assign(value)
                self.trained = None

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if self.mode == "swa":
                if epoch < self.start_epoch:
                    return
                # running mean: avg += (w - avg) / (n + 1); the first average is the weights
                self._update(tf.constant(self.updates / (self.updates + 1.0), tf.float32))
                self.updates += 1
            self._save()
            self.trained = [w.numpy() for w in self.model.weights]
            for weight, average in zip(self.model.weights, self.averages):
                weight.assign(tf.cast(average, weight.dtype))

    return WeightAverage


def make_callback(config: TrainConfig, state_path: Path, stage_start: int,
                  stage_end: int) -> Any | None:
    """The weight-averaging callback of a stage, or None when config.weight_average is none."""
    if config.weight_average == "none":
        return None
    return _callback_class()(config.weight_average, config.ema_decay,
                             swa_start_epoch(config, stage_start, stage_end), state_path)

"""Optimiser, learning-rate schedule and loss of a training stage, built from a TrainConfig.

    model.compile(optimizer=make_optimizer(config, lr), loss=make_loss(config), ...)
    callbacks.append(cosine_callback(lr, config, stage_epochs))   # lr_schedule == "cosine"

Schedules: a constant rate (also what ReduceLROnPlateau adjusts), or a cosine decay to zero over
the stage after an optional linear warm-up (`warmup_epochs`). The cosine is set by a callback
before every step from the optimiser's step counter, not baked into the traced graph: the
compiled (traced) model does not depend on the number of epochs, so a budgeted run can trace
and time the very model it then trains (utils.training.budget) and size the epochs afterwards;
a resumed run continues the curve (the step counter is restored with the optimiser).
Optimisers: Adam, or AdamW (decoupled weight decay, Loshchilov & Hutter 2019). The loss is the
categorical cross-entropy with optional label smoothing; it takes the soft targets mixup/CutMix
produce (utils.training.mixing).
"""
from __future__ import annotations

import math
from typing import Any

from utils.training.config import TrainConfig


def cosine_rate(step: int, base: float, total_steps: int, warmup_steps: int = 0) -> float:
    """Learning rate at `step`: linear warm-up from base/100 to base, then a half cosine to 0."""
    total_steps = max(1, int(total_steps))
    warmup_steps = max(0, min(int(warmup_steps), total_steps - 1))
    if step < warmup_steps:
        return base / 100.0 + (base - base / 100.0) * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * base * (1.0 + math.cos(math.pi * progress))


def cosine_callback(base: float, config: TrainConfig, stage_epochs: int,
                    deadline: float | None = None) -> Any:
    """Sets the optimiser's rate before every step (steps per epoch read from fit's params).

    deadline (time.time() of a budgeted run's training end): the cosine's progress is the larger
    of the step fraction and the fraction of the wall clock from this stage's start to the
    deadline, so a run that turns out slower than its measurement (and is stopped early by the
    deadline callback) still anneals to ~0 instead of stopping at a high rate. A budgeted run
    passes its epoch cap as `stage_epochs` and trains until the deadline (utils.training.train):
    the clock leads, and the cosine ends at the deadline however many epochs fit."""
    import time

    import keras

    class CosineSchedule(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.total, self.warmup, self.started = 1, 0, 0.0

        def on_train_begin(self, logs: dict | None = None) -> None:
            steps = int(self.params.get("steps") or 1)
            self.total = steps * max(1, int(stage_epochs))
            self.warmup = int(round(float(config.warmup_epochs) * steps))
            self.started = time.time()

        def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
            step = int(self.model.optimizer.iterations.numpy())
            if deadline is not None:  # a stage begun after its deadline anneals at once
                share = ((time.time() - self.started) / (deadline - self.started)
                         if deadline > self.started else 1.0)
                step = max(step, int(min(1.0, share) * self.total))
            self.model.optimizer.learning_rate = cosine_rate(step, base, self.total, self.warmup)

    return CosineSchedule()


def make_optimizer(config: TrainConfig, lr: float) -> Any:
    """Adam or AdamW at the (variable) learning rate `lr`."""
    import keras

    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(float(lr), weight_decay=float(config.weight_decay))
    return keras.optimizers.Adam(float(lr))


def make_loss(config: TrainConfig) -> Any:
    """Categorical cross-entropy on (possibly soft) one-hot targets, optional label smoothing."""
    import keras

    return keras.losses.CategoricalCrossentropy(label_smoothing=float(config.label_smoothing))


def reset_optimizer(optimizer: Any) -> None:
    """Zero an optimiser's state (step counter, moments) after a timing probe, so training
    starts as with a fresh optimiser without compiling (tracing) again; the rate is kept."""
    rate = float(optimizer.learning_rate.numpy())
    for variable in optimizer.variables:
        variable.assign(variable.numpy() * 0)
    optimizer.learning_rate = rate

"""Hardware set-up of a training run: mixed precision and the distribution strategy."""
from __future__ import annotations

import os
from typing import Any

from utils.training.config import TrainConfig


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



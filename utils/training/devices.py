"""Hardware set-up of a training run: mixed precision and the distribution strategy.

Mixed precision: float16 compute on a GPU; on a CPU, `mixed_precision="on"` computes in
bfloat16 (CPUs with AVX512-BF16/AMX run it natively): MobileNetV2 at 224 px, batch 32 then
peaks at about 2.8 GB instead of 3.4 GB (benchmarks/bench_pipeline.py), at about the same speed
there, but 30 % slower at 64 px, so "auto" keeps float32 on a CPU.
"""
from __future__ import annotations

import os
from typing import Any

from utils.training.config import TrainConfig


def configure_devices(config: TrainConfig) -> Any:
    """Mixed precision + the distribution strategy; returns the strategy."""
    import keras
    import tensorflow as tf

    policy = "float32"
    if config.mixed_precision:  # float16 on a GPU; bfloat16 on a CPU (float16 is slow there)
        policy = "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
    keras.mixed_precision.set_global_policy(policy)
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



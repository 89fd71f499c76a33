"""Hardware set-up of a training run: mixed precision and the distribution strategy.

Mixed precision: float16 compute on a GPU; on a CPU, `mixed_precision="on"` computes in
bfloat16 (CPUs with AVX512-BF16/AMX run it natively): MobileNetV2 at 224 px, batch 32 then
peaks at about 2.8 GB instead of 3.4 GB (benchmarks/bench_pipeline.py), at about the same speed
there, but 30 % slower at 64 px, so "auto" keeps float32 on a CPU.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
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
        return _multiworker_strategy()
    if choice == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy(devices=[d.name for d in devices])
    return tf.distribute.get_strategy()




def worker_task() -> tuple[str, int] | None:
    """(task type, index) of this process in a TF_CONFIG cluster, None outside one."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        return None
    task = json.loads(text).get("task", {})
    return str(task.get("type", "worker")), int(task.get("index", 0))


def worker_run_dir(run_dir: str | os.PathLike | None) -> Path | None:
    """Where this process writes its run folder: `run_dir` itself, except for the non-chief
    tasks of a multi-worker cluster, which write to run_dir/workers/<type><index>/ so that
    workers sharing a file system never write the same files (the chief, worker 0, writes the
    run folder). On a cluster every task must be given the same --run-dir."""
    task = worker_task()
    if task is None:
        return None if run_dir is None else Path(run_dir)
    if run_dir is None:
        raise ValueError("TF_CONFIG is set (a multi-worker cluster): give every worker the same "
                         "--run-dir, e.g. runs/<name>, so that they agree on the run folder")
    kind, index = task
    if kind == "chief" or (kind == "worker" and index == 0):
        return Path(run_dir)
    return Path(run_dir) / "workers" / f"{kind}{index}"


def _multiworker_strategy() -> Any:
    """MultiWorkerMirroredStrategy with a `reduce` that Keras 3 can call.

    Keras 3's TensorFlow trainer calls the collective `reduce` in two ways it cannot take
    (keras-team/keras#20585; without this, `fit` fails on more than one worker): with the first
    input batch, a tuple of per-replica values (`_maybe_symbolic_build`: "Attempt to convert a
    value (PerReplica ...) to a Tensor"), and with `axis=0` on the per-replica scalar metrics of
    every step ("Invalid reduction dimension 0 for input with 0 dimensions"). Here nested values
    are reduced leaf by leaf and a scalar's mean is taken over the replicas (axis=None)."""
    import tensorflow as tf

    base = tf.distribute.MultiWorkerMirroredStrategy

    class MultiWorkerMirroredStrategy(base):
        def reduce(self, reduce_op: Any, value: Any, axis: Any = None) -> Any:
            def one(leaf: Any) -> Any:
                local = self.experimental_local_results(leaf)
                rank = getattr(getattr(local[0], "shape", None), "rank", None) if local else None
                return base.reduce(self, reduce_op, leaf, None if rank == 0 else axis)

            return tf.nest.map_structure(one, value)

    return MultiWorkerMirroredStrategy()

"""Benchmark of the tf.data pipeline (a script, not a test): ratios measured side by side.

    python benchmarks/bench_pipeline.py [--data-dir ../shared/data/HAM10000] [--size 96]

(a) training images/s streaming JPEGs through utils.training.pipeline / training from in-memory
    tensors, same model, size and batches (target >= 0.95); and from the pipeline's on-disk cache
    of resized images (written completely when the dataset is made, then only read: the figure
    is a cache figure; the benchmark checks the cache folder is complete and TensorFlow prints no
    partial-cache warning);
(b) peak resident memory (ru_maxrss of a child process) training MobileNetV2 at 224 px, batch 32,
    for a few steps and then streaming one full pass over all HAM10000 images vs over 1,000 of
    them (target: flat, <= 10 % more, and <= 3 GB), in float32 (the default) and with
    mixed_precision="on" (bfloat16 compute on a CPU), and the same steps without any pipeline.
Needs the real HAM10000 folder (../shared/data/HAM10000 or --data-dir); skips with a message
where it is absent.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from utils import paths

DEFAULT_BACKBONE = "mobilenetv2"


def default_data_dir() -> Path | None:
    shared = paths.shared_data_dir()
    return shared / "HAM10000" if shared is not None else None


def _table(data_dir: Path, n_images: int | None, seed: int = 0):
    from utils.data import readers

    table = readers.read_table(data_dir)
    if n_images is not None and n_images < len(table):
        table = table.sample(n=n_images, random_state=seed).reset_index(drop=True)
    return table


def _in_memory_dataset(frame, size: int, batch_size: int, num_classes: int, seed: int):
    """The same images decoded once into one uint8 array, then fed from memory."""
    import numpy as np
    import tensorflow as tf

    from utils.training import pipeline

    images = np.concatenate([batch[0].astype("uint8") for batch in pipeline.make_dataset(
        frame, size, 256, False, num_classes).as_numpy_iterator()])
    labels = frame["label_index"].to_numpy("int32")
    data = tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(len(frame), seed=seed)
    data = data.map(lambda x, y: (tf.cast(x, tf.float32), tf.one_hot(y, num_classes)))
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def throughput(data_dir: Path, size: int, n_images: int, batch_size: int, rounds: int) -> dict:
    """(a) seconds per epoch of the same model on streamed vs in-memory batches, interleaved."""
    import keras

    from utils.data import datasets
    from utils.training import models, pipeline

    keras.utils.set_random_seed(0)
    frame = _table(data_dir, n_images)
    classes = datasets.HAM10000.num_classes
    streamed = pipeline.make_dataset(frame, size, batch_size, True, classes, seed=0)
    cache_dir = Path(tempfile.mkdtemp(prefix="bench_cache_"))
    started = time.perf_counter()  # making the dataset writes the whole cache, excluded below
    cached = pipeline.make_dataset(frame, size, batch_size, True, classes, seed=0,
                                   cache_dir=cache_dir)
    write_s = time.perf_counter() - started
    cache_files = sorted(p.name for p in cache_dir.rglob("*") if p.is_file())
    memory = _in_memory_dataset(frame, size, batch_size, classes, seed=0)
    model = models.build_classifier(DEFAULT_BACKBONE, classes, weights=None, image_size=size)
    model.compile(keras.optimizers.Adam(1e-3), "categorical_crossentropy")
    model.fit(memory, epochs=1, verbose=0)  # tracing, excluded
    times = {"streamed": [], "cached": [], "memory": []}
    for _ in range(rounds):  # interleaved so machine load hits all alike
        for name, data in (("streamed", streamed), ("cached", cached), ("memory", memory)):
            started = time.perf_counter()
            model.fit(data, epochs=1, verbose=0)
            times[name].append(time.perf_counter() - started)
    best = {name: min(values) for name, values in times.items()}
    shutil.rmtree(cache_dir, ignore_errors=True)
    return {"images": len(frame), "size": size, "cache_write_s": write_s,
            "cache_complete": "dataset_spec.pb" in cache_files,
            "streamed_img_s": len(frame) / best["streamed"],
            "cached_img_s": len(frame) / best["cached"],
            "memory_img_s": len(frame) / best["memory"],
            "ratio": best["memory"] / best["streamed"],
            "cached_ratio": best["memory"] / best["cached"]}


def _policy(policy: str) -> None:
    import keras

    keras.mixed_precision.set_global_policy(policy)


def memory_child(data_dir: Path, n_images: int | None, size: int, steps: int,
                 policy: str = "float32", batch_size: int = 32) -> dict:
    """(b) in a child: train a few steps at `size`, then stream one full pass; peak RSS."""
    import keras

    from utils.data import datasets
    from utils.training import models, pipeline

    _policy(policy)
    frame = _table(data_dir, n_images)
    classes = datasets.HAM10000.num_classes
    data = pipeline.make_dataset(frame, size, batch_size, True, classes, seed=0)
    model = models.build_classifier(DEFAULT_BACKBONE, classes, weights=None, image_size=size)
    model.compile(keras.optimizers.Adam(1e-3), "categorical_crossentropy")
    model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0)
    started, seen = time.perf_counter(), 0
    for images, _ in data:  # one full pass: every file of the manifest is read and decoded
        seen += int(images.shape[0])
    return {"images": len(frame), "streamed": seen, "pass_s": time.perf_counter() - started,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def baseline_child(size: int, steps: int, policy: str = "float32") -> dict:
    """The same training steps on random in-memory tensors (no files, no pipeline): the RSS
    the model and TensorFlow need by themselves."""
    import keras
    import numpy as np
    import tensorflow as tf

    from utils.data import datasets
    from utils.training import models

    _policy(policy)
    classes = datasets.HAM10000.num_classes
    images = np.random.default_rng(0).uniform(0, 255, (32, size, size, 3)).astype("float32")
    labels = keras.utils.to_categorical(np.arange(32) % classes, classes)
    data = tf.data.Dataset.from_tensors((images, labels)).repeat()
    model = models.build_classifier(DEFAULT_BACKBONE, classes, weights=None, image_size=size)
    model.compile(keras.optimizers.Adam(1e-3), "categorical_crossentropy")
    model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0)
    return {"images": 0, "streamed": 0, "pass_s": 0.0,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _run_child(data_dir: Path, n_images: int | None, size: int, steps: int,
               policy: str = "float32", batch_size: int = 32) -> dict:
    command = [sys.executable, __file__, "--child", "--data-dir", str(data_dir), "--size",
               str(size), "--steps", str(steps), "--policy", policy, "--batch", str(batch_size)]
    if n_images is not None:
        command += ["--images", str(n_images)]  # 0: the no-pipeline baseline
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"memory child failed:\n{result.stderr[-3000:]}")
    if "did not fully read the dataset being cached" in result.stderr:
        print("WARNING: TensorFlow discarded a partially read cache in a memory child")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--size", type=int, default=96, help="image size of the throughput test")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--steps", type=int, default=8, help="training steps of the memory test")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--policy", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=32, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.data_dir is None or not Path(args.data_dir).is_dir():
        print("SKIPPED: HAM10000 not found (../shared/data/HAM10000 or --data-dir); the "
              "benchmark needs the real 10,015-image folder")
        return 0
    if args.child:
        result = (baseline_child(args.size, args.steps, args.policy) if args.images == 0 else
                  memory_child(args.data_dir, args.images, args.size, args.steps, args.policy,
                               args.batch))
        print(json.dumps(result))
        return 0
    print(f"{os.cpu_count()} CPU cores (rates vary by about 30 % between runs: compare the "
          "ratios, measured side by side)")
    with _captured_stderr() as stderr:
        a = throughput(args.data_dir, args.size, args.images or 1024, 32, args.rounds)
    partial = "did not fully read the dataset being cached" in stderr.getvalue()
    print(f"(a) MobileNetV2 @ {a['size']} px, {a['images']} images, batch 32: streamed JPEGs "
          f"{a['streamed_img_s']:.1f} img/s, in-memory tensors {a['memory_img_s']:.1f} img/s; "
          f"ratio streamed/in-memory = {a['ratio']:.3f} (target >= 0.95)")
    print(f"    from the pipeline's on-disk cache of resized images (written completely in "
          f"{a['cache_write_s']:.1f} s when the dataset was made, then only read; complete: "
          f"{a['cache_complete']}; partial-cache warning: {'YES' if partial else 'none'}): "
          f"{a['cached_img_s']:.1f} img/s; ratio cached/in-memory = {a['cached_ratio']:.3f} "
          "(target >= 0.95)")
    small = _run_child(args.data_dir, 1000, 224, args.steps)
    full = _run_child(args.data_dir, None, 224, args.steps)
    base = _run_child(args.data_dir, 0, 224, args.steps)
    bf16 = _run_child(args.data_dir, None, 224, args.steps, "mixed_bfloat16")
    half = _run_child(args.data_dir, None, 224, args.steps, batch_size=16)
    limit = 3072
    print(f"(b) MobileNetV2 @ 224 px, batch 32, {args.steps} training steps + one full streamed "
          f"pass: peak RSS {small['peak_rss_mb']:.0f} MB with {small['images']} images "
          f"({small['pass_s']:.0f} s pass), {full['peak_rss_mb']:.0f} MB with {full['images']} "
          f"images ({full['pass_s']:.0f} s pass); ratio all/1,000 = "
          f"{full['peak_rss_mb'] / small['peak_rss_mb']:.3f} (target <= 1.10)")
    print(f"    same steps on random in-memory tensors (no files, no pipeline): "
          f"{base['peak_rss_mb']:.0f} MB, so the pipeline over all images adds "
          f"{full['peak_rss_mb'] - base['peak_rss_mb']:+.0f} MB")
    print(f"    peak vs the 3 GB target ({limit} MB): float32 (default) "
          f"{full['peak_rss_mb']:.0f} MB ({'met' if full['peak_rss_mb'] <= limit else 'NOT met'}"
          f"); mixed_precision=\"on\" (bfloat16 compute on a CPU) {bf16['peak_rss_mb']:.0f} MB "
          f"({'met' if bf16['peak_rss_mb'] <= limit else 'NOT met'}); float32 with batch 16 "
          f"(`--batch-size 16`) {half['peak_rss_mb']:.0f} MB "
          f"({'met' if half['peak_rss_mb'] <= limit else 'NOT met'})")
    return 0


class _captured_stderr:
    """Collect what TensorFlow's C++ logging writes to file descriptor 2 (and echo it)."""

    def __enter__(self) -> io.StringIO:
        self.buffer = io.StringIO()
        self.saved = os.dup(2)
        self.file = tempfile.TemporaryFile(mode="w+b")
        os.dup2(self.file.fileno(), 2)
        return self.buffer

    def __exit__(self, *exc: object) -> None:
        sys.stderr.flush()
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.file.seek(0)
        text = self.file.read().decode("utf-8", "replace")
        self.file.close()
        self.buffer.write(text)
        sys.stderr.write(text)


if __name__ == "__main__":
    raise SystemExit(main())

"""Seconds per training epoch per backbone, to budget a run (a script, not a test).

    python benchmarks/bench_epoch_time.py                       # every configuration below
    python benchmarks/bench_epoch_time.py --only DenseNet201@224 --steps 2
    python benchmarks/bench_epoch_time.py --out reports/epoch_time.md

For each backbone at its published size (the paper's HAM10000 models at 224 px, its ISIC 2019
DenseNet201 at 150 px) or its registry default, the classifier of utils.training.models is built
and trained on batches of random pixels for a few steps in each stage of the two-stage recipe
that `--weights imagenet` runs: stage 1 (backbone frozen, head only) and stage 2 (fine-tuning from
the registry's unfreeze boundary, BatchNorm frozen); the README's CPU command (MobileNetV2 from
scratch at 96 px) is timed as one whole-network stage. Random initial weights cost exactly what
ImageNet weights cost per step, and ImageNet weights cannot be downloaded here. The
first step of each stage (tf.function tracing) is timed apart; the median of the next `--steps`
steps gives seconds per step, scaled to HAM10000's training split (70 % of its 10,015 images,
batch 32). Input decoding is not included: the tf.data pipeline streams JPEGs far faster than
these models consume them on a CPU (reports/benchmarks.md).

Each configuration runs in its own process (memory returns to the system between them); results
are appended to a JSON file beside --out as they finish, so an interrupted run resumes.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from utils import fileio, paths
from utils.tables import markdown_table

# (backbone, image size, why this size, recipe): "imagenet" = the two-stage fine-tuning of
# --weights imagenet, "scratch" = one stage, whole network, from random weights (--weights none)
CONFIGURATIONS: tuple[tuple[str, int, str, str], ...] = (
    ("DenseNet201", 224, "published, HAM10000", "imagenet"),
    ("InceptionV3", 224, "published, HAM10000", "imagenet"),
    ("InceptionResNetV2", 224, "published, HAM10000", "imagenet"),
    ("DenseNet201", 150, "published, ISIC 2019", "imagenet"),
    ("DenseNet121", 224, "registry default", "imagenet"),
    ("EfficientNetB0", 224, "registry default", "imagenet"),
    ("MobileNetV2", 224, "registry default", "imagenet"),
    ("ResNet50", 224, "registry default", "imagenet"),
    ("VGG16", 224, "registry default", "imagenet"),
    ("MobileNetV2", 96, "README's CPU command (real HAM10000)", "scratch"),
)
TRAIN_FRACTION = 0.7  # the lesion-grouped split's training share
# epochs of each recipe: the ham10000 preset (utils.training.config.PRESETS) and the README's
# from-scratch CPU command
EPOCHS = {"imagenet": {"stage1": 5, "stage2": 25}, "scratch": {"scratch": 12}}


def ham_train_images() -> int:
    from utils.data.datasets import HAM10000

    return round(sum(HAM10000.counts.values()) * TRAIN_FRACTION)


def measure(backbone: str, size: int, recipe: str, steps: int, batch_size: int,
            seed: int = 0) -> dict:
    """Seconds per step of each stage of a recipe (one process)."""
    import keras
    import numpy as np

    from utils.training import backbones, models

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (batch_size, size, size, 3)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 7, batch_size), 7)
    model = models.build_classifier(backbone, 7, weights=None, image_size=size)
    result: dict = {}
    plans = (("stage1", models.freeze_backbone, 1e-3),
             ("stage2", lambda m: models.unfreeze_from(m), 1e-4))
    if recipe == "scratch":
        plans = (("scratch", lambda m: m, 1e-3),)
    for name, prepare, lr in plans:
        prepare(model)
        model.compile(keras.optimizers.Adam(lr), "categorical_crossentropy", jit_compile=False)
        started = time.perf_counter()
        model.train_on_batch(x, y)
        first = time.perf_counter() - started
        times = []
        for _ in range(steps):
            started = time.perf_counter()
            model.train_on_batch(x, y)
            times.append(time.perf_counter() - started)
        result[name] = {"first_step_s": round(first, 2),
                        "step_s": round(statistics.median(times), 3),
                        "steps_timed": steps}
    spec = backbones.get_backbone(backbone)
    return {"backbone": spec.name, "image_size": size, "recipe": recipe,
            "batch_size": batch_size, **result}


def _child(args: argparse.Namespace) -> int:
    backbone, size, recipe = args.child
    print(json.dumps(measure(backbone, int(size), recipe, args.steps, args.batch_size)))
    return 0


def seconds_per_epoch(step_s: float, n_images: int, batch_size: int) -> float:
    return step_s * math.ceil(n_images / batch_size)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def markdown(results: list[dict], command: str, n_images: int, machine: str) -> str:
    rows = []
    for r in results:
        epochs = EPOCHS[r["recipe"]]
        per_epoch = {stage: seconds_per_epoch(r[stage]["step_s"], n_images, r["batch_size"])
                     for stage in epochs}
        whole = sum(epochs[stage] * per_epoch[stage] for stage in epochs)
        recipe = (f"ImageNet, {epochs['stage1']} + {epochs['stage2']} epochs"
                  if r["recipe"] == "imagenet" else f"from scratch, {epochs['scratch']} epochs")
        rows.append([r["backbone"], r["image_size"], r["why"], recipe,
                     " / ".join(_duration(per_epoch[stage]) for stage in epochs),
                     _duration(whole),
                     f"{sum(r[stage]['first_step_s'] for stage in epochs):.0f} s"])
    header = ["backbone", "px", "why this size", "recipe", "per epoch (stage 1 / stage 2)",
              "whole run", "tracing (once)"]
    batch = results[0]["batch_size"] if results else 32
    return "\n".join([
        "# Seconds per training epoch, per backbone",
        "",
        f"Generated by `{command}` (benchmarks/bench_epoch_time.py). Machine: {machine}.",
        "",
        f"One epoch = HAM10000's training split ({n_images} images = 70 % of 10,015, batch "
        f"{batch}), from the median seconds per step of a few steps on random pixels (no input "
        "decoding). With ImageNet weights, stage 1 trains the head on the frozen backbone and "
        "stage 2 fine-tunes from the registry's boundary; from scratch, one stage trains the "
        "whole network. Tracing is the one-off cost of each stage's first step. An "
        "offline-balanced training split (`--augment offline`) holds about 4.7 times as many "
        "images. Timings on a shared 2-core machine vary by 30-40 % from run to run: sizes, "
        "not exact values.",
        "",
        markdown_table(rows, header),
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None, metavar="NAME@PX",
                        help="configurations to measure (default: all of CONFIGURATIONS)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per stage")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=paths.repo_root() / "runs" / "epoch_time.md",
                        help="markdown report (a JSON of the raw timings is written beside it)")
    parser.add_argument("--machine", default=f"{platform.machine()}, {os.cpu_count()} CPU cores",
                        help="how the report names the machine (say whether it was shared)")
    parser.add_argument("--child", nargs=3, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args)
    wanted = [c for c in CONFIGURATIONS
              if args.only is None or f"{c[0]}@{c[1]}" in args.only]
    if args.only and len(wanted) != len(args.only):
        known = " ".join(f"{c[0]}@{c[1]}" for c in CONFIGURATIONS)
        parser.error(f"--only takes names from: {known}")
    raw_path = args.out.with_suffix(".json")
    done = json.loads(raw_path.read_text()) if raw_path.is_file() else []
    for backbone, size, why, recipe in wanted:
        if any(r["backbone"] == backbone and r["image_size"] == size for r in done):
            continue
        print(f"{backbone} @ {size} px ...", flush=True)
        process = subprocess.run(
            [sys.executable, __file__, "--child", backbone, str(size), recipe, "--steps",
             str(args.steps), "--batch-size", str(args.batch_size)],
            capture_output=True, text=True, cwd=paths.repo_root(), check=False)
        if process.returncode != 0:
            print(process.stderr[-2000:], file=sys.stderr)
            return 1
        done.append({**json.loads(process.stdout.strip().splitlines()[-1]), "why": why})
        fileio.write_json(raw_path, done)
        print(json.dumps(done[-1]), flush=True)
    order = {(b, s): i for i, (b, s, _, _) in enumerate(CONFIGURATIONS)}
    done.sort(key=lambda r: order.get((r["backbone"], r["image_size"]), len(order)))
    command = "python benchmarks/bench_epoch_time.py" + "".join(
        f" {flag} {value}" for flag, value in (
            ("--only", " ".join(args.only) if args.only else None),
            ("--steps", args.steps if args.steps != 3 else None),
            ("--out", paths.display(args.out))) if value)
    text = markdown(done, command, ham_train_images(), args.machine)
    fileio.write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

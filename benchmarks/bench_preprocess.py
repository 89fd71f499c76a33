"""Benchmark: throughput of the dermoscopy preprocessing (utils.augmentation.preprocess).

    python benchmarks/bench_preprocess.py [--sample 1000] [--skip-full]

Side by side in one run, on the real development data (../shared/data):
(a) milliseconds per image of each step alone and of all three, one thread, images already
    decoded, on `--sample` 200x150 HAM10000 images and on the 134 600x450 originals;
(b) the offline copy (`python -m utils preprocess`, decode + all steps + PNG write) over the whole
    200x150 HAM10000 folder (10,015 images) with 1 and 2 threads, and over the 600x450 sample with
    1 and 2 threads, extrapolated (and said so) to the 10,015 originals;
(c) threads against processes on the same 2,000 files (utils/augmentation/preprocess_dataset.py
    uses threads: OpenCV and TensorFlow's decoder release the GIL).
Prints img/s, ratios and minutes for the full dataset. Writes only under a temporary folder.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from utils import paths  # noqa: E402
from utils.augmentation import preprocess, preprocess_dataset  # noqa: E402
from utils.augmentation.transforms import read_rgb  # noqa: E402
from utils.data import readers  # noqa: E402

STEPS = {"colour": "colour", "hair": "hair", "fov": "fov", "all three": "colour,hair,fov"}


def per_image_ms(images: list[np.ndarray]) -> dict[str, float]:
    """Milliseconds per image of each step (one thread, decoded images)."""
    cv2.setNumThreads(1)
    result = {}
    for name, text in STEPS.items():
        steps = preprocess.parse_preprocessing(text)
        start = time.perf_counter()
        for image in images:
            steps(image)
        result[name] = (time.perf_counter() - start) / len(images) * 1000
    return result


def copy_rate(source: Path, out: Path, workers: int) -> tuple[float, int]:
    """img/s of the offline copy of `source` (all steps) with `workers` threads."""
    start = time.perf_counter()
    preprocess_dataset.preprocess_dataset(source, out, "colour,hair,fov", workers=workers,
                                          progress=False)
    elapsed = time.perf_counter() - start
    count = sum(1 for _ in (out).rglob("*.png")) - sum(
        1 for _ in out.rglob("*_segmentation.png"))
    return count / elapsed, count


def _process_one(job: tuple[str, str]) -> None:
    steps = preprocess.parse_preprocessing("colour,hair,fov")
    preprocess_dataset.preprocess_image(Path(job[0]), Path(job[1]), steps)


def threads_vs_processes(files: list[str], tmp: Path) -> tuple[float, float]:
    """img/s of the same per-image work over 2 threads and over 2 spawned processes."""
    steps = preprocess.parse_preprocessing("colour,hair,fov")
    jobs = [(f, str(tmp / "t" / f"{i}.png")) for i, f in enumerate(files)]
    (tmp / "t").mkdir()
    start = time.perf_counter()
    list(preprocess_dataset._parallel(
        lambda job: preprocess_dataset.preprocess_image(Path(job[0]), Path(job[1]), steps),
        jobs, 2))
    threads = len(files) / (time.perf_counter() - start)
    jobs = [(f, str(tmp / "p" / f"{i}.png")) for i, f in enumerate(files)]
    (tmp / "p").mkdir()
    start = time.perf_counter()  # includes starting the processes (each imports TensorFlow)
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        list(pool.map(_process_one, jobs, chunksize=32))
    processes = len(files) / (time.perf_counter() - start)
    return threads, processes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=1000)
    parser.add_argument("--skip-full", action="store_true", help="skip (b) on 10,015 images")
    args = parser.parse_args()
    shared = paths.shared_data_dir()
    if shared is None:
        raise SystemExit("../shared/data is absent: this benchmark needs the real data")
    small = readers.read_ham10000(shared / "HAM10000")
    large = readers.read_ham10000(shared / "HAM10000_originals_sample")
    print(f"{os.cpu_count()} CPU cores; OpenCV {cv2.__version__}")
    sample = small.sample(n=min(args.sample, len(small)), random_state=0)["path"].tolist()
    for label, files in ((f"200x150, {len(sample)} images", sample),
                         (f"600x450, {len(large)} images", large["path"].tolist())):
        images = [read_rgb(f) for f in files]
        timing = per_image_ms(images)
        print(f"(a) {label}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in timing.items()))
    with tempfile.TemporaryDirectory(prefix="bench-preprocess-") as tmp_name:
        tmp = Path(tmp_name)
        if not args.skip_full:
            for workers in (1, 2):
                rate, count = copy_rate(shared / "HAM10000", tmp / f"small-{workers}", workers)
                print(f"(b) offline copy, 200x150 HAM10000, {count} images, {workers} "
                      f"thread(s): {rate:.0f} img/s = {count / rate / 60:.1f} min")
            log = pd.read_csv(tmp / "small-1" / preprocess_dataset.LOG_NAME, dtype={"box": str},
                              keep_default_na=False)
            print(f"    what the steps did to the {len(log)} images: field of view cropped in "
                  f"{(log['box'] != '').sum()} ({(log['box'] != '').mean():.1%}); hair found on "
                  f"{log['hair_fraction'].mean():.2%} of the pixels on average, on more than 1 % "
                  f"of the pixels in {(log['hair_fraction'] > 0.01).mean():.1%} of the images")
            box_mode = preprocess.FovConfig(mode="box")
            boxed = sum(preprocess.field_of_view_box(read_rgb(f), box_mode) is not None
                        for f in small["path"])
            print(f"    the field of view's bounding box (fov:mode=box) would crop {boxed} "
                  f"({boxed / len(small):.1%})")
        for workers in (1, 2):
            rate, count = copy_rate(shared / "HAM10000_originals_sample",
                                    tmp / f"large-{workers}", workers)
            print(f"(b) offline copy, 600x450 sample, {count} images, {workers} thread(s): "
                  f"{rate:.1f} img/s; the 10,015 originals at this rate (extrapolated): "
                  f"{len(small) / rate / 60:.1f} min")
        files = small["path"].tolist()[:2000]
        threads, processes = threads_vs_processes(files, tmp)
        print(f"(c) same 2,000 files (200x150), all steps + PNG write: 2 threads {threads:.0f} "
              f"img/s, 2 processes {processes:.0f} img/s (process start-up included); ratio "
              f"threads/processes = {threads / processes:.2f}")


if __name__ == "__main__":
    main()

"""Benchmark: our offline balancer against the published Keras ImageDataGenerator method.

    python benchmarks/bench_balance.py [--count-large 150] [--count-small 600] [--workers 2]

Side by side in one run, on the same source images and the same number of generated images:
- published: Keras' legacy `ImageDataGenerator` (Keras 3.15 keeps it at
  `keras.src.legacy.preprocessing.image`; the public `keras.preprocessing.image` no longer exports
  it) with rotation, flips, zoom, shifts and brightness, `.flow(x, batch_size=1,
  save_to_dir=..., save_prefix=N, save_format="png")` per source image as in Villa-Pulgarin et al.
  2022. Keras names each file `{prefix}_{index}_{np.random.randint(1e4)}.{format}`; with one image
  per flow the index is always 0, so all copies of a class share 10,000 possible names and
  later ones silently overwrite earlier ones (we use one prefix per class folder, as published).
- ours: `utils.augmentation.balance.balance` (OpenCV/scikit-image transforms, JPEG q95, atomic
  writes), one thread and `--workers` threads (OpenCV releases the GIL).
Prints images/s of each, the ratio against the targets (>= x15 over the published method at both
sizes with `--workers` threads; 0 files lost), and how many files each lost (expected − files
on disk); the two of ours are checked byte-identical.
Data: ../shared/data/HAM10000_originals_sample (600x450) and ../shared/data/HAM10000 (200x150).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from utils import paths
from utils.augmentation import balance
from utils.augmentation.transforms import AugmentConfig  # noqa: E402
from utils.data import readers  # noqa: E402


def published_method(sources: list[str], count: int, out_dir: Path, seed: int = 0) -> float:
    """Generate `count` PNGs round robin over `sources` the published way; returns seconds."""
    from keras.src.legacy.preprocessing.image import ImageDataGenerator
    from keras.utils import img_to_array, load_img

    np.random.seed(seed)  # the generator and the file-name hash both draw from numpy's global RNG
    generator = ImageDataGenerator(rotation_range=180, width_shift_range=0.1,
                                   height_shift_range=0.1, zoom_range=0.2, horizontal_flip=True,
                                   vertical_flip=True, brightness_range=(0.9, 1.1),
                                   fill_mode="reflect")
    out_dir.mkdir(parents=True)
    start = time.perf_counter()
    made = 0
    while made < count:
        for path in sources:
            if made == count:
                break
            x = img_to_array(load_img(path))[None]
            flow = generator.flow(x, batch_size=1, save_to_dir=str(out_dir), save_prefix="N",
                                  save_format="png", seed=None)
            next(flow)
            made += 1
    return time.perf_counter() - start


def our_method(sources: pd.DataFrame, count: int, out_dir: Path, workers: int) -> float:
    """Balance a one-class manifest of `sources` up to len(sources) + count; returns seconds."""
    start = time.perf_counter()
    result = balance.balance(sources, out_dir, target=len(sources) + count, seed=0,
                             config=AugmentConfig(), workers=workers, progress=False)
    elapsed = time.perf_counter() - start
    assert result.created == count, result
    return elapsed


TARGET_RATIO = 15.0  # issue 15: >= x15 over the published method at both sizes


def _images_digest(folder: Path) -> dict[str, str]:
    from utils import fileio

    return {k.split("/", 1)[-1]: v for k, v in fileio.tree_digest(folder).items()
            if k.endswith(".jpg")}


def one_class_manifest(table: pd.DataFrame) -> pd.DataFrame:
    frame = table[["image_id", "path", "lesion_id"]].copy()
    frame["label"], frame["split"] = "sample", "train"
    return frame.reset_index(drop=True)


def compare(name: str, table: pd.DataFrame, count: int, workers: int, tmp: Path) -> None:
    manifest = one_class_manifest(table)
    keras_dir, our_dir = tmp / f"{name}-keras", tmp / f"{name}-ours"
    keras_s = published_method(manifest["path"].tolist(), count, keras_dir)
    keras_files = len(list(keras_dir.glob("*.png")))
    one_s = our_method(manifest, count, our_dir / "w1", workers=1)
    many_s = our_method(manifest, count, our_dir / f"w{workers}", workers=workers)
    our_files = len(list((our_dir / f"w{workers}").rglob("*.jpg")))
    identical = _images_digest(our_dir / "w1") == _images_digest(our_dir / f"w{workers}")
    print(f"\n{name}: {len(manifest)} source images, {count} generated per method")
    print(f"  published (Keras ImageDataGenerator, PNG): {count / keras_s:8.1f} img/s, "
          f"lost to name collisions: {count - keras_files} of {count}")
    print(f"  ours, 1 thread (OpenCV, JPEG q95):         {count / one_s:8.1f} img/s "
          f"(x{keras_s / one_s:.1f})")
    print(f"  ours, {workers} threads:                         {count / many_s:8.1f} img/s "
          f"(x{keras_s / many_s:.1f}; target >= x{TARGET_RATIO:.0f}: "
          f"{'met' if keras_s / many_s >= TARGET_RATIO else 'NOT met'}), lost: "
          f"{count - our_files} of {count}, byte-identical to 1 thread: {identical}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count-large", type=int, default=150, help="images to make at 600x450")
    parser.add_argument("--count-small", type=int, default=600, help="images to make at 200x150")
    parser.add_argument("--workers", type=int, default=balance.default_workers())
    args = parser.parse_args(argv)
    shared = paths.shared_data_dir()
    if shared is None:
        print("SKIPPED: ../shared/data is absent (a fresh clone); this benchmark needs the real "
              "HAM10000 copies described in data/README.md")
        return 0
    print(
        f"{os.cpu_count()} CPU cores (rates vary by about 30 % between runs: compare the "
        f"ratios, measured side by side); Keras {__import__('keras').__version__}, "
        f"OpenCV {__import__('cv2').__version__}"
    )
    large = readers.read_ham10000(shared / "HAM10000_originals_sample")
    small = readers.read_ham10000(shared / "HAM10000").sort_values("image_id").head(300)
    with tempfile.TemporaryDirectory(prefix="bench_balance_") as tmp:
        compare("600x450 originals", large, args.count_large, args.workers, Path(tmp))
        compare("200x150 HAM10000", small, args.count_small, args.workers, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())

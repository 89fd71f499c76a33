"""Shared fixtures: the real development data (skips with a message where absent) and a small
synthetic dataset generated once per test session."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import pandas as pd

import pytest

from utils import paths

SHARED_MISSING = (
    "../shared/data is absent (a fresh clone): real-data tests need the HAM10000 / ISIC 2019 "
    "development copy beside the repository; see data/README.md"
)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (read-only real data); skips the test where it is absent."""
    root = paths.shared_data_dir()
    if root is None:
        pytest.skip(SHARED_MISSING)
    return root


@pytest.fixture(scope="session")
def ham_real(shared_data: Path) -> Path:
    return shared_data / "HAM10000"


@pytest.fixture(scope="session")
def isic2019_real(shared_data: Path) -> Path:
    return shared_data / "ISIC_2019_subset"


@pytest.fixture(scope="session")
def synthetic_ham(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 300-image synthetic HAM10000-layout dataset (read-only by convention: copy to modify)."""
    from utils import synthetic

    root = tmp_path_factory.mktemp("synthetic") / "HAM10000"
    synthetic.generate_ham10000(root, n_images=300, seed=0)
    return root


@pytest.fixture(scope="session")
def synthetic_isic2019(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 120-image synthetic ISIC 2019-layout dataset."""
    from utils import synthetic

    root = tmp_path_factory.mktemp("synthetic") / "ISIC_2019"
    synthetic.generate_isic2019(root, n_images=120, seed=0)
    return root


def _make_run(root: Path, data_dir: Path, image_size: int = 24, seed: int = 0,
             epochs: int = 2) -> Path:
    """A run folder in the RUN FOLDER layout from a tiny conv net really trained on synthetic
    HAM10000 images: config, manifest, history, model, predictions_{val,test}, run_info."""
    import keras

    from utils import datasets, fileio, pipeline, readers, splits
    from utils.config import TrainConfig
    from utils.train import predictions_frame

    started = time.time()
    config = TrainConfig(dataset="synthetic", data_dir=str(data_dir), backbone="mobilenetv2",
                         image_size=image_size, weights=None, epochs=epochs, batch_size=32,
                         seed=seed)
    run_dir = root / f"20260101-00000{seed}-synthetic-tiny-{image_size}"
    run_dir.mkdir(parents=True)
    config.save(run_dir / "config.json")
    manifest = splits.lesion_split(readers.read_ham10000(data_dir), seed=seed)
    splits.save_manifest(manifest, run_dir / "manifest.csv")
    classes, k = datasets.HAM10000.classes, datasets.HAM10000.num_classes
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(k, activation="softmax")(x))
    model.compile("adam", "categorical_crossentropy", metrics=["accuracy"])
    data = {s: pipeline.make_dataset(manifest[manifest["split"] == s], image_size, 32,
                                     training=(s == "train"), num_classes=k, seed=seed)
            for s in ("train", "val", "test")}
    history = model.fit(data["train"], validation_data=data["val"], epochs=epochs, verbose=0,
                        shuffle=False)
    fileio.write_csv(run_dir / "history.csv",
                     pd.DataFrame(history.history).assign(epoch=range(epochs)))
    model.save(run_dir / "model.keras")
    for split in ("val", "test"):
        rows = manifest[manifest["split"] == split]
        fileio.write_csv(run_dir / f"predictions_{split}.csv",
                         predictions_frame(rows, model.predict(data[split], verbose=0), classes))
    fileio.write_json(run_dir / "run_info.json", {"duration_s": round(time.time() - started, 2),
                                                  "epochs_completed": epochs})
    return run_dir


@pytest.fixture(scope="session")
def make_run() -> Callable[..., Path]:
    """Builds a run folder from a tiny conv net really trained on synthetic images."""
    return _make_run

"""Shared fixtures: the real development data (skips with a message where absent) and a small
synthetic dataset generated once per test session."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import pytest

from utils import paths
from utils.data.manifest import save_manifest

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
    """A 300-image synthetic HAM10000-layout dataset (read-only by convention: copy to modify),
    with the generator's easy setting (separable classes, no label noise): tests that train a
    few steps must see the model learn. tests/test_synthetic.py checks the harder default."""
    from utils.data import synthetic, synthetic_looks

    root = tmp_path_factory.mktemp("synthetic") / "HAM10000"
    synthetic.generate_ham10000(root, n_images=300, seed=0, **synthetic_looks.EASY)
    return root


@pytest.fixture(scope="session")
def synthetic_isic2019(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 120-image synthetic ISIC 2019-layout dataset (easy setting, as synthetic_ham)."""
    from utils.data import synthetic, synthetic_looks

    root = tmp_path_factory.mktemp("synthetic") / "ISIC_2019"
    synthetic.generate_isic2019(root, n_images=120, seed=0, **synthetic_looks.EASY)
    return root


def _make_run(root: Path, data_dir: Path, image_size: int = 32, seed: int = 0,
             epochs: int = 2) -> Path:
    """A run folder written by the training code's own writers (prepare_run, the manifest,
    the CSV history, finish_run) around a tiny conv net really trained on synthetic HAM10000
    images (a backbone would cost minutes): config, manifest, history, model, predictions,
    run_info."""
    import keras

    from utils.data import readers, splits
    from utils.training import pipeline, runs, train
    from utils.training.config import TrainConfig

    started = time.time()
    config = TrainConfig(dataset="synthetic", data_dir=str(data_dir), backbone="mobilenetv2",
                         image_size=image_size, weights=None, epochs=epochs, batch_size=32,
                         seed=seed)
    config, run_dir = train.prepare_run(
        config, root / f"20260101-00000{seed}-synthetic-tiny-{image_size}")
    manifest = splits.lesion_split(readers.read_ham10000(data_dir), seed=seed)
    save_manifest(manifest, run_dir / runs.MANIFEST)
    k = train.dataset_info(config).num_classes
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
    model.fit(data["train"], validation_data=data["val"], epochs=epochs, verbose=0,
              shuffle=False, callbacks=[keras.callbacks.CSVLogger(str(run_dir / runs.HISTORY))])
    return train.finish_run(model, data, manifest, config, run_dir, started)


@pytest.fixture(scope="session")
def make_run() -> Callable[..., Path]:
    """Builds a run folder from a tiny conv net really trained on synthetic images."""
    return _make_run

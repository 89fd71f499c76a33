"""utils.training.train: a from-scratch smoke run that learns, the run folder contract, two-stage
fine-tuning killed mid-epoch and resumed, the mirrored-strategy path, and the real HAM10000
layout."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from utils import paths
from utils.data import datasets
from utils.training.config import smoke_config
from utils.training.runs import RUN_FILES

pytestmark = pytest.mark.slow
PYTHON = sys.executable


def _check_predictions(run_dir: Path) -> pd.DataFrame:
    manifest = pd.read_csv(run_dir / "manifest.csv")
    frame = pd.read_csv(run_dir / "predictions_val.csv")
    assert list(frame.columns) == ["image_id", "lesion_id", "label", "label_index", "split",
                                   *datasets.HAM10000.classes]
    assert len(frame) == (manifest["split"] == "val").sum() and set(frame["split"]) == {"val"}
    np.testing.assert_allclose(frame[list(datasets.HAM10000.classes)].sum(axis=1), 1.0, atol=1e-4)
    return frame


def test_smoke_run_learns_and_writes_the_run_folder(synthetic_ham, tmp_path):
    from utils import fileio
    from utils.training import models, pipeline
    from utils.training.train import train

    config = smoke_config("mobilenetv2", data_dir=str(synthetic_ham), epochs=8, augment="none",
                          batch_size=16, lr_schedule="constant", image_size=64,
                          run_eagerly=False)  # 8 epochs: tracing pays off
    before = fileio.tree_digest(synthetic_ham)
    run_dir = train(config, run_dir=tmp_path / "run")
    assert fileio.tree_digest(synthetic_ham) == before  # the data folder is only read
    assert all((run_dir / name).is_file() for name in RUN_FILES)
    history = pd.read_csv(run_dir / "history.csv")
    assert list(history["epoch"]) == list(range(8))
    info = json.loads((run_dir / "run_info.json").read_text())
    print(f"smoke run: best val balanced accuracy {info['best_val_balanced_accuracy']:.3f} "
          f"in {info['duration_s']:.0f} s")
    assert info["best_val_balanced_accuracy"] > 0.3  # chance is 1/7
    resolved = json.loads((run_dir / "config.json").read_text())
    assert resolved["image_size"] == 64 and resolved["bn_momentum"] == 0.9
    # the written model reloads in safe mode and predicts what was written
    frame = _check_predictions(run_dir)
    model = models.load_model(run_dir / "model.keras")
    val = pd.read_csv(run_dir / "manifest.csv").query("split == 'val'")
    probs = model.predict(pipeline.make_dataset(val, 64, 16, False, 7), verbose=0)
    np.testing.assert_allclose(probs, frame[list(datasets.HAM10000.classes)], atol=1e-5)
    assert history["val_balanced_accuracy"].max() == pytest.approx(
        pipeline_balanced_accuracy(frame), abs=1e-6)
    # training a finished folder again reuses it: its time and commit stay the training's
    written = {name: (run_dir / name).read_bytes() for name in ("run_info.json", "model.keras")}
    assert train(config, run_dir=run_dir) == run_dir
    assert all((run_dir / name).read_bytes() == data for name, data in written.items())


def pipeline_balanced_accuracy(frame: pd.DataFrame) -> float:
    from utils.training.callbacks import balanced_accuracy

    return balanced_accuracy(frame["label_index"].to_numpy(),
                             frame[list(datasets.HAM10000.classes)].to_numpy())


def _train_command(data_dir: Path, run_dir: Path, weights: Path) -> list[str]:
    return [PYTHON, "-m", "utils", "train", "--data-dir", str(data_dir), "--run-dir", str(run_dir),
            "--backbone", "mobilenetv2", "--image-size", "32", "--weights", str(weights),
            "--stage1-epochs", "1", "--stage2-epochs", "2", "--batch-size", "16",
            "--steps-per-epoch", "4", "--augment", "none", "--patience", "0", "--run-eagerly"]


def test_two_stage_run_killed_mid_epoch_resumes(synthetic_ham, tmp_path):
    """Pre-trained path (a local weights file): stage 1 (epoch 0), stage 2 (epochs 1-2); the
    process dies inside epoch 2 and the rerun continues there instead of restarting."""
    from utils.training import models

    weights = tmp_path / "mobilenetv2_notop.weights.h5"
    models.build_backbone("mobilenetv2", image_size=32).save_weights(str(weights))
    run_dir = tmp_path / "run"
    command = _train_command(synthetic_ham, run_dir, weights)
    env = {**os.environ, "UTILS_TRAIN_CRASH_AFTER": "2:2"}  # die after 2 batches of epoch 2
    killed = subprocess.run(command, env=env, cwd=paths.repo_root(), capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == 17, killed.stderr[-3000:]
    assert list(pd.read_csv(run_dir / "history.csv")["epoch"]) == [0, 1]
    assert (run_dir / "checkpoints" / "stage1.weights.h5").is_file()
    assert not (run_dir / "model.keras").exists()
    resumed = subprocess.run(command, cwd=paths.repo_root(), capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert list(pd.read_csv(run_dir / "history.csv")["epoch"]) == [0, 1, 2]
    assert "Epoch 1/" not in resumed.stdout  # stage 1 and epoch 1 were not run again
    assert all((run_dir / name).is_file() for name in RUN_FILES)
    _check_predictions(run_dir)


def test_mirrored_strategy_over_two_logical_cpus(tmp_path):
    script = textwrap.dedent("""
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import keras, numpy as np, pandas as pd
        from PIL import Image
        from utils.training import pipeline
        from utils.training.config import TrainConfig
        from utils.training.devices import configure_devices
        strategy = configure_devices(TrainConfig(strategy="mirrored").resolve(gpu_visible=False))
        files = []
        for i in range(8):
            Image.fromarray(np.full((10, 12, 3), i * 30, np.uint8)).save(f"{i}.png")
            files.append(f"{i}.png")
        frame = pd.DataFrame({"path": files, "label_index": [i % 2 for i in range(8)]})
        data = pipeline.make_dataset(frame, 8, 4, True, 2)
        with strategy.scope():
            model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
                                      keras.layers.Dense(2, activation="softmax")])
            model.compile("adam", "categorical_crossentropy")
        model.fit(data, epochs=1, verbose=0)
        print("replicas", strategy.num_replicas_in_sync, type(strategy).__name__)
    """)
    result = subprocess.run([PYTHON, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "replicas 2 MirroredStrategy" in result.stdout


@pytest.mark.real_data
def test_short_run_on_real_ham10000_layout(ham_real, tmp_path):
    from utils.training.train import train

    config = smoke_config("mobilenetv2", data_dir=str(ham_real), dataset="ham10000", subset=400,
                          image_size=32, epochs=1, steps_per_epoch=3, augment="none",
                          batch_size=16)
    run_dir = train(config, run_dir=tmp_path / "real")
    manifest = pd.read_csv(run_dir / "manifest.csv")
    assert len(manifest) == 400 and manifest["path"].str.startswith(str(ham_real)).all()
    assert manifest["image_id"].str.startswith("ISIC_").all()
    # lesion-grouped: no lesion in two splits
    assert (manifest.groupby("lesion_id")["split"].nunique() == 1).all()
    assert all((run_dir / name).is_file() for name in RUN_FILES)
    _check_predictions(run_dir)


def test_checkpoint_metric_is_the_reported_balanced_accuracy():
    """The callback's balanced accuracy equals utils.scoring.metrics' (a tied maximum counts as
    wrong)."""
    from utils.scoring import metrics
    from utils.training.callbacks import balanced_accuracy

    y_true = np.array([0, 0, 1, 1, 2])
    probs = np.array([[0.8, 0.1, 0.1], [0.5, 0.5, 0.0], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8],
                      [0.1, 0.1, 0.8]])
    # class 0: 1 of 2 (the tie is wrong), class 1: 1 of 2, class 2: 1 of 1
    assert balanced_accuracy(y_true, probs) == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    reported = metrics.evaluate_arrays(y_true, probs, ("a", "b", "c"), n_boot=0)
    assert balanced_accuracy(y_true, probs) == pytest.approx(
        reported["metrics"]["balanced_accuracy"]["value"])


def test_nan_loss_stops_with_one_error_line_and_keeps_the_best_checkpoint(synthetic_ham, tmp_path,
                                                                           capsys):
    """Stage 2 with a learning rate of 1e38 diverges in its first epoch: the run stops there with
    one `error:` line (main: trained on, and its checkpoint callbacks saw NaN weights), history
    and the best checkpoint of stage 1 are kept, no model.keras claims a finished run."""
    import h5py

    from utils import cli
    from utils.training import models

    weights = tmp_path / "mobilenetv2_notop.weights.h5"
    models.build_backbone("mobilenetv2", image_size=32).save_weights(str(weights))
    run_dir = tmp_path / "run"
    command = _train_command(synthetic_ham, run_dir, weights)[3:]
    command[command.index("--stage2-epochs") + 1] = "1"
    command[command.index("--steps-per-epoch") + 1] = "2"
    code = cli.main(command + ["--stage2-lr", "1e38"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    (line,) = [text for text in err.splitlines() if text.startswith("error:")]
    assert "error: training diverged: the loss became" in line and "in epoch 2" in line
    assert "is kept in" in line and "--stage2-lr" in line
    assert list(pd.read_csv(run_dir / "history.csv")["epoch"]) == [0]
    with h5py.File(run_dir / "checkpoints" / "best.weights.h5") as handle:
        arrays = []
        handle.visititems(lambda name, item: arrays.append(item[()])
                          if isinstance(item, h5py.Dataset) else None)
    assert arrays and all(np.isfinite(a).all() for a in arrays)
    assert not (run_dir / "model.keras").exists()


def test_a_damaged_resume_state_stops_the_resume_with_the_way_out(tmp_path):
    """A killed run whose BackupAndRestore file is damaged: main ended in an h5py traceback."""
    from utils import fileio
    from utils.errors import DataError
    from utils.training.train import train

    run_dir = tmp_path / "run"
    backup = run_dir / "backup" / "stage0"
    backup.mkdir(parents=True)
    smoke_config("mobilenetv2").resolve(gpu_visible=False).save(run_dir / "config.json")
    (backup / "latest.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n truncated")
    (backup / "training_metadata.json").write_text('{"epoch": 3}')
    before = fileio.tree_digest(run_dir)
    with pytest.raises(DataError) as error:
        train(smoke_config("mobilenetv2"), run_dir=run_dir)
    message = str(error.value)
    assert str(backup) in message and f"Delete the folder {backup}" in message
    assert "restart stage 0 from its first epoch" in message
    after = fileio.tree_digest(run_dir)
    assert after.pop(".lock") and after == before  # nothing else touched; the folder is kept

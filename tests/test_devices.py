"""utils.training.devices: MultiWorkerMirroredStrategy really runs. Two worker processes on
127.0.0.1 (TF_CONFIG, free ports) train a tiny model on synthetic images through the project's
pipeline and configure_devices; one worker is killed mid-epoch, the cluster is restarted (as a
cluster manager restarts every worker) and BackupAndRestore resumes from the last finished
epoch. The result must equal one worker training the same global batches: final loss within
1e-3 (relative) and the same predicted class for at least 98 % of the validation images."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from utils import paths

WORKER = textwrap.dedent("""
    import json, os, sys
    import numpy as np, pandas as pd, keras, tensorflow as tf
    from utils.training import pipeline
    from utils.training.config import TrainConfig
    from utils.training.devices import configure_devices

    manifest, out_dir, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    crash = os.environ.get("CRASH_AFTER_BATCHES")  # "epoch:batches", this worker only
    strategy = configure_devices(TrainConfig(strategy="auto").resolve(gpu_visible=False))
    frame = pd.read_csv(manifest)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)  # each worker takes its part of every batch
    def data(split):  # file order, no shuffle: the same global batches on every run
        rows = frame[frame["split"] == split]
        return pipeline.make_dataset(rows, 16, 32, False, 7).with_options(options)
    keras.utils.set_random_seed(0)
    with strategy.scope():
        inputs = keras.Input((16, 16, 3))
        x = keras.layers.Rescaling(1 / 255.0)(inputs)
        x = keras.layers.Conv2D(8, 3, activation="relu")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(x))
        model.compile(keras.optimizers.Adam(1e-2), "categorical_crossentropy")

    class Crash(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
        def on_train_batch_end(self, batch, logs=None):
            if crash and self.epoch == int(crash.split(":")[0]) and \\
                    batch + 1 >= int(crash.split(":")[1]):
                os._exit(17)

    class Epochs(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            with open(os.path.join(out_dir, "epochs.txt"), "a") as handle:
                handle.write(f"{epoch} {logs['loss']!r}\\n")

    os.makedirs(out_dir, exist_ok=True)
    history = model.fit(data("train"), epochs=epochs, verbose=0, callbacks=[
        keras.callbacks.BackupAndRestore(os.path.join(out_dir, "backup")), Epochs(), Crash()])
    probs = model.predict(data("val"), verbose=0)
    np.save(os.path.join(out_dir, "val_probs.npy"), probs)
    json.dump({"replicas": strategy.num_replicas_in_sync, "strategy": type(strategy).__name__,
               "loss": history.history["loss"][-1]},
              open(os.path.join(out_dir, "result.json"), "w"))
""")
EPOCHS = 3


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start(script: Path, manifest: Path, out_dir: Path, env_extra: dict) -> subprocess.Popen:
    env = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
    env.update(PYTHONPATH=str(paths.repo_root()), TF_CPP_MIN_LOG_LEVEL="2", **env_extra)
    log = open(out_dir.with_suffix(".log"), "ab")
    return subprocess.Popen([sys.executable, str(script), str(manifest), str(out_dir),
                             str(EPOCHS)], env=env, stdout=log, stderr=subprocess.STDOUT)


def _cluster(script: Path, manifest: Path, root: Path, ports: list[int],
             crash: str | None = None) -> list[subprocess.Popen]:
    workers = [f"127.0.0.1:{port}" for port in ports]
    processes = []
    for index in range(len(workers)):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        extra = {"TF_CONFIG": json.dumps(tf_config)}
        if crash and index == 1:
            extra["CRASH_AFTER_BATCHES"] = crash
        processes.append(_start(script, manifest, root / f"worker{index}", extra))
    return processes


def _wait(processes: list[subprocess.Popen], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    for process in processes:
        process.wait(timeout=max(1.0, deadline - time.monotonic()))
    return [p.returncode for p in processes]


@pytest.mark.slow
def test_two_workers_match_one_and_resume_after_a_kill(synthetic_ham, tmp_path):
    from utils.data import readers, splits
    from utils.data.manifest import save_manifest

    manifest = save_manifest(splits.lesion_split(readers.read_ham10000(synthetic_ham), seed=0),
                             tmp_path / "manifest.csv")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)

    # one worker (the reference) and, meanwhile, two workers of which worker 1 dies after 2
    # batches of epoch 1 (the second epoch)
    single = _start(script, manifest, tmp_path / "single", {})
    cluster = tmp_path / "cluster"
    cluster.mkdir()
    first = _cluster(script, manifest, cluster, _free_ports(2), crash="1:2")
    assert _wait([single], 300) == [0], (tmp_path / "single.log").read_text()[-3000:]
    assert _wait([first[1]], 300) == [17], (cluster / "worker1.log").read_text()[-3000:]
    time.sleep(1.0)
    first[0].kill()  # its peer is gone: the cluster manager restarts the whole job
    first[0].wait(timeout=60)
    done_before = (cluster / "worker0" / "epochs.txt").read_text().split()
    assert done_before[0::2] == ["0"]  # epoch 0 finished, epoch 1 did not
    assert not (cluster / "worker0" / "result.json").exists()

    second = _cluster(script, manifest, cluster, _free_ports(2))
    codes = _wait(second, 300)
    assert codes == [0, 0], (cluster / "worker0.log").read_text()[-3000:]
    epochs_run = [line.split()[0] for line in
                  (cluster / "worker0" / "epochs.txt").read_text().splitlines()]
    assert epochs_run == ["0", "1", "2"]  # resumed at epoch 1: epoch 0 was not run again

    reference = json.loads((tmp_path / "single" / "result.json").read_text())
    assert reference["replicas"] == 1
    for index in range(2):
        result = json.loads((cluster / f"worker{index}" / "result.json").read_text())
        assert result["strategy"] == "MultiWorkerMirroredStrategy" and result["replicas"] == 2
        assert result["loss"] == pytest.approx(reference["loss"], rel=1e-3)
        same = (np.load(cluster / f"worker{index}" / "val_probs.npy").argmax(1)
                == np.load(tmp_path / "single" / "val_probs.npy").argmax(1)).mean()
        assert same >= 0.98


def test_non_chief_workers_write_beside_the_run_folder(tmp_path, monkeypatch):
    from utils.training.devices import worker_run_dir

    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert worker_run_dir(tmp_path / "run") == tmp_path / "run" and worker_run_dir(None) is None
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    for index, expected in ((0, tmp_path / "run"),
                            (1, tmp_path / "run" / "workers" / "worker1")):
        monkeypatch.setenv("TF_CONFIG", json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}))
        assert worker_run_dir(tmp_path / "run") == expected
    with pytest.raises(ValueError, match="same --run-dir"):
        worker_run_dir(None)

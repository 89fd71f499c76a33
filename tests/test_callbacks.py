"""utils.training.callbacks: the resume-state checks (a damaged BackupAndRestore state, stage
weights or history give one DataError naming the file and the way out), the history trimmed when
a stage starts over, and the message of a diverged run."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from utils.errors import DataError
from utils.training import callbacks, runs


def _weights(path, value: float = 1.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("layers/dense/vars/0", data=np.full((4, 3), value, "float32"))


def _run_folder(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / runs.HISTORY).write_text(
        "epoch,accuracy,loss,val_balanced_accuracy\n0,0.5,1.2,0.40\n1,0.6,1.0,0.55\n")
    _weights(run_dir / "checkpoints" / "stage1.weights.h5")
    backup = callbacks.backup_dir(run_dir, 2)
    _weights(backup / callbacks.BACKUP_WEIGHTS)
    (backup / callbacks.BACKUP_METADATA).write_text(json.dumps({"epoch": 2}))
    return run_dir


def test_a_sound_resume_state_passes(tmp_path):
    callbacks.check_resume_state(_run_folder(tmp_path), [1, 2])


@pytest.mark.parametrize("damage, names, way_out", [
    ("backup weights", "backup/stage2", "Delete the folder"),
    ("backup metadata", "backup/stage2", "Delete the folder"),
    ("stage weights", "stage1.weights.h5", "delete this file to train stage 1 again"),
    ("history", "history.csv", "delete the run folder"),
])
def test_a_damaged_resume_state_names_the_file_and_the_way_out(tmp_path, damage, names, way_out):
    run_dir = _run_folder(tmp_path)
    backup = callbacks.backup_dir(run_dir, 2)
    if damage == "backup weights":
        data = (backup / callbacks.BACKUP_WEIGHTS).read_bytes()
        (backup / callbacks.BACKUP_WEIGHTS).write_bytes(data[: len(data) // 2])
    elif damage == "backup metadata":
        (backup / callbacks.BACKUP_METADATA).write_text('{"epoch": ')
    elif damage == "stage weights":
        (run_dir / "checkpoints" / "stage1.weights.h5").write_bytes(b"not hdf5")
    else:
        (run_dir / runs.HISTORY).write_bytes(b'epoch,loss\n0,"1.0\n1,2,3,4\n')
    with pytest.raises(DataError) as error:
        callbacks.check_resume_state(run_dir, [1, 2])
    message = str(error.value)
    assert names in message and way_out in message and "\n" not in message


def test_a_stage_that_starts_over_drops_its_history_rows(tmp_path):
    run_dir = _run_folder(tmp_path)
    assert callbacks.trim_history(run_dir, 1) == 1
    assert (run_dir / runs.HISTORY).read_text().splitlines()[1:] == ["0,0.5,1.2,0.4"]
    assert callbacks.trim_history(run_dir, 1) == 0


def test_the_diverged_message_says_what_is_kept(tmp_path):
    run_dir = _run_folder(tmp_path)
    assert "No epoch had completed" in callbacks.diverged_message(run_dir, 0, 3, float("nan"))
    _weights(run_dir / runs.BEST_CHECKPOINT)
    message = callbacks.diverged_message(run_dir, 2, 0, float("nan"))
    assert "the loss became nan in epoch 3, batch 1" in message
    assert "(val balanced accuracy 0.550) is kept in" in message
    assert "best.weights.h5" in message and "--learning-rate" in message

"""utils.training.runs: run-folder naming, creation without clashes, listing and loading."""
from __future__ import annotations

import re

import pytest

from utils.training import runs
from utils.training.config import TrainConfig, smoke_config


def test_new_run_dir_name_and_no_clash(tmp_path):
    config = smoke_config("mobilenetv2").resolve(gpu_visible=False)
    first = runs.new_run_dir(config, root=tmp_path)
    second = runs.new_run_dir(config, root=tmp_path)
    assert re.fullmatch(r"\d{8}-\d{6}-synthetic-mobilenetv2-32", first.name)
    assert second != first and second.is_dir()
    with pytest.raises(ValueError, match="resolve"):
        runs.run_name(TrainConfig())


def test_list_and_load_runs(tmp_path):
    config = smoke_config("mobilenetv2").resolve(gpu_visible=False)
    folder = runs.new_run_dir(config, root=tmp_path)
    assert runs.list_runs(tmp_path) == []  # no config.json yet: not a run
    config.save(folder / "config.json")
    (folder / "history.csv").write_text("epoch,val_balanced_accuracy\n0,0.5\n")
    assert runs.list_runs(tmp_path) == [folder]
    run = runs.load_run(folder)
    assert run.config == config and run.info == {} and not run.complete
    assert list(run.history["val_balanced_accuracy"]) == [0.5]
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        runs.load_run(tmp_path / "nothing")


def test_lock_run_refuses_a_second_holder_and_survives_a_stale_file(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / runs.LOCK).write_text("pid 999999 on a-dead-host, since 2020-01-01 00:00:00\n")
    with runs.lock_run(run_dir):  # a stale file: nobody holds the flock
        text = (run_dir / runs.LOCK).read_text()
        assert text.startswith(f"pid {__import__('os').getpid()} on ")
        with pytest.raises(runs.RunLockedError, match=r"in use by pid \d+ on .*another --run-dir"):
            with runs.lock_run(run_dir):  # a second open file description: refused
                pass
    with runs.lock_run(run_dir):  # released on exit
        pass


def test_completed_epochs(tmp_path):
    assert runs.completed_epochs(tmp_path) == 0
    (tmp_path / "history.csv").write_text("epoch,loss\n")
    assert runs.completed_epochs(tmp_path) == 0
    (tmp_path / "history.csv").write_text("epoch,loss\n0,1.0\n1,0.9\n")
    assert runs.completed_epochs(tmp_path) == 2
    (tmp_path / "history.csv").write_bytes(b'epoch,loss\n0,"1.0\n1,2,3\n')
    assert runs.completed_epochs(tmp_path) == 1  # unreadable: never "nothing to keep"

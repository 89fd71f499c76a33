"""utils.training.budget: sizing arithmetic, presets, the machine-load measure, and one small
budgeted run (the recipe's techniques on: cosine warm-up, EMA, mixup and CutMix, class weights
as sample weights) that measures its own model and fits its budget."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from utils.training import budget, runs
from utils.training.config import TrainConfig


@settings(max_examples=80, deadline=None, derandomize=True)
@given(remaining=st.floats(1.0, 5000.0), step=st.floats(0.01, 5.0), predict=st.floats(0.005, 2.0),
       trace=st.floats(0.0, 100.0), steps=st.integers(1, 400), val=st.integers(1, 60),
       final=st.integers(1, 120), stages=st.sampled_from([1, 2]))
def test_planned_run_fits_what_remains(remaining, step, predict, trace, steps, val, final, stages):
    measured = {"step_s": step, "predict_batch_s": predict, "trace_s": trace}
    plan = budget.plan_epochs(remaining, measured, steps, val, final, stages)
    assert plan["epochs"] >= 1 and 1 <= plan["steps_per_epoch"] <= steps
    if plan["steps_per_epoch"] < steps:  # not one whole epoch fits: one shortened epoch
        assert plan["epochs"] == 1
    elif plan["planned_s"] > remaining:  # over only when not even one epoch fits
        assert plan["epochs"] == 1
    else:  # whole epochs: as many as fit, one more would not
        assert plan["planned_s"] + plan["epoch_s"] > remaining


def test_apply_budget_and_presets():
    config = budget.apply_budget("cpu-30min", TrainConfig(dataset="ham10000", data_dir="x"))
    assert config.budget == "cpu-30min" and config.budget_s == 1800.0
    assert config.weights is None and config.data_dir == "x"
    for name, value in budget.CPU_RECIPE.items():
        assert getattr(config, name) == value
    assert budget.sizes_run(config) and not budget.sizes_run(TrainConfig())
    from utils.evaluation import tta

    assert budget.TTA_VIEWS == len(tta.DIHEDRAL_VIEWS)  # the sizing counts every TTA view
    assert "averaged over the 8 dihedral views" in budget.recipe_line(config)
    assert "plain (one view)" in budget.recipe_line(TrainConfig())
    with pytest.raises(ValueError, match="unknown budget"):
        budget.get_budget("gpu-1min")
    assert "--budget-s 0 --image-size 64 --epochs 30" in budget.replay_arguments(
        config.resolve(gpu_visible=False))


def test_other_processes_share_of_the_cpu():
    start = {"wall": 0.0, "own_cpu": 10.0, "busy_cpu": 100.0}
    end = {"wall": 10.0, "own_cpu": 20.0, "busy_cpu": 115.0}
    share = budget.others_share(start, end)
    import os

    assert share == pytest.approx(5.0 / (10.0 * (os.cpu_count() or 1)), abs=1e-3)
    assert budget.others_share(start, {**end, "busy_cpu": float("nan")}) is None
    snapshot = budget.cpu_snapshot()
    assert snapshot["own_cpu"] > 0 and snapshot["wall"] > 0


@pytest.mark.slow
def test_budgeted_run_measures_sizes_and_fits(synthetic_ham, tmp_path):
    from utils.training.train import train

    config = budget.apply_budget("cpu-5min", TrainConfig(dataset="synthetic",
                                                         data_dir=str(synthetic_ham)))
    config = config.__class__(**{**config.to_dict(), "split_fractions": (0.7, 0.15, 0.15),
                                 "budget_s": 30.0, "image_size": 32, "cache": False,
                                 "mixup_alpha": 0.2, "cutmix_alpha": 1.0, "verbose": 0})
    run_dir = train(config, run_dir=tmp_path / "run")
    report = json.loads((run_dir / runs.BUDGET).read_text())
    resolved = json.loads((run_dir / runs.CONFIG).read_text())
    info = json.loads((run_dir / runs.RUN_INFO).read_text())
    measured = report["measured"][-1]
    assert measured["step_s"] > 0 and measured["predict_batch_s"] > 0
    assert measured["image_size"] == 32 and report["chosen"]["image_size"] == 32
    assert config.predict_tta and measured["final_prediction_passes"] == 1 + budget.TTA_VIEWS
    assert resolved["epochs"] == report["chosen"]["epochs"] >= 1  # the config holds the sizes
    assert 1 <= info["epochs_completed"] <= report["chosen"]["epochs"]
    outcome = report["outcome"]
    assert outcome["duration_s"] == info["duration_s"]
    assert outcome["within_budget"] == (info["duration_s"] <= 30.0)
    # after sizing, the run takes what was planned (slack: a shared machine can slow mid-run;
    # on a loaded machine tracing alone can exceed this tiny budget, then one short epoch runs)
    after_sizing = info["duration_s"] - report["sized_at_s"]
    assert after_sizing <= 1.5 * measured["planned_s"] + 10.0, report
    lines = budget.card_lines(run_dir, TrainConfig.load(run_dir / runs.CONFIG))
    assert "cpu-5min" in lines[0] and "Replay these sizes" in lines[1]
    assert f"counts {1 + budget.TTA_VIEWS} prediction passes" in lines[0]


def test_card_says_a_deadline_stopped_run_replays_sizes_not_the_schedule(tmp_path):
    from utils import fileio

    report = {"budget": "cpu-30min", "budget_s": 1800.0, "sized_at_s": 30.0,
              "chosen": {"image_size": 64, "epochs": 34, "steps_per_epoch": 220},
              "measured": [{"image_size": 64, "train_images_per_s": 158.0, "trace_s": 20.0,
                            "planned_s": 1640.0}],
              "outcome": {"duration_s": 1661.0, "within_budget": True, "epochs_completed": 33,
                          "stopped_by_deadline": True, "other_processes_cpu_share": 0.0}}
    fileio.write_json(tmp_path / runs.BUDGET, report)
    config = TrainConfig(image_size=64, epochs=34, weights=None)
    lines = budget.card_lines(tmp_path, config)
    assert "stopped early by the deadline" in lines[1]
    assert "--budget-s 0 --image-size 64 --epochs 33" in lines[1]  # the epochs it trained
    assert "not exactly the same schedule" in lines[1]
    report["outcome"].update(stopped_by_deadline=False, epochs_completed=34)
    fileio.write_json(tmp_path / runs.BUDGET, report)
    line = budget.card_lines(tmp_path, config)[1]
    assert "34 epochs;" in line and "--epochs 34" in line  # as planned: nothing to add
    report["outcome"].update(epochs_completed=40, epochs_planned=34)
    fileio.write_json(tmp_path / runs.BUDGET, report)
    line = budget.card_lines(tmp_path, config)[1]
    assert "40 epochs (trained on to the deadline: 6 more than planned)" in line
    assert "--epochs 40" in line and "not exactly the same schedule" in line


def _tiny_stage_run(tmp_path, deadline_in_s: float):
    """fit_stages of a tiny conv net (3 planned epochs of 4 steps) with a deadline; (epochs
    trained, the optimiser's last learning rate, the base rate)."""
    import time

    import keras
    import numpy as np
    import pandas as pd
    import tensorflow as tf

    from utils.training import train

    keras.utils.set_random_seed(0)
    config = TrainConfig(dataset="synthetic", weights=None, epochs=3, batch_size=16,
                         learning_rate=0.01, lr_schedule="cosine", warmup_epochs=0.0,
                         weight_average="none", verbose=0, select_best=False)
    x = np.random.default_rng(0).random((64, 8, 8, 3)).astype("float32")
    y = np.arange(64) % 2
    onehot = keras.utils.to_categorical(y, 2)
    data = {"train": tf.data.Dataset.from_tensor_slices((x, onehot)).batch(16).repeat(),
            "val": tf.data.Dataset.from_tensor_slices((x, onehot)).batch(16), "steps": 4}
    inputs = keras.Input((8, 8, 3))
    hidden = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(hidden))
    tmp_path.mkdir(parents=True)
    train.fit_stages(model, data, {"val": y}, config, tmp_path, None,
                     deadline=time.time() + deadline_in_s)
    epochs = len(pd.read_csv(tmp_path / runs.HISTORY))
    return epochs, float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)), 0.01


def test_a_budgeted_stage_trains_past_its_plan_until_the_deadline_or_the_cap(tmp_path):
    from utils.training import train

    epochs, last_rate, base = _tiny_stage_run(tmp_path / "far", deadline_in_s=600.0)
    assert epochs == train.DEADLINE_EPOCH_FACTOR * 3  # far deadline: up to the cap, not the plan
    assert last_rate < 0.01 * base  # the cosine annealed over the cap
    epochs, last_rate, base = _tiny_stage_run(tmp_path / "past", deadline_in_s=0.0)
    assert epochs == 1  # already due: stopped after one epoch, the plan of 3 cut short
    assert last_rate < 0.01 * base  # the clock annealed the rate at once

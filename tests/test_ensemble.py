"""utils.training.ensemble: each member's share of the wall clock, and one small budgeted
ensemble run on synthetic images (members trained in turn, the averaged model, its predictions,
run_info, budget.json, the model-card lines, reuse, Grad-CAM on the first member)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from utils.training import budget, ensemble, runs
from utils.training.config import TrainConfig


@settings(max_examples=60, deadline=None, derandomize=True)
@given(total=st.floats(10.0, 5000.0), members=st.integers(1, 5), final=st.floats(0.0, 30.0),
       used=st.sampled_from([0.0, 0.5, 0.9, 1.0]))
def test_members_share_what_is_left_and_the_last_keeps_the_final_passes(total, members, final,
                                                                         used):
    room = total - (members - 1) * final  # what the members may take between them
    elapsed, shares = 0.0, []
    for k in range(members):
        share = ensemble.member_budget(total, elapsed, members, k, final)
        shares.append(share)
        elapsed += used * share  # a member may leave part of its share unused
    if room <= 0:
        assert shares == [0.0] * members
        return
    assert elapsed <= room + 1e-6  # the other members' final passes are never eaten into
    assert all(b >= a - 1e-9 for a, b in zip(shares, shares[1:]))  # unused time goes on
    if used == 1.0:
        np.testing.assert_allclose(shares, room / members)  # equal shares


def test_member_config_seeds_and_budget():
    config = TrainConfig(weights=None, members=3, seed=5, budget_s=900.0)
    member = ensemble.member_config(config, 2, 300.0)
    assert (member.members, member.seed, member.budget_s) == (1, 2005, 300.0)
    assert ensemble.member_config(TrainConfig(weights=None, members=2), 1, None).budget_s is None


def test_members_must_be_positive():
    from utils.errors import ConfigError

    with pytest.raises(ConfigError, match="members"):
        TrainConfig(members=0)


@pytest.mark.slow
def test_budgeted_ensemble_trains_members_in_turn_and_averages_them(synthetic_ham, tmp_path):
    import keras

    from utils.evaluation import gradcam
    from utils.scoring.predictions import class_columns, read_predictions
    from utils.training.train import train

    config = budget.apply_budget("cpu-5min", TrainConfig(dataset="synthetic",
                                                         data_dir=str(synthetic_ham)))
    config = config.__class__(**{**config.to_dict(), "budget_s": 30.0, "image_size": 32,
                                 "cache": False, "members": 2, "verbose": 0})
    run_dir = train(config, run_dir=tmp_path / "run")
    members = [ensemble.member_dir(run_dir, k) for k in range(2)]
    for k, folder in enumerate(members):
        member = TrainConfig.load(folder / runs.CONFIG)
        assert (member.members, member.seed, member.image_size) == (1, 1000 * k, 32)
        assert (folder / runs.predictions_name("val")).is_file()
        assert not (folder / runs.predictions_name("test")).exists()  # only the ensemble reads it
    # the run's model is the mean of the members' probabilities, and loads in safe mode
    model = keras.saving.load_model(str(run_dir / runs.MODEL), safe_mode=True)
    assert ensemble.is_ensemble(model)
    val = read_predictions(run_dir / runs.predictions_name("val"))
    classes = list(class_columns(val))
    mean = np.mean([read_predictions(f / runs.predictions_name("val"))[classes].to_numpy()
                    for f in members], axis=0)
    np.testing.assert_allclose(val[classes].to_numpy(), mean, atol=2e-5)
    assert len(read_predictions(run_dir / runs.predictions_name("test"))) > 0
    info = json.loads((run_dir / runs.RUN_INFO).read_text())
    member_epochs = [len(pd.read_csv(f / runs.HISTORY)) for f in members]
    assert info["epochs_completed"] == sum(member_epochs) == runs.completed_epochs(run_dir)
    assert [m["seed"] for m in info["members"]] == [0, 1000]
    assert info["best_val_balanced_accuracy"] == ensemble.validation_balanced_accuracy(run_dir)
    report = json.loads((run_dir / runs.BUDGET).read_text())
    assert [m["run_dir"] for m in report["members"]] == ["m0", "m1"]
    assert report["outcome"]["duration_s"] == info["duration_s"]
    # the first member's share leaves the second its own and the first's final passes
    assert report["members"][0]["budget_s"] <= 15.0 + 1e-6
    resolved = TrainConfig.load(run_dir / runs.CONFIG)
    assert resolved.epochs == TrainConfig.load(members[0] / runs.CONFIG).epochs
    lines = budget.card_lines(run_dir, resolved)
    assert "--members 2" in lines[1] and lines[2].startswith("- Members")
    assert "an ensemble of 2 models" in budget.recipe_line(resolved)
    # Grad-CAM explains the first member
    explained = ensemble.explained_member(model)
    activations, logits = gradcam.grad_model(explained)(np.zeros((1, 32, 32, 3), "float32"))
    assert logits.shape == (1, len(classes))
    # a finished ensemble is reused untouched
    stamp = (run_dir / runs.RUN_INFO).stat().st_mtime_ns
    assert train(config, run_dir=run_dir) == run_dir
    assert (run_dir / runs.RUN_INFO).stat().st_mtime_ns == stamp

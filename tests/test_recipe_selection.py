"""utils.studies.recipe_selection: screening never sees the test split, variants change one
thing, equal-compute epochs, and the paired lesion-bootstrap comparison."""
from __future__ import annotations

import json

import numpy as np
import pytest

from utils.studies import recipe_selection as selection
from utils.training import budget
from utils.training.config import TrainConfig


def test_screening_manifest_is_the_final_split_without_test(synthetic_ham):
    from utils.data import readers, splits

    base = budget.apply_budget("cpu-5min", TrainConfig(dataset="synthetic",
                                                       data_dir=str(synthetic_ham), seed=3))
    manifest = selection.screening_manifest(base)
    final = splits.lesion_split(readers.read_table(synthetic_ham), seed=0)
    assert set(manifest["split"]) == {"train", "val"}
    expected = final[final["split"] != "test"]
    assert sorted(manifest["image_id"]) == sorted(expected["image_id"])


def test_variants_change_one_thing_and_equal_compute_scales_epochs():
    base = budget.apply_budget("cpu-5min", TrainConfig(dataset="synthetic"))
    assert selection.run_config(base, "base", 1) == TrainConfig(**{**base.to_dict(), "seed": 1,
                                                                    "split_fractions": (0.7, 0.15,
                                                                                        0.15)})
    mixup = selection.run_config(base, "mixup", 0)
    assert mixup.mixup_alpha == 0.2 and mixup.weight_average == base.weight_average
    big = selection.run_config(base, "size96", 0, epochs=9)
    assert big.image_size == 96 and big.epochs == 4 and big.budget_s == 0  # 9 * (64/96)^2
    pair = selection.run_config(base, "ensemble2", 0, epochs=6)  # each member: 3 epochs
    assert (pair.members, pair.epochs, pair.budget_s) == (2, 3, 0)
    # with a wall clock, the ensemble itself gives each member its share of the whole budget
    assert selection.run_config(base, "ensemble2", 0).budget_s == base.budget_s


def test_paired_comparison_finds_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(0)
    n, k = 600, 3
    y = np.arange(n) % k
    groups = np.repeat(np.arange(n // 2), 2)  # two images per lesion
    good = np.eye(k)[y] * 0.6 + rng.uniform(0, 0.5, (n, k))  # mostly right
    noisy = rng.uniform(0, 1, (n, k))  # chance
    results = {"base": {0: noisy, 1: noisy[::-1].copy()},
               "better": {0: good, 1: good},
               "same": {0: noisy, 1: noisy[::-1].copy()}}
    table = selection.compare(results, y, groups, n_boot=200).set_index("variant")
    assert table.loc["better", "difference_ci"][0] > 0
    assert selection.verdict({**table.loc["better"].to_dict(), "variant": "better"}).startswith(
        "better")
    assert table.loc["same", "difference"] == pytest.approx(0.0)
    assert selection.verdict({**table.loc["same"].to_dict(), "variant": "same"}) == \
        "no clear difference"
    low, high = table.loc["base", "mean_ci"]
    assert low <= table.loc["base", "mean"] <= high


def test_report_states_the_keep_rule_and_that_rows_score_plain_predictions(tmp_path):
    rng = np.random.default_rng(1)
    n, k = 300, 3
    y = np.arange(n) % k
    probs = rng.uniform(0, 1, (n, k))
    table = selection.compare({"base": {0: probs}, "tta": {0: probs[::-1].copy()}}, y,
                              np.arange(n), n_boot=50)
    result = {"table": table, "summaries": {}, "n_val_images": n, "n_val_lesions": n,
              "val_counts": {"a": 100, "b": 100, "c": 100}}
    base = budget.apply_budget("cpu-5min", TrainConfig(dataset="synthetic"))
    assert base.predict_tta  # the recipe predicts with TTA ...
    md, js = selection.write_report(result, base, "python -m utils select-recipe", tmp_path / "r",
                                    [0], epochs=5)
    text = md.read_text()
    # ... but the screening rows are plain predictions, and the report says so and the rule
    assert "predict_tta" not in text.split("Every row")[0]
    assert "plain (one-view) image-only validation predictions except the rescored" in text
    assert "CI of its paired difference lies above 0" in text
    assert "| tta |" in text and js.is_file()


def test_a_report_from_reused_runs_does_not_claim_their_cpu_share():
    assert "6 %" in selection._share_text(0.06)
    text = selection._share_text(0.39, reused=10)
    assert "10 finished run folders were reused" in text and "39" not in text


def test_limits_say_what_the_screening_had():
    base = budget.apply_budget("cpu-5min", TrainConfig(dataset="synthetic"))
    short = selection.limits_text(base, [0, 1], None)
    assert "300 s of wall clock per run is a shorter horizon" in short
    assert "2 training seeds" in short
    assert "shorter horizon" in selection.limits_text(base, [0, 1], 5)
    full = selection.limits_text(budget.apply_budget("cpu-30min", TrainConfig()), [0], None)
    assert "the final run's horizon (1800 s" in full and "shorter" not in full
    assert "one training seed" in full
    assert "not in combination;" in full
    combined = selection.limits_text(base, [0], None, ["base", "metadata", "tta_metadata"])
    assert "except tta_metadata" in combined


def test_the_metadata_variant_rescores_the_base_runs_with_the_fused_predictions(tiny_run,
                                                                               tmp_path):
    import shutil

    from utils.data.manifest import load_manifest
    from utils.scoring import metadata_fusion
    from utils.scoring.predictions import read_predictions

    run_dir = shutil.copytree(tiny_run, tmp_path / "base-seed0")
    assert selection.RESCORED["metadata"] == (False, True)
    rows, plain = selection.val_probabilities([run_dir])
    _, fused = selection.val_probabilities([run_dir], metadata=True)
    manifest = load_manifest(run_dir / "manifest.csv")
    val = read_predictions(run_dir / "predictions_val.csv")
    model = json.loads((run_dir / metadata_fusion.MODEL_FILE).read_text())
    expected = metadata_fusion.fused_frame(val, manifest, model)
    classes = [c for c in val.columns if c not in rows.columns[:5]]
    assert np.allclose(fused, expected[classes].to_numpy())
    assert not np.allclose(fused, plain)


def test_tta_frames_are_predicted_once_per_run(tiny_run, tmp_path, monkeypatch):
    import shutil

    from utils.evaluation import evaluate

    run_dir = shutil.copytree(tiny_run, tmp_path / "base-seed0")
    calls = []
    real = evaluate.tta_predictions
    monkeypatch.setattr(evaluate, "tta_predictions",
                        lambda *args: calls.append(args[0]) or real(*args))
    cache: dict = {}
    _, tta = selection.val_probabilities([run_dir], tta=True, tta_frames=cache)
    _, fused = selection.val_probabilities([run_dir], tta=True, metadata=True, tta_frames=cache)
    assert calls == [run_dir] and not np.allclose(tta, fused)

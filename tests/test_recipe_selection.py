"""utils.studies.recipe_selection: screening never sees the test split, variants change one
thing, equal-compute epochs, and the paired lesion-bootstrap comparison."""
from __future__ import annotations

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
    members = [selection.run_config(base, "ensemble2", 0, m, epochs=6) for m in (0, 1)]
    assert [m.epochs for m in members] == [3, 3] and members[0].seed != members[1].seed
    assert selection.run_config(base, "ensemble2", 0, 1).budget_s == base.budget_s / 2


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

"""utils.scoring.paired: balanced accuracy per arm and paired differences with a two-level
(lesion, seed) bootstrap, on predictions with known answers."""
from __future__ import annotations

import numpy as np
import pytest

from utils.scoring import paired


def one_hot(labels: np.ndarray, k: int = 3, confidence: float = 0.8) -> np.ndarray:
    probs = np.full((len(labels), k), (1 - confidence) / (k - 1))
    probs[np.arange(len(labels)), labels] = confidence
    return probs


@pytest.fixture()
def data():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 40)
    groups = np.repeat(np.arange(60), 2)  # two images per lesion
    return y, groups, rng


def test_identical_arms_differ_by_exactly_zero(data):
    y, groups, rng = data
    guess = one_hot(rng.integers(0, 3, len(y)))
    result = paired.paired_comparison(y, {"none": [guess, guess], "same": [guess, guess]},
                                      "none", groups, n_boot=200)
    difference = result["arms"]["same"]["difference"]
    assert difference == {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0}
    assert result["arms"]["same"]["p_better"] == 0.0
    assert paired.verdict(difference).startswith("no evidence")
    assert result["bootstrap"]["unit"] == "lesion" and result["n_groups"] == 60


def test_an_arm_right_where_the_reference_is_wrong_helps(data):
    """The reference is right on 60 % of each class, the other arm on 80 % (a superset): the
    paired difference is +0.2 exactly, its CI lies above 0 and is narrower than the arms' own."""
    y, groups, _ = data
    right_ref = np.tile(np.arange(40) < 24, 3)
    right_arm = np.tile(np.arange(40) < 32, 3)
    wrong = (y + 1) % 3
    reference = one_hot(np.where(right_ref, y, wrong))
    better = one_hot(np.where(right_arm, y, wrong))
    result = paired.paired_comparison(y, {"none": [reference], "better": [better]}, "none",
                                      groups, n_boot=500)
    arm = result["arms"]["better"]
    assert arm["balanced_accuracy"]["value"] == pytest.approx(0.8)
    assert result["arms"]["none"]["balanced_accuracy"]["value"] == pytest.approx(0.6)
    assert arm["difference"]["value"] == pytest.approx(0.2)
    assert arm["difference"]["ci_low"] > 0 and arm["p_better"] == 1.0
    assert paired.verdict(arm["difference"]).startswith("helps")
    width = arm["difference"]["ci_high"] - arm["difference"]["ci_low"]
    own = arm["balanced_accuracy"]["ci_high"] - arm["balanced_accuracy"]["ci_low"]
    assert width < own
    assert result["bootstrap"]["seeds_resampled"] is False


def test_seeds_are_averaged_and_resampled(data):
    y, groups, rng = data
    seeds = [one_hot(np.where(rng.random(len(y)) < p, y, (y + 1) % 3)) for p in (0.5, 0.9)]
    result = paired.paired_comparison(y, {"none": seeds, "worse": [seeds[0], seeds[0]]}, "none",
                                      groups, n_boot=300, seed=1)
    per_seed = result["arms"]["none"]["per_seed"]
    assert result["arms"]["none"]["balanced_accuracy"]["value"] == pytest.approx(np.mean(per_seed))
    assert result["n_seeds"] == 2 and result["bootstrap"]["seeds_resampled"]
    difference = result["arms"]["worse"]["difference"]
    assert difference["value"] == pytest.approx((per_seed[0] - per_seed[1]) / 2)
    assert difference["ci_high"] <= 0  # never better: seed 0 equals, seed 1 is worse
    again = paired.paired_comparison(y, {"none": seeds, "worse": [seeds[0], seeds[0]]}, "none",
                                     groups, n_boot=300, seed=1)
    assert again == result  # seeded


def test_mismatched_inputs_are_refused(data):
    y, groups, _ = data
    probs = one_hot(y)
    with pytest.raises(ValueError, match="reference arm"):
        paired.paired_comparison(y, {"a": [probs], "b": [probs]}, "none", groups)
    with pytest.raises(ValueError, match="same number"):
        paired.paired_comparison(y, {"none": [probs], "b": [probs, probs]}, "none", groups)
    with pytest.raises(ValueError, match="rows"):
        paired.paired_comparison(y, {"none": [probs], "b": [probs[:10]]}, "none", groups)

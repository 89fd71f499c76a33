"""OOD scores: orientation of max-softmax and energy, Mahalanobis on separable features,
detection metrics with CIs, logits read from the feature model equal the model's softmax."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from utils.evaluation import ood_scores


def test_scores_are_higher_for_flat_predictions():
    confident = np.array([[8.0, 0.0, 0.0]])
    flat = np.array([[0.1, 0.0, 0.05]])
    logits = np.concatenate([confident, flat])
    assert ood_scores.max_softmax(logits)[1] > ood_scores.max_softmax(logits)[0]
    assert ood_scores.energy(logits)[1] > ood_scores.energy(logits)[0]
    # `keep` drops the held-out class's output before the softmax
    held_out = np.array([[0.0, 0.0, 9.0]])
    assert ood_scores.max_softmax(held_out, keep=[0, 1])[0] == pytest.approx(-0.5)


def test_mahalanobis_separates_a_shifted_cluster_and_metrics_have_cis():
    rng = np.random.default_rng(0)
    train = np.concatenate([rng.normal(0, 1, (200, 16)), rng.normal(4, 1, (200, 16))])
    labels = np.repeat([0, 1], 200)
    detector = ood_scores.Mahalanobis(train, labels)
    known = np.concatenate([rng.normal(0, 1, (60, 16)), rng.normal(4, 1, (60, 16))])
    unknown = rng.normal(-4, 1, (40, 16))
    scores = {"mahalanobis": detector.score(np.concatenate([known, unknown])),
              "random": rng.random(160)}
    is_unknown = np.r_[np.zeros(120, bool), np.ones(40, bool)]
    result = ood_scores.detection_metrics(scores, is_unknown, None, n_boot=200, seed=0)
    maha = result["mahalanobis"]
    assert maha["auroc"]["value"] > 0.99 and maha["fpr_at_95_tpr"]["value"] < 0.05
    assert 0.3 < result["random"]["auroc"]["value"] < 0.7
    for values in result.values():
        for stats in values.values():
            assert stats["ci_low"] <= stats["value"] <= stats["ci_high"]
    table = ood_scores.detection_table(result)
    assert len(table) == 4 and set(table["metric"]) == {"auroc", "fpr_at_95_tpr"}


def test_features_and_logits_reproduce_the_model_output(tmp_path):
    keras = pytest.importorskip("keras")
    from utils.training import models

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu")(keras.layers.Rescaling(1 / 255)(inputs))
    x = keras.layers.Dropout(0.3)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x))
    images = np.random.default_rng(0).uniform(0, 255, (6, 16, 16, 3)).astype("float32")
    features, logits = ood_scores.features_and_logits(model, images)
    assert features.shape == (6, 8) and logits.shape == (6, 4)
    np.testing.assert_allclose(softmax(logits, axis=1), model.predict(images, verbose=0),
                               atol=1e-5)
    ood_scores.plot({"energy": ood_scores.energy(logits), "max_softmax":
                     ood_scores.max_softmax(logits)}, np.array([0, 0, 0, 1, 1, 1], bool), "df",
                    tmp_path / "ood.png")
    assert (tmp_path / "ood.png").stat().st_size > 5_000
    with pytest.raises(ValueError, match="Dense softmax"):
        models.feature_model(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))

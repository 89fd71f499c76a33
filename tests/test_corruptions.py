"""Corruptions: each is deterministic, changes the image and grows with severity; the clean
condition through tf.data equals the run's own predictions; the table, summary and plot."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from utils.evaluation import corruptions
from utils.scoring import predictions


@pytest.fixture(scope="module")
def lesion_image(synthetic_ham) -> np.ndarray:
    """A synthetic dermoscopy-like image at 224 px, the size the blur sigmas are given for (at
    64 px the mildest blur, sigma 0.3 px, barely changes a pixel)."""
    import cv2

    path = sorted(synthetic_ham.rglob("*.jpg"))[0]
    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    return cv2.resize(image, (224, 224), interpolation=cv2.INTER_LINEAR)


@pytest.mark.parametrize("name", list(corruptions.CORRUPTIONS))
def test_corruption_is_seeded_changes_the_image_and_grows_with_severity(name, lesion_image):
    changes = []
    for severity in range(1, corruptions.SEVERITIES + 1):
        out = corruptions.corrupt(lesion_image, name, severity, seed=0, index=3)
        assert out.dtype == np.uint8 and out.shape == lesion_image.shape
        np.testing.assert_array_equal(out, corruptions.corrupt(lesion_image, name, severity,
                                                               seed=0, index=3))
        changes.append(np.abs(out.astype(float) - lesion_image).mean())
    assert changes[0] > 0.2, changes
    assert changes[-1] > changes[0] and all(b >= a - 0.5 for a, b in zip(changes, changes[1:])), \
        changes
    np.testing.assert_array_equal(corruptions.corrupt(lesion_image, "clean", 0), lesion_image)


def test_noise_differs_between_images_and_bad_names_are_refused(lesion_image):
    a = corruptions.corrupt(lesion_image, "gaussian_noise", 2, seed=0, index=0)
    b = corruptions.corrupt(lesion_image, "gaussian_noise", 2, seed=0, index=1)
    assert not np.array_equal(a, b)
    assert corruptions.conditions(["contrast"]) == [("clean", 0)] + [
        ("contrast", s) for s in range(1, 6)]
    with pytest.raises(ValueError, match="unknown corruption"):
        corruptions.conditions(["fog"])
    with pytest.raises(ValueError, match="severity"):
        corruptions.corrupt(lesion_image, "contrast", 6)


def test_section_on_a_run_clean_equals_its_predictions(tiny_run, tmp_path):
    from utils.training import models, runs

    run = runs.load_run(tiny_run)
    rows = run.manifest.query("split == 'test'").reset_index(drop=True)
    frame = predictions.read_predictions(tiny_run / "predictions_test.csv")
    classes = predictions.class_columns(frame)
    model = models.load_model(run.model_path, compile=False)
    section, table = corruptions.corruption_section(model, rows, classes, run.config.image_size,
                                                    run.config.resize_policy, n_boot=50)
    plan = corruptions.conditions()
    assert len(table) == len(plan) == 1 + 6 * 5
    clean = corruptions.predict_conditions(model, rows, run.config.image_size,
                                           run.config.resize_policy, [("clean", 0)])[0]
    np.testing.assert_allclose(clean, frame[list(classes)].to_numpy(), atol=1e-5)
    first = table.iloc[0]
    assert first["corruption"] == "clean" and first["relative_to_clean"] == pytest.approx(1.0)
    assert set(section["per_corruption"]) == set(corruptions.CORRUPTIONS)
    assert section["mean_balanced_accuracy"] == pytest.approx(
        table.loc[table["corruption"] != "clean", "balanced_accuracy"].mean())
    corruptions.plot(pd.DataFrame(section["table"]), tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 5_000

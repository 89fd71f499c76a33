"""ISIC 2018 Task 3 test: submission format, ISIC_0035068 handling, equality with the official
scorer."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from utils.data import datasets
from utils.evaluation import submission

keras = pytest.importorskip("keras")

EXCLUDED = datasets.ISIC2018_TASK3_EXCLUDED[0]


@pytest.fixture(scope="module")
def task3_dir(synthetic_ham, tmp_path_factory):
    """The ISIC 2018 Task 3 test layout (input folder + one-hot ground truth) built from synthetic
    HAM10000 images, every class present, one image named like the excluded ISIC_0035068."""
    from fake_isic2018 import task3_folder

    root = task3_folder(synthetic_ham, tmp_path_factory.mktemp("isic2018"))
    assert EXCLUDED in pd.read_csv(root / "ISIC2018_Task3_Test_GroundTruth.csv")["image"].tolist()
    return root


def tiny_model(path, size: int = 24):
    keras.utils.set_random_seed(1)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.Flatten()(x)
    model = keras.Model(
        inputs, keras.layers.Dense(datasets.HAM10000.num_classes, activation="softmax")(x)
    )
    model.save(path)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # the scorer calls DataFrame.applymap
def test_submission_matches_official_scorer(task3_dir, tmp_path):
    from isic_challenge_scoring.classification import ClassificationMetric, ClassificationScore

    tiny_model(tmp_path / "model.keras")
    result = submission.evaluate_official_test(
        tmp_path / "model.keras", task3_dir, tmp_path / "out", n_boot=50
    )
    sub = pd.read_csv(tmp_path / "out" / submission.SUBMISSION_NAME)
    ours = pd.read_csv(tmp_path / "out" / submission.PREDICTIONS_NAME)
    truth = pd.read_csv(task3_dir / "ISIC2018_Task3_Test_GroundTruth.csv")
    assert list(sub.columns) == ["image", *datasets.ISIC2018_TASK3_COLUMNS]
    assert set(sub["image"]) == set(truth["image"])  # every image, as the scorer requires
    np.testing.assert_allclose(
        sub[list(datasets.ISIC2018_TASK3_COLUMNS)].sum(axis=1), 1.0, rtol=1e-5
    )
    for isic, ham in datasets.ISIC2018_TASK3_TO_HAM.items():
        np.testing.assert_allclose(sub[isic], ours[ham])
    # our metrics leave ISIC_0035068 out, exactly as the official scorer does
    assert result["n_images"] == len(truth) - 1 and result["excluded_images"] == [EXCLUDED]
    assert (
        json.loads((tmp_path / "out" / submission.METRICS_NAME).read_text())["n_images"]
        == len(truth) - 1
    )
    official = ClassificationScore.from_file(task3_dir / "ISIC2018_Task3_Test_GroundTruth.csv",
                                             tmp_path / "out" / submission.SUBMISSION_NAME,
                                             ClassificationMetric.BALANCED_ACCURACY)
    assert result["metrics"]["balanced_accuracy"]["value"] == pytest.approx(
        official.overall, abs=1e-12
    )
    assert result["metrics"]["macro_auc"]["value"] == pytest.approx(
        official.macro_average["auc"], abs=1e-12
    )
    for isic, ham in datasets.ISIC2018_TASK3_TO_HAM.items():
        assert result["metrics"][f"auc/{ham}"]["value"] == pytest.approx(
            official.per_category.loc[isic, "auc"], abs=1e-12)


def test_submission_needs_ham_classes():
    from utils.errors import DataError

    frame = pd.DataFrame(
        {
            "image_id": ["a"],
            "lesion_id": ["a"],
            "label": ["MEL"],
            "label_index": [0],
            "split": ["test"],
            **{c: [1.0 / 8] for c in datasets.ISIC2019.classes},
        }
    )
    with pytest.raises(DataError, match="HAM10000 class columns"):
        submission.submission_frame(frame)

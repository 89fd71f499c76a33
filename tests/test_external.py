"""External test sets: the ISIC 2018 Task 3 test layout (official scorer numbers, submission,
equality with our metrics) and ISIC 2019 without its HAM10000 images (exclusion rules, AK + SCC
-> akiec), both end to end from a trained run folder; the card lists them."""
from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from utils import cli
from utils.data import datasets
from utils.evaluation import external, submission

pytest.importorskip("keras")


@pytest.fixture(scope="module")
def task3_dir(synthetic_ham, tmp_path_factory):
    """The ISIC 2018 Task 3 test layout from synthetic HAM10000 images, ids sorted as in the
    real ground truth, one image named like the excluded ISIC_0035068."""
    from fake_isic2018 import task3_folder

    root = task3_folder(synthetic_ham, tmp_path_factory.mktemp("isic2018"))
    return root


@pytest.fixture(scope="module")
def isic2019_dir(synthetic_isic2019, tmp_path_factory):
    """A copy of the synthetic ISIC 2019 layout where 10 images carry HAM10000 lesion ids and
    one more is renamed into HAM10000's image-id range (no lesion id)."""
    root = tmp_path_factory.mktemp("isic2019") / "ISIC_2019"
    shutil.copytree(synthetic_isic2019, root)
    meta = pd.read_csv(root / "ISIC_2019_Training_Metadata.csv", dtype=str)
    truth = pd.read_csv(root / "ISIC_2019_Training_GroundTruth.csv", dtype={"image": str})
    meta.loc[:9, "lesion_id"] = [f"HAM_{i:07d}" for i in range(10)]
    old, new = meta.loc[10, "image"], "ISIC_0025000"
    (root / "ISIC_2019_Training_Input" / f"{old}.jpg").rename(
        root / "ISIC_2019_Training_Input" / f"{new}.jpg")
    meta.loc[10, ["image", "lesion_id"]] = [new, ""]
    truth.loc[truth["image"] == old, "image"] = new
    meta.to_csv(root / "ISIC_2019_Training_Metadata.csv", index=False)
    truth.to_csv(root / "ISIC_2019_Training_GroundTruth.csv", index=False)
    return root


@pytest.fixture()
def run_dir(tiny_run, tmp_path):
    return shutil.copytree(tiny_run, tmp_path / "run")


@pytest.mark.filterwarnings("ignore::FutureWarning")  # the scorer calls DataFrame.applymap
def test_isic2018_task3_end_to_end_matches_the_official_scorer(run_dir, task3_dir, capsys):
    assert cli.main(["external", str(run_dir), str(task3_dir), "--n-boot", "50",
                     "--no-plots"]) == 0
    assert "official isic-challenge-scoring" in capsys.readouterr().out
    out = run_dir / "external" / "isic2018_task3_test"
    result = json.loads((out / "metrics.json").read_text())
    official = json.loads((out / submission.OFFICIAL_NAME).read_text())
    truth = pd.read_csv(task3_dir / "ISIC2018_Task3_Test_GroundTruth.csv")
    assert result["n_images"] == len(truth) - 1  # ISIC_0035068 left out, as the scorer does
    assert result["metrics"]["balanced_accuracy"]["value"] == pytest.approx(
        official["balanced_accuracy"], abs=1e-12)
    assert result["metrics"]["macro_auc"]["value"] == pytest.approx(official["macro_auc"],
                                                                    abs=1e-12)
    for isic, ham in datasets.ISIC2018_TASK3_TO_HAM.items():
        assert result["metrics"][f"auc/{ham}"]["value"] == pytest.approx(official["auc"][isic],
                                                                         abs=1e-12)
    sub = pd.read_csv(out / submission.SUBMISSION_NAME)
    assert list(sub.columns) == ["image", *datasets.ISIC2018_TASK3_COLUMNS]
    assert set(sub["image"]) == set(truth["image"])
    # the melanoma rule comes from the run's validation predictions
    val = pd.read_csv(run_dir / "predictions_val.csv")
    assert result["operating_point"]["val_images"] == len(val)
    predicted = pd.read_csv(out / "predictions_test.csv")
    assert list(predicted.columns[:5]) == ["image_id", "lesion_id", "label", "label_index",
                                           "split"]
    # `evaluate` reads the external folder like a run folder's predictions
    assert cli.main(["evaluate", str(out / "predictions_test.csv"), "--n-boot", "20",
                     "--no-plots"]) == 0


def test_isic2019_without_ham10000_maps_ak_and_scc_to_akiec(run_dir, isic2019_dir):
    result = external.evaluate_external(run_dir, isic2019_dir, n_boot=50, plots=False)
    out = run_dir / "external" / external.ISIC2019_NAME
    excluded = pd.read_csv(out / external.EXCLUDED_NAME)
    assert len(excluded) == 11 and result["n_excluded_ham10000"] == 11
    assert sorted(excluded["reason"].unique()) == ["HAM10000 lesion id",
                                                   "image id in HAM10000's range"]
    truth = pd.read_csv(isic2019_dir / "ISIC_2019_Training_GroundTruth.csv")
    assert result["n_images"] == len(truth) - 11
    predicted = pd.read_csv(out / "predictions_test.csv")
    assert not set(excluded["image_id"]) & set(predicted["image_id"])
    codes = truth.set_index("image")[list(datasets.ISIC2019.classes)].idxmax(axis=1)
    mapped = predicted.set_index("image_id")["label"]
    assert (mapped == codes[mapped.index].map(datasets.ISIC2019_TO_HAM)).all()
    assert {"AK", "SCC"} <= set(codes[mapped.index]) and "akiec" in set(mapped)
    assert result["mapping"]["AK"] == result["mapping"]["SCC"] == "akiec"
    # the card of the run lists the external set
    from utils.evaluation import evaluate

    evaluate.evaluate(run_dir, n_boot=20, plots=False)
    card = (run_dir / "model_card.md").read_text()
    assert "ISIC 2019 training images not from HAM10000" in card


def test_external_refuses_other_layouts_and_non_ham_models(run_dir, synthetic_ham, tmp_path):
    from utils.errors import DataError

    with pytest.raises(DataError, match="external test sets are"):
        external.external_table(synthetic_ham)
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**config, "dataset": "isic2019"}))
    with pytest.raises(DataError, match="HAM10000's classes"):
        external.check_ham_model(run_dir)


@pytest.mark.real_data
def test_real_isic2019_subset_keeps_only_its_non_ham10000_images(isic2019_real):
    from utils.data import readers

    table = readers.read_isic2019(isic2019_real)
    kept, excluded = external.split_ham_origin(table)
    # the development subset: 400 images of HAM10000 (all with HAM_ lesion ids) and 9 others
    assert len(kept) + len(excluded) == len(table)
    assert (excluded["reason"] == "HAM10000 lesion id").all()
    numbers = kept["image_id"].map(datasets.isic_image_number)
    assert not numbers.between(*datasets.HAM10000_IMAGE_NUMBERS).any()
    assert (len(excluded), len(kept)) == (400, 9)
    assert excluded["image_id"].map(datasets.isic_image_number).between(
        *datasets.HAM10000_IMAGE_NUMBERS).all()  # both rules agree on the real data

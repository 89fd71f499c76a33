"""utils.studies.ablate (`python -m utils ablate`): the smoke setting trains one run per arm on one
shared lesion-grouped split, records each arm's preprocessing, writes the report with paired
differences, resumes without retraining and refuses a work folder with other settings."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from utils import cli
from utils.augmentation.preprocess import parse_preprocessing
from utils.errors import DataError
from utils.studies import ablate
from utils.training import runs

pytest.importorskip("keras")


@pytest.mark.slow
def test_smoke_ablation_end_to_end(synthetic_ham, tmp_path, capsys):
    work, out = tmp_path / "work", tmp_path / "report" / "ablation.md"
    arguments = ["ablate", "--smoke", "--dataset", "synthetic", "--data-dir", str(synthetic_ham),
                 "--seeds", "0", "--work-dir", str(work), "--out", str(out)]
    assert cli.main(arguments) == 0
    capsys.readouterr()
    summary = json.loads(out.with_suffix(".json").read_text())
    spec = parse_preprocessing("colour,hair,fov").spec()
    assert set(summary["arms"]) == {"none", "colour,hair,fov"}
    assert summary["comparison"]["reference"] == "none"
    assert summary["arms"]["colour,hair,fov"]["preprocess"] == spec
    run_dirs = {arm: work / f"{parse_preprocessing(arm).short_name()}-seed0"
                for arm in summary["arms"]}
    for arm, run_dir in run_dirs.items():
        config = json.loads((run_dir / runs.CONFIG).read_text())
        assert config["preprocess"] == parse_preprocessing(arm).spec()
        assert runs.load_run(run_dir).complete
    shared = pd.read_csv(work / runs.MANIFEST)
    for run_dir in run_dirs.values():  # one split for every arm
        assert pd.read_csv(run_dir / runs.MANIFEST)["image_id"].tolist() == \
            shared["image_id"].tolist()
    comparison = summary["comparison"]
    assert comparison["n_images"] == int((shared["split"] == "test").sum())
    difference = comparison["arms"]["colour,hair,fov"]["difference"]
    assert difference["ci_low"] <= difference["value"] <= difference["ci_high"]
    text = out.read_text()
    assert "Smoke run" in text and "paired difference vs none" in text
    assert "python -m utils ablate --smoke" in text and "In plain words" in text
    assert out.with_suffix(".png").stat().st_size > 0
    # the preprocessed arm's test predictions are what evaluation and predict compute from the
    # raw images with the run's recorded preprocessing
    from utils.evaluation import evaluate, predict

    run_dir = run_dirs["colour,hair,fov"]
    written = pd.read_csv(run_dir / runs.predictions_name("test"), dtype={"image_id": str})
    classes = [c for c in written.columns if c not in ("image_id", "lesion_id", "label",
                                                        "label_index", "split")]
    again = evaluate.tta_predictions(run_dir, "test", classes, ("identity",))
    np.testing.assert_allclose(again[classes].to_numpy(float), written[classes].to_numpy(float),
                               atol=1e-5)
    first = shared[shared["split"] == "test"].iloc[0]
    raw = predict.predict_path(run_dir / runs.MODEL, first["path"])
    np.testing.assert_allclose(raw[classes].to_numpy(float)[0],
                               written[classes].to_numpy(float)[0], atol=1e-5)
    # a second call reuses the finished runs: nothing is trained again
    model = run_dirs["none"] / runs.MODEL
    stamp = model.stat().st_mtime_ns
    assert cli.main(arguments) == 0
    assert model.stat().st_mtime_ns == stamp
    # the same work folder with another budget is refused before any training
    with pytest.raises(DataError, match="other settings"):
        ablate.ablate(ablate.AblationConfig(**{**ablate.SMOKE, "epochs": 2, "seeds": (0,),
                                               "dataset": "synthetic",
                                               "data_dir": str(synthetic_ham)}), work)


def test_arms_must_differ_and_parse():
    with pytest.raises(ValueError, match="two or more different"):
        ablate.AblationConfig(arms=("none", "none"))
    with pytest.raises(ValueError, match="unknown preprocessing step"):
        ablate.AblationConfig(arms=("none", "sharpen"))
    with pytest.raises(ValueError, match="seeds"):
        ablate.AblationConfig(seeds=(1, 1))
    assert ablate.arm_name("colour,hair,fov") == "fov+hair+colour"

"""`evaluate`: metrics.json / metrics.csv / plots of a real (tiny) run folder."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from utils import cli
from utils.evaluation import evaluate

keras = pytest.importorskip("keras")


@pytest.fixture(scope="module")
def run_dir(synthetic_ham, tmp_path_factory, make_run) -> Path:
    return make_run(tmp_path_factory.mktemp("runs"), synthetic_ham)


def test_evaluate_run_folder_with_tta_and_calibration(run_dir, synthetic_ham, capsys):
    from utils import fileio

    before = fileio.tree_digest(synthetic_ham)  # --tta reads the test images again
    code = cli.main(["evaluate", str(run_dir), "--n-boot", "200", "--tta", "--calibrate"])
    assert code == 0
    assert fileio.tree_digest(synthetic_ham) == before
    out = capsys.readouterr().out
    assert "balanced_accuracy" in out and "ECE" in out
    result = json.loads((run_dir / "metrics.json").read_text())
    test = pd.read_csv(run_dir / "predictions_test.csv")
    assert result["n_images"] == len(test) and result["bootstrap"]["unit"] == "lesion"
    stats = result["metrics"]["balanced_accuracy"]
    assert stats["ci_low"] <= stats["value"] <= stats["ci_high"]
    assert np.array(result["confusion_matrix"]).sum() == len(test)
    assert result["tta"]["views"] and "calibration" in result
    # calibration keeps the argmax, so balanced accuracy is unchanged
    assert result["calibration"]["metrics"]["balanced_accuracy"]["value"] == pytest.approx(
        stats["value"]
    )
    tta_frame = pd.read_csv(run_dir / "predictions_test_tta.csv")
    assert tta_frame["image_id"].tolist() == test["image_id"].tolist()
    table = pd.read_csv(run_dir / "metrics.csv")
    assert set(table["variant"]) == {"plain", "tta", "calibrated"}
    assert {"metric", "class", "value", "ci_low", "ci_high"} <= set(table.columns)
    for name in ("test_confusion_matrix.png", "test_roc_curves.png", "test_reliability.png",
                 "test_calibrated_reliability.png", "test_reliability_compared.png",
                 "training_curves.png", "test_tta_confusion_matrix_normalised.png"):
        assert (run_dir / "plots" / name).stat().st_size > 5_000, name


def test_evaluate_a_predictions_csv_of_the_val_split(run_dir, tmp_path):
    csv = tmp_path / "predictions_val.csv"
    csv.write_bytes((run_dir / "predictions_val.csv").read_bytes())
    result = evaluate.evaluate(csv, split="val", n_boot=50, plots=False)
    assert (tmp_path / "metrics_val.json").is_file() and (tmp_path / "metrics_val.csv").is_file()
    assert result["split"] == "val" and "tta" not in result


def test_evaluate_errors_name_the_problem(tmp_path):
    from utils.errors import DataError

    with pytest.raises(DataError, match="no predictions_test.csv"):
        evaluate.evaluate(tmp_path)
    with pytest.raises(DataError, match="neither a run folder"):
        evaluate.evaluate(tmp_path / "nothing.csv")

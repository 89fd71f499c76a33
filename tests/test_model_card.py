"""The model card of `python -m utils evaluate`: every section, numbers equal to metrics.json,
the CLEAR Derm checklist filled from the run, the sections a run did not compute say how."""
from __future__ import annotations

import json
import shutil

import pytest

from utils import cli
from utils.evaluation import checklist, model_card
from utils.tables import format_ci

pytest.importorskip("keras")

SECTIONS = ["Model", "Data", "Test metrics", "Per-class metrics", "Selective prediction",
            "Subgroups", "Corruptions", "External test sets", "Reporting checklist",
            "Intended use and limits"]


def test_evaluate_writes_a_card_with_every_section(tiny_run, tmp_path):
    run_dir = shutil.copytree(tiny_run, tmp_path / "run")
    assert cli.main(["evaluate", str(run_dir), "--n-boot", "50", "--calibrate",
                     "--corruptions"]) == 0
    card = (run_dir / "model_card.md").read_text()
    result = json.loads((run_dir / "metrics.json").read_text())
    assert model_card.section_names(card) == SECTIONS
    assert f"`python -m utils evaluate {run_dir} --n-boot 50 --calibrate --corruptions`" in card
    assert "SYNTHETIC" in card  # a synthetic run says so at the top
    # numbers come from the evaluation, not typed
    assert format_ci(result["selective"]["aurc"]) in card
    for code in result["classes"]:
        assert format_ci(result["metrics"][f"mcc/{code}"]) in card or result["metrics"][
            f"mcc/{code}"]["value"] is None
    point = result["operating_point"]
    sensitivity = format_ci(result["metrics"][point["sensitivity_name"]])
    assert f"| {point['sensitivity_name']} | {sensitivity}" in card
    assert f"{result['corruptions']['clean_balanced_accuracy']:.3f}" in card
    assert "isic-challenge-scoring" in card and "MCC" in card
    # the checklist: every CLEAR Derm domain, one status per item, unfillable items say so
    rows = [line for line in card.split("## Reporting checklist")[1].splitlines()
            if line.startswith("| ") and not line.startswith("| domain")]
    assert {row.split(" | ")[0][2:] for row in rows} == {"data", "technique",
                                                         "technical assessment", "application"}
    statuses = {row.split(" | ")[2] for row in rows}
    assert statuses <= {checklist.FILLED, checklist.PARTLY, checklist.CANNOT}
    assert checklist.CANNOT in statuses and "Fitzpatrick" in card
    for name in ("selective.csv", "subgroups.csv", "corruptions.csv",
                 "plots/test_risk_coverage.png", "plots/test_subgroups.png",
                 "plots/test_corruptions.png"):
        assert (run_dir / name).is_file(), name


def test_sections_not_computed_say_which_option_computes_them(tiny_run, tmp_path):
    from utils.evaluation import evaluate

    run_dir = shutil.copytree(tiny_run, tmp_path / "run")
    evaluate.evaluate(run_dir, n_boot=20, plots=False, selective=False, subgroups=False)
    card = (run_dir / "model_card.md").read_text()
    assert "--corruptions" in card.split("## Corruptions")[1].split("##")[0]
    assert "Not computed" in card.split("## Subgroups")[1].split("##")[0]
    assert "None evaluated" in card.split("## External test sets")[1].split("##")[0]


def test_a_recipe_that_predicts_with_tta_reports_the_tta_section_as_its_result(tiny_run,
                                                                               tmp_path):
    from utils.evaluation import compare, evaluate

    run_dir = shutil.copytree(tiny_run, tmp_path / "runs" / "run")
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**config, "predict_tta": True}))
    evaluate.evaluate(run_dir, n_boot=50, plots=False, selective=False, subgroups=False)
    card = (run_dir / "model_card.md").read_text()
    assert "but that was not evaluated" in card and "not the recipe's result" in card
    assert compare.run_row(run_dir, n_boot=50)["prediction"] == "plain"

    result = evaluate.evaluate(run_dir, n_boot=50, plots=False, selective=False,
                               subgroups=False, tta=True)
    card = (run_dir / "model_card.md").read_text()
    assert "its result is the TTA column" in card and "predictions averaged over the 8" in card
    per_class = card.split("## Per-class metrics")[1].split("##")[0]
    assert "TTA predictions, the recipe's result" in per_class
    for code in result["classes"]:  # the per-class rows are the TTA section's, not plain
        cells = per_class.split(f"| {code} | ")[1].splitlines()[0].split(" | ")
        assert cells[2] == format_ci(result["tta"]["metrics"][f"sensitivity/{code}"])
    matrix = card.split("Confusion matrix (test, TTA predictions")[1]
    first = result["tta"]["confusion_matrix"][0][:len(result["classes"])]
    assert f"| {result['classes'][0]} | " + " | ".join(str(int(v)) for v in first) in matrix
    row = compare.run_row(run_dir, n_boot=50)
    assert row["prediction"] == "TTA (8 views)"
    assert row["balanced_accuracy"] == pytest.approx(
        result["tta"]["metrics"]["balanced_accuracy"]["value"])

"""The end-to-end job writes a report folder with metrics, CIs, plots, Grad-CAM and a model card."""
from __future__ import annotations

from dataclasses import replace

import pytest

from utils.studies import reproduce


def test_job_config_defaults_to_the_synthetic_default_and_presets_for_real_data():
    default = reproduce.job_config()
    assert default.train.data_dir is None and default.train.weights is None
    real = reproduce.job_config("data/raw/HAM10000", "ham10000", weights=None)
    assert real.train.data_dir == "data/raw/HAM10000" and real.train.dataset == "ham10000"
    assert real.to_dict()["train"]["backbone"] == real.train.backbone


@pytest.mark.slow
def test_reproduce_writes_a_complete_report(synthetic_ham, tmp_path):
    train = replace(reproduce.SYNTHETIC_DEFAULT, data_dir=str(synthetic_ham), image_size=32,
                    epochs=2, run_eagerly=False)
    job = reproduce.JobConfig(train=train, n_boot=50, tta=True, calibrate=True,
                              gradcam_images=14)
    report = reproduce.reproduce(job, run_dir=tmp_path / "run", report_dir=tmp_path / "report")
    card = (report / "model_card.md").read_text()
    assert "balanced_accuracy" in card and "temperature-scaled" in card
    assert "Grad-CAM localisation" in card
    from utils.evaluation.model_card import section_names

    assert section_names(card) == ["Model", "Data", "Test metrics", "Per-class metrics",
                                   "Selective prediction", "Subgroups", "Corruptions",
                                   "External test sets", "Grad-CAM localisation",
                                   "Reporting checklist", "Intended use and limits"]
    assert "| explainability | filled |" in card and "MCC" in card
    summary = (report / "gradcam_localisation_summary.csv").read_text()
    assert summary.splitlines()[-1].startswith("all,")
    for name in ("job_config.json", "metrics.json", "metrics.csv", "config.json",
                 "selective.csv", "subgroups.csv", "corruptions.csv",
                 "plots/test_risk_coverage.png", "plots/test_subgroups.png",
                 "plots/test_corruptions.png",
                 "plots/test_confusion_matrix_normalised.png", "plots/training_curves.png"):
        assert (report / name).is_file(), name
    assert (tmp_path / "run" / "model.keras").is_file()
    assert not list(report.rglob("*.jpg"))  # reports carry no data images
    # the data table of the card counts the manifest's images per class and split (in order)
    import pandas as pd

    manifest = pd.read_csv(tmp_path / "run" / "manifest.csv")
    counts = pd.crosstab(manifest["label"], manifest["split"])[["train", "val", "test"]]
    for label, row in counts.iterrows():
        assert f"| {label} | " + " | ".join(str(v) for v in row) + " |" in card

"""The end-to-end job writes a report folder with metrics, CIs, plots, Grad-CAM and a model card."""
from __future__ import annotations

from dataclasses import replace

import pytest

from utils.augmentation.published import PUBLISHED_COPIES
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
    from utils import fileio

    before = fileio.tree_digest(synthetic_ham)
    report = reproduce.reproduce(job, run_dir=tmp_path / "run", report_dir=tmp_path / "report")
    assert fileio.tree_digest(synthetic_ham) == before  # the data folder is only read
    card = (report / "model_card.md").read_text()
    assert card.startswith("# Model card: MobileNetV2 on synthetic\n")
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


def _args(*options: str):
    import argparse

    parser = argparse.ArgumentParser()
    reproduce.add_arguments(parser)
    return parser, parser.parse_args(list(options))


def test_help_lists_the_backbones_and_every_default():
    from utils.training import backbones

    parser, _ = _args()
    for action in parser._actions:
        if action.dest != "help":
            assert "default" in (action.help or ""), f"{action.dest}: help shows no default"
    text = parser.format_help()
    for name in backbones.list_backbones():
        assert name in text
    for option in ("--batch-size", "--seed", "--subset", "--augment", "--protocol"):
        assert option in text


def test_options_reach_the_job_config():
    _, args = _args("--data-dir", "data/raw/HAM10000", "--backbone", "densenet201",
                    "--image-size", "224", "--weights", "imagenet", "--epochs", "3",
                    "--batch-size", "8", "--seed", "2", "--subset", "500", "--augment", "none",
                    "--n-boot", "10")
    job = reproduce.job_from_args(args)
    train = job.train
    assert (train.backbone, train.image_size, train.weights, train.stage2_epochs) == (
        "DenseNet201", 224, "imagenet", 3)
    assert (train.batch_size, train.seed, train.subset, train.augment) == (8, 2, 500, "none")
    assert (train.dataset, job.protocol, job.n_boot) == ("ham10000", "lesion", 10)
    assert reproduce.command_line(args) == (
        "python -m utils reproduce --data-dir data/raw/HAM10000 --backbone DenseNet201 "
        "--image-size 224 --weights imagenet --epochs 3 --batch-size 8 --seed 2 --subset 500 "
        "--augment none --n-boot 10")
    _, scratch = _args("--epochs", "5", "--protocol", "paper")
    job = reproduce.job_from_args(scratch)
    assert (job.train.epochs, job.train.augment, job.protocol) == (5, "offline", "paper")


@pytest.mark.parametrize("options", [
    ("--backbone", "densenet"), ("--augment", "sideways"), ("--batch-size", "0"),
    ("--protocol", "random"), ("--image-size", "big"), ("--subset", "3"), ("--seed", "-1"),
])
def test_bad_options_are_one_error_line(options, capsys):
    from utils import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["reproduce", *options])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in error
    assert error.strip().splitlines()[-1].startswith("python -m utils reproduce: error:")


@pytest.mark.parametrize("options", [
    ("--protocol", "paper", "--augment", "online"),
    ("--backbone", "inceptionv3", "--image-size", "64"),
])
def test_options_that_cannot_run_together_are_one_error_line(options, capsys, tmp_path,
                                                              monkeypatch):
    from utils import cli

    monkeypatch.chdir(tmp_path)
    assert cli.main(["reproduce", *options]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_a_run_without_a_data_folder_is_labelled_synthetic():
    from utils.training import runs

    for options, label in ((("--dataset", "ham10000"), "synthetic"),
                           (("--dataset", "isic2019"), "synthetic_isic2019")):
        _, args = _args(*options)
        resolved = reproduce.job_from_args(args).train.resolve(gpu_visible=False)
        assert resolved.dataset == label and resolved.data_dir is None
        assert f"-{label}-mobilenetv2-64" in runs.run_name(resolved)
        assert "--dataset" not in reproduce.command_line(args)  # not a choice without data


def test_published_protocol_manifest_augments_then_leaks(synthetic_ham, tmp_path, monkeypatch):
    """--protocol paper: every class folder augmented with the published copies per image, then
    the counter split, so lesions and augmented copies of training images reach the test split
    (the audit's implementation, utils.studies.paper_protocol)."""
    from utils import paths

    monkeypatch.setattr(paths, "processed_dir", lambda: tmp_path / "processed")
    config = replace(reproduce.SYNTHETIC_DEFAULT, data_dir=str(synthetic_ham), subset=40,
                     image_size=32).resolve(gpu_visible=False)
    manifest = reproduce.published_protocol_manifest(config)
    augmented = manifest["augmented"].fillna(False).astype(bool)
    assert augmented.any() and set(manifest["split"]) == {"train", "val", "test"}
    assert augmented[manifest["split"] == "test"].any()  # augmented copies in the test split
    per_split = manifest.groupby("lesion_id")["split"].nunique()
    assert (per_split > 1).any()  # one lesion on both sides: the leak the audit measures
    copies = manifest[augmented].groupby("source_image_id").size()
    sources = manifest[augmented].drop_duplicates("source_image_id").set_index(
        "source_image_id")["label"]
    assert not (manifest.loc[augmented, "label"] == "nv").any()  # nv was not augmented
    published = sources.map(PUBLISHED_COPIES["ham10000"])  # copies written per source image
    assert (copies <= published[copies.index]).all()  # name collisions only ever remove copies
    assert copies.sum() > 0.8 * published.sum()
    assert all(p.startswith(str(tmp_path / "processed" / "published"))
               for p in manifest.loc[augmented, "path"])


def test_every_reproduce_command_in_the_readme_parses():
    """The README's recipes (published models at their sizes) are valid commands."""
    import re
    import shlex

    from utils import paths

    readme = (paths.repo_root() / "README.md").read_text(encoding="utf-8")
    commands = re.findall(r"^(?:\S*/)?python -m utils reproduce(.*?)(?:\s+#.*)?$", readme, re.M)
    assert commands, "README.md shows no `python -m utils reproduce` command"
    for options in commands:
        _, args = _args(*shlex.split(options.replace("\\", "")))
        reproduce.job_from_args(args)


def test_a_job_whose_recipe_predicts_with_tta_must_evaluate_tta():
    job = reproduce.job_config(budget_name="cpu-30min")
    assert job.train.predict_tta and job.tta
    with pytest.raises(ValueError, match="predict_tta"):
        replace(job, tta=False)
    assert not replace(job, train=replace(job.train, predict_tta=False), tta=False).tta

"""The leakage audit: a clean test held out first, the published protocol leaking lesions and
augmented copies into its own test split, the paired statistics, and the command end to end."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from utils.data import readers, splits
from utils.scoring.predictions import predictions_frame
from utils.studies import audit, audit_stats, paper_protocol
from utils.studies.metadata_leak import metadata_leak

SMALL_COPIES = "akiec=2,bcc=2,bkl=2,df=3,mel=2,nv=0,vasc=3"


def test_cap_per_class_keeps_whole_lesions_and_respects_the_cap(synthetic_ham):
    table = readers.read_ham10000(synthetic_ham)
    capped = audit.cap_per_class(table, cap=20, seed=0)
    assert capped.groupby("label").size().max() <= 20
    assert set(capped["label"]) == set(table["label"])
    kept = table[table["lesion_id"].isin(set(capped["lesion_id"]))]
    assert len(kept) == len(capped)  # no lesion was cut in two


def test_clean_test_is_held_out_and_only_the_published_protocol_leaks(synthetic_ham, tmp_path):
    config = audit.AuditConfig(data_dir=str(synthetic_ham), dataset="ham10000",
                               cap_per_class=30, copies=SMALL_COPIES)
    table = audit.load_table(config)
    manifests = audit.build_manifests(table, config, tmp_path)
    clean_lesions = set(manifests["clean"]["lesion_id"])
    for protocol in paper_protocol.PROTOCOLS:
        assert not clean_lesions & set(manifests[protocol]["lesion_id"])  # never seen
    assert set(manifests["clean"]["label"]) == set(table["label"])  # class-stratified
    published, lesion = (paper_protocol.leakage(manifests[p]) for p in ("published", "lesion"))
    assert published["test_augmented_share"] > 0.4
    assert published["test_origin_in_train_share"] > 0.4
    assert lesion["test_augmented_share"] == lesion["test_origin_in_train_share"] == 0
    assert lesion["test_lesion_in_train_share"] == 0
    pub = manifests["published"]
    for label, folder in pub.groupby("label", sort=False):  # the counter over folder order
        ordered = folder.sort_values("folder_position")
        assert ordered["split"].tolist() == splits.paper_counter(len(folder)), label
    train = manifests["lesion"][manifests["lesion"]["split"] == "train"]
    assert train.groupby("label").size().nunique() == 1  # ours: balanced training split only
    assert not manifests["lesion"].loc[manifests["lesion"]["split"] != "train",
                                       "augmented"].any()


def _frame(y: np.ndarray, correct: np.ndarray, lesions: np.ndarray) -> pd.DataFrame:
    probs = np.full((len(y), 7), 0.01)
    predicted = np.where(correct, y, (y + 1) % 7)
    probs[np.arange(len(y)), predicted] = 0.94
    rows = pd.DataFrame({"image_id": [f"i{k}" for k in range(len(y))], "lesion_id": lesions,
                         "label": np.array(["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"])[y],
                         "label_index": y, "split": "test"})
    return predictions_frame(rows, probs, ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"])


def test_paired_inflation_has_known_answers():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 210)
    lesions = np.array([f"L{k // 3}" for k in range(210)])
    runs = {}
    for seed in (0, 1, 2):
        runs[(seed, "published")] = {"own_test": _frame(y, np.ones(210, bool), lesions),
                                     "clean_test": _frame(y, rng.random(210) < 0.5, lesions)}
        same = rng.random(210) < 0.5  # no leak: own and clean tests score alike
        runs[(seed, "lesion")] = {"own_test": _frame(y, same, lesions),
                                  "clean_test": _frame(y, same, lesions)}
    summary = audit_stats.paired_summary(runs, [0, 1, 2], paper_protocol.PROTOCOLS, n_boot=300)
    own = summary["mean"]["published"]["own_test"]["accuracy"]
    assert own["value"] == own["ci_low"] == own["ci_high"] == 1.0
    inflation = summary["inflation"]["published"]["accuracy"]
    assert 0.4 < inflation["value"] < 0.6 and inflation["ci_low"] > 0.3
    assert inflation["ci_low"] < inflation["value"] < inflation["ci_high"]
    ours = summary["inflation"]["lesion"]["accuracy"]
    assert ours["value"] == 0 and ours["ci_low"] < 0 < ours["ci_high"]
    difference = summary["clean_difference"]["accuracy"]
    assert difference["ci_low"] < 0 < difference["ci_high"]


def test_metadata_alone_is_scored_against_chance(synthetic_ham):
    manifest = splits.lesion_split(readers.read_ham10000(synthetic_ham), seed=0)
    informative = manifest.assign(dx_type=manifest["label"].map(lambda c: f"type-{c}"))
    assert metadata_leak(informative, n_boot=50)["balanced_accuracy"]["value"] == 1.0
    noise = manifest.assign(dx_type=np.random.default_rng(0).choice(["a", "b"], len(manifest)))
    result = metadata_leak(noise, n_boot=50)
    assert result["balanced_accuracy"]["value"] < 0.4 and result["chance"] == pytest.approx(1 / 7)
    assert metadata_leak(manifest.drop(columns="dx_type", errors="ignore")) is None


def test_help_documents_every_option_with_its_default(capsys):
    from utils import cli

    with pytest.raises(SystemExit):
        cli.main(["audit", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in ("--clean-test-fraction", "--copies", "--collisions", "--sweep", "--seeds",
                 "--data-seed", "--balance-target"):
        assert name in text
    assert "(default: 0.15)" in text and "(default: 32x2,64x8)" in text


@pytest.mark.real_data
def test_isic2019_subset_builds_both_protocols(isic2019_real, tmp_path):
    config = audit.AuditConfig(data_dir=str(isic2019_real), dataset="isic2019", cap_per_class=8)
    table = audit.load_table(config)
    manifests = audit.build_manifests(table, config, tmp_path)
    assert set(manifests["published"]["label"]) == set(table["label"]) and len(
        table["label"].unique()) == 8
    copies = Counter(manifests["published"].loc[manifests["published"]["augmented"], "label"])
    assert copies["NV"] == 0 and copies["DF"] > copies["MEL"]  # the published ISIC copies
    assert paper_protocol.leakage(manifests["lesion"])["test_lesion_in_train_share"] == 0


@pytest.mark.slow
def test_audit_command_end_to_end_and_resumes(synthetic_ham, tmp_path):
    from utils import cli, fileio

    out = tmp_path / "report" / "leakage_audit.md"
    before = fileio.tree_digest(synthetic_ham)
    argv = ["audit", "--data-dir", str(synthetic_ham), "--dataset", "ham10000",
            "--cap-per-class", "15", "--copies", SMALL_COPIES, "--image-size", "32",
            "--epochs", "1", "--sweep", "", "--seeds", "0,1", "--n-boot", "50",
            "--run-eagerly", "--work-dir", str(tmp_path / "work"), "--out", str(out)]
    assert cli.main(argv) == 0
    assert fileio.tree_digest(synthetic_ham) == before  # the data folder is only read
    summary = json.loads(out.with_suffix(".json").read_text())
    (main,) = summary["budgets"]
    for protocol in paper_protocol.PROTOCOLS:
        assert sorted(main["results"][protocol]) == ["0", "1"]
        for result in main["results"][protocol].values():
            for test in ("own_test", "clean_test"):
                for rate in ("accuracy", "balanced_accuracy"):
                    stats = result[test][rate]
                    assert stats["ci_low"] <= stats["value"] <= stats["ci_high"]
        assert main["paired"]["inflation"][protocol]["accuracy"]["ci_low"] is not None
    assert (out.parent / "leakage_audit_sweep.png").stat().st_size > 10_000
    text = out.read_text()
    assert "## Result" in text and "## Budget sweep" in text and "Near-duplicate" in text
    histories = sorted((tmp_path / "work" / "runs").glob("*/history.csv"))
    assert len(histories) == 4
    stamps = [p.stat().st_mtime for p in histories]
    argv[argv.index("--seeds") + 1] = "1"  # a smaller report from the same work folder
    readme = tmp_path / "README.md"
    readme.write_text("# R\n<!-- audit:start -->\nold\n<!-- audit:end -->\nrest\n")
    assert cli.main([*argv, "--readme", str(readme), "--note", "machine shared"]) == 0  # resumes
    assert "finished models); machine shared." in out.read_text()
    text = readme.read_text()
    assert "At the main budget" in text and "old" not in text and text.endswith("rest\n")
    assert "](report/leakage_audit_sweep.png)" in text
    assert [p.stat().st_mtime for p in histories] == stamps
    assert json.loads(out.with_suffix(".json").read_text())["budgets"][0]["seeds"] == [1]


def test_budgets_main_first_then_the_sweep_without_repeats():
    config = audit.AuditConfig(image_size=64, epochs=4, sweep="32x2, 64x4,64x8")
    assert config.budgets() == [(64, 4), (32, 2), (64, 8)]
    with pytest.raises(ValueError, match="SIZExEPOCHS"):
        audit.AuditConfig(sweep="64-8")

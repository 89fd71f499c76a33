"""The leakage audit: the published protocol leaks lesions and augmented copies into its test
split, the lesion-grouped protocol does not; both train and report from one command."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from utils.data import readers
from utils.studies import audit


def test_cap_per_class_keeps_whole_lesions_and_respects_the_cap(synthetic_ham):
    table = readers.read_ham10000(synthetic_ham)
    capped = audit.cap_per_class(table, cap=20, seed=0)
    assert capped.groupby("label").size().max() <= 20
    assert set(capped["label"]) == set(table["label"])
    kept = table[table["lesion_id"].isin(set(capped["lesion_id"]))]
    assert len(kept) == len(capped)  # no lesion was cut in two
    assert audit.cap_per_class(table, cap=None, seed=0) is table


def test_paper_protocol_leaks_and_lesion_protocol_does_not(synthetic_ham, tmp_path):
    table = audit.cap_per_class(readers.read_ham10000(synthetic_ham), cap=40, seed=0)
    config = audit.AuditConfig(data_dir=str(synthetic_ham), target_per_class=None)
    paper = audit.paper_manifest(table, config, tmp_path / "paper")
    lesion = audit.lesion_manifest(table, config, tmp_path / "lesion")
    paper_leak, lesion_leak = audit.leakage(paper), audit.leakage(lesion)
    assert paper_leak["test_augmented_share"] > 0  # augmented copies sit in the test split
    assert paper_leak["test_origin_in_train_share"] > 0.3
    assert paper_leak["test_lesion_in_train_share"] > 0.3
    assert lesion_leak["test_augmented_share"] == 0
    assert lesion_leak["test_origin_in_train_share"] == 0
    assert lesion_leak["test_lesion_in_train_share"] == 0
    # both protocols balance the same images to the same per-class target
    assert paper.groupby("label").size().nunique() == 1
    train = lesion[lesion["split"] == "train"]
    assert train.groupby("label").size().nunique() == 1


@pytest.mark.slow
def test_audit_command_trains_both_protocols_and_writes_the_report(synthetic_ham, tmp_path):
    from utils import cli, fileio

    out = tmp_path / "leakage_audit.md"
    before = fileio.tree_digest(synthetic_ham)
    code = cli.main(["audit", "--data-dir", str(synthetic_ham), "--dataset", "synthetic",
                     "--cap-per-class", "30", "--image-size", "32", "--epochs", "1",
                     "--n-boot", "50", "--work-dir", str(tmp_path / "work"), "--out", str(out)])
    assert code == 0
    assert fileio.tree_digest(synthetic_ham) == before  # the data folder is only read
    text = out.read_text()
    assert "published: augment class folders, then counter split" in text
    assert "ours: lesion-grouped split, then balance train only" in text
    summary = json.loads(out.with_suffix(".json").read_text())
    for protocol in audit.PROTOCOLS:
        value = summary["results"][protocol]["metrics"]["balanced_accuracy"]["value"]
        assert 0.0 <= value <= 1.0
    assert summary["balanced_accuracy_gap"] == pytest.approx(
        summary["results"]["paper"]["metrics"]["balanced_accuracy"]["value"]
        - summary["results"]["lesion"]["metrics"]["balanced_accuracy"]["value"])
    assert summary["results"]["lesion"]["test_lesion_in_train_share"] == 0
    # a second call reuses the finished runs (resumable) and refuses other settings
    manifest = pd.read_csv(tmp_path / "work" / "paper-manifest.csv")
    assert set(manifest["split"]) == {"train", "val", "test"}
    with pytest.raises(ValueError, match="other settings"):
        audit.audit(audit.AuditConfig(data_dir=str(synthetic_ham), epochs=2), tmp_path / "work")

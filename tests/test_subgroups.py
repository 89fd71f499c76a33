"""Subgroups: age bands, the minimum group size, per-group metrics equal to the whole-split
metrics of the group's rows, the source attribute of ISIC 2019 images, the table and plot."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from utils.data import datasets
from utils.evaluation import subgroups
from utils.scoring import metrics

HAM = datasets.HAM10000.classes


def test_age_bands():
    ages = pd.Series([0, 29, 30, 44.9, 45, 59, 60, 74, 75, 85, np.nan])
    assert subgroups.age_band(ages).tolist() == [
        "<30", "<30", "30-44", "30-44", "45-59", "45-59", "60-74", "60-74", "75+", "75+",
        "unknown"]


def _frame_and_manifest(n: int = 240, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(HAM), n)
    logits = rng.normal(size=(n, len(HAM)))
    logits[np.arange(n), y] += 2.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    ids = [f"ISIC_{i:07d}" for i in range(n)]  # outside HAM10000's id range
    lesions = [f"L{i // 2}" for i in range(n)]
    frame = pd.DataFrame({"image_id": ids, "lesion_id": lesions, "label": [HAM[k] for k in y],
                          "label_index": y, "split": "test"})
    frame = pd.concat([frame, pd.DataFrame(probs, columns=list(HAM))], axis=1)
    manifest = frame[["image_id", "lesion_id", "label", "split"]].copy()
    manifest["age"] = np.where(np.arange(n) % 2, 35.0, 65.0)
    manifest.loc[:4, "age"] = 82.0  # a 5-image group: too small
    manifest["sex"] = np.where(np.arange(n) % 3 == 0, "female", "male")
    manifest["site"] = np.nan  # no site known: the attribute is left out
    manifest["dx_type"] = "histo"
    return frame, manifest


def test_groups_have_sizes_and_metrics_of_their_own_rows(tmp_path):
    frame, manifest = _frame_and_manifest()
    section = subgroups.subgroup_section(frame, manifest, n_boot=100, seed=0)
    names = [a["attribute"] for a in section["attributes"]]
    assert names == ["age band", "sex", "diagnosis confirmation (dx_type)"]
    age = section["attributes"][0]["groups"]
    assert [g["group"] for g in age] == ["30-44", "60-74", "75+"]
    assert sum(g["n_images"] for g in age) == len(frame)
    small = age[2]
    assert small["n_images"] == 5 and small["status"] == subgroups.TOO_SMALL
    assert "metrics" not in small  # too small: sizes only, no numbers
    group = age[0]
    rows = frame[manifest["age"].to_numpy() == 35.0]
    expected = metrics.evaluate_predictions(rows, n_boot=100, seed=0)["metrics"]
    assert group["status"] == "ok" and group["n_images"] == len(rows)
    assert group["n_lesions"] == rows["lesion_id"].nunique()
    for name in ("balanced_accuracy", "macro_auc"):
        assert group["metrics"][name] == expected[name]
    for code, count in group["class_counts"].items():
        assert group["metrics"][f"recall/{code}"] == expected[f"sensitivity/{code}"]
        assert count == (rows["label"] == code).sum()
    table = subgroups.table(section)
    assert set(table.loc[table["status"] == "too small", "group"]) == {"75+"}
    assert table.loc[table["status"] == "too small", "value"].isna().all()
    subgroups.plot(section, {"value": 0.5}, tmp_path / "sub.png")
    assert (tmp_path / "sub.png").stat().st_size > 5_000


def test_minimum_size_is_a_parameter_and_the_source_shows_for_isic2019_mixes():
    frame, manifest = _frame_and_manifest(n=60)
    frame.loc[:29, "lesion_id"] = [f"HAM_{i:07d}" for i in range(30)]
    manifest["lesion_id"] = frame["lesion_id"]
    section = subgroups.subgroup_section(frame, manifest, n_boot=20, min_images=100)
    assert all(g["status"] == subgroups.TOO_SMALL for a in section["attributes"]
               for g in a["groups"])
    source = [a for a in section["attributes"] if a["attribute"] == subgroups.SOURCE][0]
    assert {g["group"]: g["n_images"] for g in source["groups"]} == {
        "HAM10000": 30, datasets.OTHER_SOURCE: 30}


def test_without_a_manifest_the_section_says_so():
    frame, _ = _frame_and_manifest(n=40)
    section = subgroups.subgroup_section(frame, None, n_boot=10)
    assert section["attributes"] == [] and "manifest" in section["note"]


def test_image_source_rules():
    assert datasets.image_source("ISIC_0024306") == "HAM10000"  # first HAM10000 image
    assert datasets.image_source("ISIC_0034320", None) == "HAM10000"
    assert datasets.image_source("ISIC_0034321", "") == datasets.OTHER_SOURCE
    assert datasets.image_source("ISIC_0060000", "HAM_0001234") == "HAM10000"
    assert datasets.image_source("ISIC_0060000", "BCN_0001234") == "BCN20000"
    assert datasets.image_source("ISIC_0000001_downsampled") == datasets.OTHER_SOURCE
    assert not datasets.is_ham10000_image("SYN_0000001", "SYNL_1")


@pytest.mark.real_data
def test_real_ham10000_metadata_gives_every_attribute(ham_real):
    from utils.data import readers

    table = readers.read_ham10000(ham_real)
    found = subgroups.attributes(table)
    assert set(found) == {"age band", "sex", "anatomical site",
                          "diagnosis confirmation (dx_type)"}
    assert found["diagnosis confirmation (dx_type)"].value_counts().to_dict() == {
        "histo": 5340, "follow_up": 3704, "consensus": 902, "confocal": 69}

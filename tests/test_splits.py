"""utils.data.splits: lesion-grouped stratified splits, k-fold, manifests, the paper's counter
split."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from utils import cli
from utils.data import readers, splits
from utils.data.datasets import HAM10000
from utils.data.manifest import SPLITS, load_manifest, save_manifest
from utils.errors import DataError


def assert_grouped_and_stratified(manifest: pd.DataFrame, sets=SPLITS) -> None:
    assert manifest.groupby("lesion_id")["split"].nunique().max() == 1  # no lesion in two sets
    for name in sets:
        assert set(manifest.loc[manifest["split"] == name, "label"]) == set(manifest["label"])


def toy_table(sizes_per_class: dict[str, list[int]]) -> pd.DataFrame:
    """A TABLE-like frame: one lesion per entry of sizes, that many images."""
    rows = []
    for label, sizes in sizes_per_class.items():
        for lesion, size in enumerate(sizes):
            for image in range(size):
                rows.append((f"{label}_{lesion}_{image}", f"/x/{label}_{lesion}_{image}.jpg",
                             label, HAM10000.index_of(label), f"L_{label}_{lesion}"))
    return pd.DataFrame(rows, columns=["image_id", "path", "label", "label_index", "lesion_id"])


@pytest.mark.real_data
def test_default_split_on_real_ham10000(ham_real):
    table = readers.read_ham10000(ham_real)
    manifest = splits.lesion_split(table)
    assert_grouped_and_stratified(manifest)
    shares = manifest["split"].value_counts(normalize=True)
    assert shares.to_dict() == pytest.approx({"train": 0.70, "val": 0.15, "test": 0.15}, abs=0.01)
    per_class = manifest.groupby("label")["split"].value_counts(normalize=True).unstack()
    assert (per_class["train"] - 0.70).abs().max() < 0.03  # stratified within each class
    assert manifest["image_id"].tolist() == table["image_id"].tolist()  # rows kept in order


def test_split_synthetic_deterministic_and_order_independent(synthetic_ham):
    table = readers.read_table(synthetic_ham)
    first = splits.lesion_split(table, seed=0)
    assert_grouped_and_stratified(first)
    assert first["split"].tolist() == splits.lesion_split(table, seed=0)["split"].tolist()
    shuffled = table.sample(frac=1.0, random_state=3)
    again = splits.lesion_split(shuffled, seed=0).set_index("image_id")["split"]
    assert again.reindex(first["image_id"]).tolist() == first["split"].tolist()
    assert splits.lesion_split(table, seed=1)["split"].tolist() != first["split"].tolist()
    # one random stream per class: dropping a class leaves the others' assignment unchanged
    without_df = splits.lesion_split(table[table["label"] != "df"], seed=0)
    assert without_df["split"].tolist() == first.loc[first["label"] != "df", "split"].tolist()
    assert first.attrs["dataset"] == "ham10000"


def test_fractions_approximately_respected():
    table = toy_table({"nv": [1, 2, 3] * 40, "mel": [1, 2] * 30, "df": [1] * 10})
    manifest = splits.lesion_split(table, fractions=(0.6, 0.2, 0.2), seed=4)
    assert_grouped_and_stratified(manifest)
    shares = manifest.groupby("label")["split"].value_counts(normalize=True).unstack()
    assert np.allclose(shares[["train", "val", "test"]].to_numpy(), [0.6, 0.2, 0.2], atol=0.05)
    two_sets = splits.lesion_split(table, fractions=(0.8, 0.2, 0.0))
    assert set(two_sets["split"]) == {"train", "val"}
    with pytest.raises(ValueError, match="summing to 1"):
        splits.lesion_split(table, fractions=(0.7, 0.2, 0.2))


def test_too_few_lesions_names_the_class():
    table = toy_table({"nv": [1] * 10, "df": [3, 2]})  # df: 5 images but only 2 lesions
    with pytest.raises(DataError, match=r"class 'df' has 2 lesion\(s\) \(5 image\(s\)\).*at "
                                        r"least 3"):
        splits.lesion_split(table)


def test_mixed_lesion_takes_majority_and_warns():
    table = toy_table({"nv": [1] * 6, "mel": [1] * 6})
    table.loc[len(table)] = ["extra", "/x/extra.jpg", "nv", 5, "L_mel_0"]  # mel lesion, 1 nv image
    table.loc[len(table)] = ["extra2", "/x/extra2.jpg", "mel", 4, "L_mel_0"]
    with pytest.warns(UserWarning, match="1 lesion"):
        lesions = splits.lesion_labels(table).set_index("lesion_id")
    assert lesions.loc["L_mel_0", "label"] == "mel" and lesions.loc["L_mel_0", "n_images"] == 3
    with pytest.warns(UserWarning):
        manifest = splits.lesion_split(table)
    assert manifest.groupby("lesion_id")["split"].nunique().max() == 1


def test_kfold_disjoint_covering_stratified(synthetic_ham):
    table = readers.read_table(synthetic_ham)
    manifest = splits.lesion_kfold(table, k=3, seed=0)
    assert sorted(manifest["fold"].unique()) == [0, 1, 2]
    assert manifest.groupby("lesion_id")["fold"].nunique().max() == 1  # lesions never straddle
    assert len(manifest) == len(table)  # every row in exactly one fold
    for fold in range(3):
        assert set(manifest.loc[manifest["fold"] == fold, "label"]) == set(table["label"])
        view = splits.fold_view(manifest, fold)
        assert set(view["split"]) == {"train", "val"}
        assert (view["split"] == "val").sum() == (manifest["fold"] == fold).sum()
    held = splits.lesion_kfold(table, k=3, seed=0, test_fraction=0.15)
    assert set(held.loc[held["split"] == "test", "fold"]) == {-1}
    assert set(held.loc[held["split"] == "train", "fold"]) == {0, 1, 2}
    with pytest.raises(DataError, match="class .df. has 2 lesion.*3 folds need"):
        splits.lesion_kfold(toy_table({"nv": [1] * 9, "df": [1, 1]}), k=3)


def test_manifest_round_trip_keeps_dtypes(tmp_path):
    table = toy_table({"nv": [1] * 6, "mel": [2] * 3, "bcc": [1] * 3})
    table.loc[0, ["image_id", "lesion_id"]] = ["NA", "0001"]  # ids that pandas would mangle
    table["age"], table["sex"], table["site"] = 40.0, "female", "back"
    table.loc[1, ["age", "sex", "site"]] = [np.nan, np.nan, np.nan]
    table["augmented"] = False
    table.attrs["dataset"] = "ham10000"
    manifest = splits.lesion_split(table)
    path = save_manifest(manifest, tmp_path / "runs" / "manifest.csv")
    loaded = load_manifest(path)
    pd.testing.assert_frame_equal(loaded, manifest, check_dtype=True)
    assert loaded.attrs["dataset"] == "ham10000"
    assert loaded["image_id"][0] == "NA" and loaded["lesion_id"][0] == "0001"
    assert [p.name for p in path.parent.iterdir()] == ["manifest.csv"]  # no temp file left
    with pytest.raises(DataError, match="not a split manifest"):
        table.to_csv(tmp_path / "plain.csv", index=False)
        load_manifest(tmp_path / "plain.csv")


# The published notebooks' printed counts: class folder size -> (train, val, test).
PUBLISHED_COUNTS = {6705: (5030, 1117, 558), 1113: (836, 185, 92), 1099: (825, 183, 91),
                    514: (387, 85, 42), 327: (246, 54, 27), 115: (87, 19, 9), 142: (108, 23, 11),
                    6011: (4510, 1001, 500)}


@pytest.mark.parametrize("n_files", sorted(PUBLISHED_COUNTS))
def test_paper_counter_reproduces_every_printed_count(n_files):
    sets = splits.paper_counter(n_files)
    counts = tuple(sets.count(name) for name in ("train", "val", "test"))
    assert counts == PUBLISHED_COUNTS[n_files] and len(sets) == n_files


def test_paper_counter_positions_follow_the_b_c_loop():
    sets = splits.paper_counter(26)
    # every 6th file to validation, the 12th to test and the 13th (b still 6) to validation
    assert [i + 1 for i, s in enumerate(sets) if s == "val"] == [6, 13, 19, 25]
    assert [i + 1 for i, s in enumerate(sets) if s == "test"] == [12, 24]


def test_paper_counter_split_keeps_folder_order_and_restarts_per_class():
    files = [f"/aug/mel/img{i}.png" for i in range(1, 14)] + [f"/aug/nv/img{i}.jpg"
                                                             for i in range(1, 8)]
    frame = splits.paper_counter_split(files)
    assert frame["path"].tolist() == files  # input (folder listing) order kept
    mel, nv = frame[frame["label"] == "mel"], frame[frame["label"] == "nv"]
    assert mel["split"].tolist() == splits.paper_counter(13)
    assert nv["paper_counter"].tolist() == list(range(1, 8))  # restarts for every class folder
    assert nv["split"].tolist() == splits.paper_counter(7)


def test_paper_counter_split_leaks_lesions(synthetic_ham):
    manifest = splits.paper_counter_split(readers.read_table(synthetic_ham))
    assert manifest.groupby("lesion_id")["split"].nunique().max() > 1  # why it is audit-only


def test_split_command(synthetic_ham, tmp_path, capsys):
    out = tmp_path / "manifest.csv"
    assert cli.main(["split", str(synthetic_ham), str(out), "--seed", "2",
                     "--fractions", "0.6", "0.2", "0.2"]) == 0
    manifest = load_manifest(out)
    expected = splits.lesion_split(readers.read_table(synthetic_ham), (0.6, 0.2, 0.2), seed=2)
    assert manifest["split"].tolist() == expected["split"].tolist()
    assert "300 images" in capsys.readouterr().out
    assert cli.main(["split", str(synthetic_ham), str(out), "--kfold", "3"]) == 0
    assert set(load_manifest(out)["fold"]) == {-1, 0, 1, 2}
    with pytest.warns(UserWarning, match="leaks"):
        assert cli.main(["split", str(synthetic_ham), str(out), "--protocol", "paper"]) == 0
    assert "paper_counter" in load_manifest(out)
    capsys.readouterr()
    assert cli.main(["split", str(synthetic_ham), str(synthetic_ham / "manifest.csv")]) == 1
    assert "refusing to write inside the raw data folder" in capsys.readouterr().err
    assert not (synthetic_ham / "manifest.csv").exists()
    assert cli.main(["split", str(synthetic_ham.parent), str(out)]) == 1
    assert "no known dataset layout" in capsys.readouterr().err

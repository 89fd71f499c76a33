"""utils.data.readers: every layout -> the TABLE contract (real data where present, tiny
folders)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from utils import paths
from utils.data import datasets, dermamnist, readers
from utils.data.datasets import HAM10000, ISIC2019, TABLE_COLUMNS
from utils.errors import DataError

HAM_ROWS = [  # lesion_id, image_id, dx
    ("HAM_1", "ISIC_1000001", "mel"), ("HAM_1", "ISIC_1000002", "mel"),
    ("HAM_2", "ISIC_1000003", "nv"), ("HAM_3", "ISIC_1000004", "bkl"),
    ("HAM_4", "ISIC_1000005", "akiec"), ("HAM_5", "ISIC_1000006", "df"),
]


def write_jpeg(path: Path, value: int = 120, size: tuple[int, int] = (20, 15)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, 60, 30)).save(path, format="JPEG")


def make_ham(root: Path, rows=HAM_ROWS, folders=("HAM10000_images_part_1",
                                                 "HAM10000_images_part_2")) -> Path:
    """A tiny HAM10000 layout: metadata CSV + images spread over `folders`."""
    frame = pd.DataFrame(rows, columns=["lesion_id", "image_id", "dx"])
    frame["dx_type"], frame["age"], frame["sex"], frame["localization"] = (
        "histo", 45.0, "male", "back")
    frame.loc[0, "age"], frame.loc[1, "sex"], frame.loc[2, "localization"] = (
        np.nan, "unknown", "unknown")
    root.mkdir(parents=True, exist_ok=True)
    frame.to_csv(root / "HAM10000_metadata.csv", index=False)
    for i, image_id in enumerate(frame["image_id"]):
        write_jpeg(root / folders[i % len(folders)] / f"{image_id}.jpg", value=10 * i)
    return root


def check_contract(table: pd.DataFrame, info: datasets.DatasetInfo) -> None:
    assert tuple(table.columns[: len(TABLE_COLUMNS)]) == TABLE_COLUMNS
    assert table.attrs["dataset"] == info.name
    assert table["label_index"].dtype == np.int64
    assert table["age"].dtype == float
    assert all(isinstance(v, str) for v in table["image_id"]) and all(
        isinstance(v, str) for v in table["lesion_id"])
    assert [info.classes[i] for i in table["label_index"]] == table["label"].tolist()
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in table["path"])
    assert table["image_id"].is_unique


@pytest.mark.real_data
def test_ham10000_real_matches_official_counts(ham_real):
    table = readers.read_ham10000(ham_real)
    check_contract(table, HAM10000)
    assert len(table) == HAM10000.n_images == 10015
    assert table["lesion_id"].nunique() == HAM10000.n_lesions == 7470
    assert table["label"].value_counts().to_dict() == dict(HAM10000.counts)
    # NaN where unknown: 57 rows have no age and 57 have sex "unknown" in the official metadata
    assert table["age"].isna().sum() == 57 and table["sex"].isna().sum() == 57
    assert readers.detect_layout(ham_real) == "ham10000"


@pytest.mark.real_data
def test_ham10000_originals_sample_and_isic2019_real(shared_data, isic2019_real):
    sample = readers.read_table(shared_data / "HAM10000_originals_sample")
    check_contract(sample, HAM10000)
    assert len(sample) == 134 and set(sample["label"]) == set(HAM10000.classes)
    table = readers.read_table(isic2019_real)
    check_contract(table, ISIC2019)
    assert len(table) == 409 and table["label"].nunique() == 8
    meta = pd.read_csv(isic2019_real / readers.ISIC2019_METADATA, dtype=str).set_index("image")
    no_lesion = meta.index[meta["lesion_id"].isna()]
    rows = table.set_index("image_id")
    assert len(no_lesion) > 0
    assert (rows.loc[no_lesion, "lesion_id"] == no_lesion).all()  # singleton groups


def test_ham_csv_layout_and_unknown_values(tmp_path):
    table = readers.read_table(make_ham(tmp_path / "ham"))
    check_contract(table, HAM10000)
    assert table["image_id"].tolist() == [r[1] for r in HAM_ROWS]
    assert table["lesion_id"].nunique() == 5
    assert np.isnan(table["age"][0]) and pd.isna(table["sex"][1]) and pd.isna(table["site"][2])
    assert table["sex"][0] == "male" and table["site"][0] == "back"


@pytest.mark.parametrize("name", ["HAM10000_metadata", "HAM10000_metadata.tab"])
def test_ham_dataverse_tab_file(tmp_path, name):
    root = make_ham(tmp_path / "ham")
    reference = readers.read_ham10000(root)
    csv = pd.read_csv(root / "HAM10000_metadata.csv", dtype=str, keep_default_na=False)
    (root / "HAM10000_metadata.csv").unlink()
    # Dataverse's tabular export: tab-separated, strings quoted, no extension
    csv.to_csv(root / name, sep="\t", index=False, quoting=2)
    table = readers.read_table(root)
    pd.testing.assert_frame_equal(table.drop(columns="dx_type"),
                                  reference.drop(columns="dx_type"))


def test_ham_single_image_folder(tmp_path):
    root = make_ham(tmp_path / "ham", folders=("images",))
    table = readers.read_ham10000(root)
    assert len(table) == len(HAM_ROWS)
    assert {Path(p).parent.name for p in table["path"]} == {"images"}


def test_ham_kaggle_duplicated_lowercase_folders(tmp_path):
    root = make_ham(tmp_path / "ham")
    for part in ("HAM10000_images_part_1", "HAM10000_images_part_2"):
        shutil.copytree(root / part, root / part.lower())
    table = readers.read_ham10000(root)
    assert len(table) == len(HAM_ROWS) and table["image_id"].is_unique
    assert all("/HAM10000_images_part_" in p for p in table["path"])  # upper-case copy wins
    assert readers.read_ham10000(root)["path"].tolist() == table["path"].tolist()


def make_isic2019(root: Path, rows, metadata=True) -> Path:
    """rows: (image_id, label, lesion_id or '') -> ISIC 2019 training layout with float one-hot."""
    columns = ISIC2019.classes + datasets.ISIC2019_EXTRA_CLASSES
    truth = pd.DataFrame([[image] + [1.0 if c == label else 0.0 for c in columns]
                          for image, label, _ in rows], columns=["image", *columns])
    root.mkdir(parents=True, exist_ok=True)
    truth.to_csv(root / readers.ISIC2019_GROUND_TRUTH, index=False)
    if metadata:
        pd.DataFrame([(image, 50, "anterior torso", lesion, "female") for image, _, lesion in rows],
                     columns=["image", "age_approx", "anatom_site_general", "lesion_id", "sex"]
                     ).to_csv(root / readers.ISIC2019_METADATA, index=False)
    folder = root / readers.ISIC2019_INPUT
    for image, _, _ in rows:
        write_jpeg(folder / f"{image}.jpg")
    (folder / "ATTRIBUTION.txt").write_text("credits\n")
    (folder / "LICENSE.txt").write_text("CC BY-NC\n")
    return root


ISIC_ROWS = [("ISIC_0000001", "MEL", "IL_1"), ("ISIC_0000002", "MEL", "IL_1"),
             ("ISIC_0000003_downsampled", "NV", ""), ("ISIC_0000004", "SCC", "")]


def test_isic2019_layout(tmp_path):
    table = readers.read_table(make_isic2019(tmp_path / "isic", ISIC_ROWS))
    check_contract(table, ISIC2019)
    assert table["label"].tolist() == ["MEL", "MEL", "NV", "SCC"]
    assert table["lesion_id"].tolist() == ["IL_1", "IL_1", "ISIC_0000003_downsampled",
                                           "ISIC_0000004"]
    assert table["site"][0] == "anterior torso" and table["age"][0] == 50.0


def test_isic2019_without_metadata_warns_and_uses_singletons(tmp_path):
    root = make_isic2019(tmp_path / "isic", ISIC_ROWS, metadata=False)
    with pytest.warns(UserWarning, match="ISIC_2019_Training_Metadata.csv"):
        table = readers.read_isic2019(root)
    assert (table["lesion_id"] == table["image_id"]).all() and table["age"].isna().all()


def make_isic2018(root: Path, subset: str = "Test") -> Path:
    rows = [("ISIC_0034524", "NV"), ("ISIC_0035068", "BKL"), ("ISIC_0034525", "AKIEC"),
            ("ISIC_0034526", "MEL")]
    columns = datasets.ISIC2018_TASK3_COLUMNS
    truth = pd.DataFrame([[image] + [1.0 if c == label else 0.0 for c in columns]
                          for image, label in rows], columns=["image", *columns])
    root.mkdir(parents=True, exist_ok=True)
    truth.to_csv(root / f"ISIC2018_Task3_{subset}_GroundTruth.csv", index=False)
    for image, _ in rows:
        write_jpeg(root / f"ISIC2018_Task3_{subset}_Input" / f"{image}.jpg")
    return root


def test_isic2018_task3_test_maps_to_ham_codes_and_offers_exclusion(tmp_path):
    root = make_isic2018(tmp_path / "isic2018")
    table = readers.read_table(root)
    check_contract(table, datasets.ISIC2018_TASK3)
    assert table["label"].tolist() == ["nv", "bkl", "akiec", "mel"]
    assert "ISIC_0035068" in set(table["image_id"])
    excluded = readers.read_isic2018_test(root, exclude=True)
    assert set(excluded["image_id"]) == set(table["image_id"]) - set(
        datasets.ISIC2018_TASK3_EXCLUDED)
    assert readers.exclude_isic2018_scoring(table)["image_id"].tolist() == excluded[
        "image_id"].tolist()


def test_isic2018_validation_subset(tmp_path):
    root = make_isic2018(tmp_path / "isic2018v", subset="Validation")
    assert readers.detect_layout(root) == "isic2018_task3_validation"
    assert len(readers.read_isic2018_test(root, subset="validation")) == 4
    with pytest.raises(DataError, match="ISIC2018_Task3_Test_GroundTruth.csv"):
        readers.read_isic2018_test(root)


def test_isic2018_ground_truth_unzipped_into_its_own_folder(tmp_path):
    root = make_isic2018(tmp_path / "isic2018")
    nested = root / "ISIC2018_Task3_Test_GroundTruth"
    nested.mkdir()
    (root / "ISIC2018_Task3_Test_GroundTruth.csv").rename(
        nested / "ISIC2018_Task3_Test_GroundTruth.csv")
    assert readers.read_table(root)["label"].tolist() == ["nv", "bkl", "akiec", "mel"]


def make_npz(path: Path, size: int = 28, counts=(6, 3, 3), rgb: bool = True) -> dict:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in zip(("train", "val", "test"), counts):
        shape = (n, size, size, 3) if rgb else (n, size, size)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 7).reshape(-1, 1).astype(np.uint8)
    np.savez(path, **arrays)
    return arrays


def test_dermamnist_load_with_numpy_only(tmp_path):
    arrays = make_npz(tmp_path / "dermamnist.npz")
    loaded = dermamnist.load_dermamnist(tmp_path / "dermamnist.npz")
    assert list(loaded) == ["train", "val", "test"]
    images, labels = loaded["train"]
    assert images.shape == (6, 28, 28, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, arrays["train_labels"].ravel())
    assert labels.dtype == np.int64
    make_npz(tmp_path / "gray.npz", rgb=False)  # channel-less arrays get a channel axis
    assert dermamnist.load_dermamnist(tmp_path / "gray.npz")["test"][0].shape == (3, 28, 28, 1)


def test_dermamnist_export_keeps_official_split(tmp_path, monkeypatch):
    arrays = make_npz(tmp_path / "dermamnist_64.npz", size=64)
    table = dermamnist.read_dermamnist(tmp_path / "dermamnist_64.npz", tmp_path / "png",
                                    image_format="png")
    check_contract(table, datasets.DERMAMNIST)
    assert table["split"].value_counts().to_dict() == {"train": 6, "val": 3, "test": 3}
    assert (table["lesion_id"] == table["image_id"]).all()
    first_val = table[table["split"] == "val"].iloc[0]
    np.testing.assert_array_equal(np.asarray(Image.open(first_val["path"])),
                                  arrays["val_images"][0])  # PNG: lossless
    assert (tmp_path / "png" / "manifest.csv").is_file()
    monkeypatch.setattr(paths, "interim_dir", lambda: tmp_path / "interim")
    jpg = readers.read_table(tmp_path / "dermamnist_64.npz")  # default: interim/<npz stem>/
    assert len(jpg) == 12 and jpg["path"].str.endswith(".jpg").all()
    assert all(Path(p).parent.parent == tmp_path / "interim" / "dermamnist_64"
               for p in jpg["path"])
    assert Image.open(jpg["path"][0]).size == (64, 64)


def test_dermamnist_bad_files(tmp_path):
    np.savez(tmp_path / "dermamnist.npz", train_images=np.zeros((2, 28, 28, 3), np.uint8))
    with pytest.raises(DataError, match="missing array.*train_labels"):
        dermamnist.load_dermamnist(tmp_path / "dermamnist.npz")
    arrays = make_npz(tmp_path / "bad.npz")
    arrays["test_labels"][1] = 9
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=r"test_labels\[1\] = 9"):
        dermamnist.load_dermamnist(tmp_path / "bad.npz")


def test_read_table_layout_errors(tmp_path):
    with pytest.raises(DataError, match="looked for .*HAM10000_metadata.csv.*ISIC_2019_Training"):
        readers.read_table(tmp_path)
    with pytest.raises(DataError, match="data folder not found"):
        readers.read_table(tmp_path / "absent")
    with pytest.raises(ValueError, match="unknown dataset 'ham2000'"):
        readers.read_table(tmp_path, dataset="ham2000")
    make_ham(tmp_path)
    make_isic2019(tmp_path, ISIC_ROWS)
    with pytest.raises(DataError, match="several layouts.*--dataset"):
        readers.read_table(tmp_path)
    assert readers.read_table(tmp_path, dataset="isic2019").attrs["dataset"] == "isic2019"
    assert readers.read_table(tmp_path, dataset="HAM10000").attrs["dataset"] == "ham10000"


def test_synthetic_ham_reads_as_ham10000(synthetic_ham):
    table = readers.read_table(synthetic_ham)
    check_contract(table, HAM10000)
    assert len(table) == 300 and set(table["label"]) == set(HAM10000.classes)


# ---------------------------------------------------------------------------------------------
# empty and degenerate tables: one DataError naming the file and what to do (main: KeyError
# 'image_id' or "0 rows, no problems")


def _keep_header(path: Path) -> None:
    path.write_text(path.read_text().splitlines()[0] + "\n")


def _ham_tab(root: Path) -> Path:
    make_ham(root)
    csv = root / "HAM10000_metadata.csv"
    (root / "HAM10000_metadata").write_text(csv.read_text().replace(",", "\t"))
    csv.unlink()
    return root / "HAM10000_metadata"


def _degenerate(kind: str, root: Path) -> tuple[Path, str]:
    """Build one degenerate layout; returns (the file the error must name, what it must say)."""
    ham_images = ("HAM10000_images_part_1", "HAM10000_images_part_2")
    if kind == "ham header only":
        make_ham(root)
        _keep_header(root / "HAM10000_metadata.csv")
        return root / "HAM10000_metadata.csv", "has a header but no rows"
    if kind == "ham tab header only":
        path = _ham_tab(root)
        _keep_header(path)
        return path, "has a header but no rows"
    if kind == "ham 0 bytes":
        make_ham(root)
        (root / "HAM10000_metadata.csv").write_bytes(b"")
        return root / "HAM10000_metadata.csv", "empty file"
    if kind == "ham images not unzipped":
        make_ham(root)
        for folder in ham_images:
            shutil.rmtree(root / folder)
        return root / "HAM10000_metadata.csv", "the images are not there yet"
    if kind == "ham every row invalid":
        make_ham(root, rows=[(lesion, image, "melanoma") for lesion, image, _ in HAM_ROWS])
        return root / "HAM10000_metadata.csv", "no usable row"
    if kind == "isic2019 header only":
        make_isic2019(root, ISIC_ROWS)
        _keep_header(root / readers.ISIC2019_GROUND_TRUTH)
        return root / readers.ISIC2019_GROUND_TRUTH, "has a header but no rows"
    if kind == "isic2019 images not unzipped":
        make_isic2019(root, ISIC_ROWS)
        for image in (root / readers.ISIC2019_INPUT).glob("*.jpg"):
            image.unlink()
        return root / readers.ISIC2019_GROUND_TRUTH, "the images are not there yet"
    if kind == "isic2019 every one-hot row invalid":
        make_isic2019(root, ISIC_ROWS)
        truth = pd.read_csv(root / readers.ISIC2019_GROUND_TRUTH)
        truth.iloc[:, 1:] = 0.0
        truth.to_csv(root / readers.ISIC2019_GROUND_TRUTH, index=False)
        return root / readers.ISIC2019_GROUND_TRUTH, "no usable row"
    if kind == "isic2018 header only":
        make_isic2018(root)
        _keep_header(root / "ISIC2018_Task3_Test_GroundTruth.csv")
        return root / "ISIC2018_Task3_Test_GroundTruth.csv", "has a header but no rows"
    if kind == "isic2018 images not unzipped":
        make_isic2018(root)
        shutil.rmtree(root / "ISIC2018_Task3_Test_Input")
        return root / "ISIC2018_Task3_Test_GroundTruth.csv", "the images are not there yet"
    raise AssertionError(kind)


DEGENERATE = ["ham header only", "ham tab header only", "ham 0 bytes", "ham images not unzipped",
              "ham every row invalid", "isic2019 header only", "isic2019 images not unzipped",
              "isic2019 every one-hot row invalid", "isic2018 header only",
              "isic2018 images not unzipped"]


@pytest.mark.parametrize("kind", DEGENERATE)
def test_degenerate_tables_are_one_clear_error(tmp_path, kind):
    from utils import fileio
    from utils.data import check

    root = tmp_path / "data"
    path, says = _degenerate(kind, root)
    before = fileio.tree_digest(root)
    with pytest.raises(DataError) as error:
        readers.read_table(root)
    message = str(error.value)
    assert message.startswith(str(path)) and says in message, message
    assert "download" in message or "fix the file" in message or "unzip" in message
    problems = check.collect_problems(root)  # `check` says the same, as its one problem
    assert len(problems) == 1 and problems[0].where == str(path) and says in problems[0].message
    assert fileio.tree_digest(root) == before


def test_degenerate_dermamnist_manifest_and_predictions_files(tmp_path):
    from utils.data.manifest import load_manifest
    from utils.scoring.predictions import read_predictions

    (tmp_path / "dermamnist.npz").write_bytes(b"")
    with pytest.raises(DataError, match="dermamnist.npz: not a readable .npz archive"):
        dermamnist.load_dermamnist(tmp_path / "dermamnist.npz")
    make_npz(tmp_path / "empty.npz", counts=(0, 0, 0))
    with pytest.raises(DataError, match="empty.npz: holds no image"):
        dermamnist.load_dermamnist(tmp_path / "empty.npz")
    (tmp_path / "manifest.csv").write_bytes(b"")
    with pytest.raises(DataError, match="manifest.csv: empty file"):
        load_manifest(tmp_path / "manifest.csv")
    (tmp_path / "manifest.csv").write_text("image_id,path,label,lesion_id,split\n")
    with pytest.raises(DataError, match="manifest.csv: has a header but no rows"):
        load_manifest(tmp_path / "manifest.csv")
    (tmp_path / "manifest.csv").write_text("image_id,path,label,label_index,lesion_id,split\n"
                                           "a,/x/a.jpg,mel,four,L1,train\n")
    with pytest.raises(DataError, match="column label_index holds a value that is not"):
        load_manifest(tmp_path / "manifest.csv")
    (tmp_path / "predictions_test.csv").write_bytes(b"")
    with pytest.raises(DataError, match="predictions_test.csv: empty file"):
        read_predictions(tmp_path / "predictions_test.csv")

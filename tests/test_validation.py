"""utils.data.validation: every bad input gets a DataError / Problem naming the file or row and
the fix."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from utils.data import check, readers, validation
from utils.data.validation import Problem
from utils.errors import DataError

IMAGES = ["ISIC_1000001", "ISIC_1000002", "ISIC_1000003", "ISIC_1000004"]


def write_jpeg(path: Path, size=(40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (150, 90, 60)).save(path, format="JPEG")


def make_ham(root: Path, rows: list[tuple[str, str, str]], images=IMAGES) -> Path:
    """HAM10000 layout: metadata from (lesion_id, image_id, dx) rows; JPEGs for `images`."""
    root.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows, columns=["lesion_id", "image_id", "dx"])
    frame["age"], frame["sex"], frame["localization"] = 50, "female", "back"
    frame.to_csv(root / "HAM10000_metadata.csv", index=False)
    for image_id in images:
        write_jpeg(root / "HAM10000_images_part_1" / f"{image_id}.jpg")
    return root


def good_rows() -> list[tuple[str, str, str]]:
    return [("HAM_1", IMAGES[0], "mel"), ("HAM_1", IMAGES[1], "mel"),
            ("HAM_2", IMAGES[2], "nv"), ("HAM_3", IMAGES[3], "bcc")]


def test_good_folder_has_no_problems(tmp_path):
    root = make_ham(tmp_path, good_rows())
    assert check.collect_problems(root) == []
    assert len(readers.read_ham10000(root)) == 4


def test_missing_image_names_row_and_fix(tmp_path):
    root = make_ham(tmp_path, good_rows(), images=IMAGES[:3])
    with pytest.raises(DataError) as error:
        readers.read_ham10000(root)
    message = str(error.value)
    assert "HAM10000_metadata.csv line 5 (image 'ISIC_1000004')" in message
    assert "no file ISIC_1000004.jpg" in message and "remove the row" in message
    assert "python -m utils check" in message


def test_unknown_label(tmp_path):
    rows = good_rows()
    rows[2] = ("HAM_2", IMAGES[2], "melanoma")
    with pytest.raises(DataError, match=r"line 4 \(image 'ISIC_1000003'\): unknown label "
                                        r"'melanoma'; valid labels: akiec, bcc"):
        readers.read_ham10000(make_ham(tmp_path, rows))


def test_duplicated_image_id(tmp_path):
    rows = good_rows() + [("HAM_9", IMAGES[0], "mel")]
    with pytest.raises(DataError, match=r"line 6 \(image 'ISIC_1000001'\): image id repeated "
                                        r"\(first on line 2\)"):
        readers.read_ham10000(make_ham(tmp_path, rows))


def test_missing_column_names_file_and_column(tmp_path):
    root = make_ham(tmp_path, good_rows())
    frame = pd.read_csv(root / "HAM10000_metadata.csv").drop(columns="dx")
    frame.to_csv(root / "HAM10000_metadata.csv", index=False)
    with pytest.raises(DataError, match=r"HAM10000_metadata.csv: missing column\(s\) dx"):
        readers.read_ham10000(root)


def test_empty_metadata_file(tmp_path):
    root = make_ham(tmp_path, good_rows())
    (root / "HAM10000_metadata.csv").write_bytes(b"")
    with pytest.raises(DataError, match="HAM10000_metadata.csv: empty file"):
        readers.read_ham10000(root)


@pytest.mark.parametrize("bad_id, reason", [
    ("../../etc/passwd", "path outside the data folder"),
    ("/etc/passwd", "absolute path"),
    ("sub/ISIC_1000001", "path outside"),
    ("..", "path outside"),
])
def test_image_id_escaping_the_data_folder(tmp_path, bad_id, reason):
    rows = good_rows()
    rows[1] = ("HAM_1", bad_id, "mel")
    with pytest.raises(DataError) as error:
        readers.read_ham10000(make_ham(tmp_path, rows))
    assert f"line 3: image id {bad_id!r} is not a plain file name ({reason}" in str(error.value)


def test_check_inside_flags_paths_outside_root(tmp_path):
    problems = validation.check_inside([str(tmp_path / "a.jpg"), "/etc/passwd"], tmp_path, "m.csv")
    assert [p.where for p in problems] == ["m.csv line 3"]


def make_isic(root: Path, one_hot: list[list[float]]) -> Path:
    columns = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
    images = [f"ISIC_000000{i}" for i in range(len(one_hot))]
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([[image] + row for image, row in zip(images, one_hot)],
                 columns=["image", *columns]).to_csv(root / readers.ISIC2019_GROUND_TRUTH,
                                                     index=False)
    pd.DataFrame({"image": images, "lesion_id": ""}).to_csv(root / readers.ISIC2019_METADATA,
                                                           index=False)
    for image in images:
        write_jpeg(root / readers.ISIC2019_INPUT / f"{image}.jpg")
    return root


def test_one_hot_rows_with_zero_or_two_positives(tmp_path):
    good = [1.0, 0, 0, 0, 0, 0, 0, 0, 0]
    zero = [0.0] * 9
    two = [1.0, 1.0, 0, 0, 0, 0, 0, 0, 0]
    unk = [0.0] * 8 + [1.0]
    root = make_isic(tmp_path, [good, zero, two, unk, good])
    problems = check.collect_problems(root)
    text = [str(p) for p in problems]
    assert text[0].startswith("ISIC_2019_Training_GroundTruth.csv line 3 (image 'ISIC_0000001'):"
                              " one-hot row has no positive class")
    assert "line 4 (image 'ISIC_0000002'): one-hot row has 2 positive classes (MEL, NV)" in text[1]
    assert "line 5 (image 'ISIC_0000003'): unknown label 'UNK'" in text[2]
    assert len(problems) == 3
    with pytest.raises(DataError, match="3 problem"):
        readers.read_isic2019(root)


def test_collect_problems_lists_every_problem_and_decodes_images(tmp_path):
    rows = good_rows() + [("HAM_5", "ISIC_1000009", "mel"), ("HAM_6", IMAGES[1], "xx")]
    root = make_ham(tmp_path, rows)
    (root / "HAM10000_images_part_1" / f"{IMAGES[2]}.jpg").write_bytes(b"")
    problems = check.collect_problems(root)
    kinds = sorted(p.kind for p in problems)
    assert kinds == ["duplicate_id", "empty_image", "missing_image", "unknown_label"]
    assert check.collect_problems(root, decode=False) == [
        p for p in problems if p.kind != "empty_image"]
    assert check.collect_problems(tmp_path / "nothing")[0].kind == "layout"


def test_raise_problems_caps_the_listing():
    problems = [Problem("x", f"f.csv line {i}", "bad") for i in range(2, 40)]
    with pytest.raises(DataError) as error:
        validation.raise_problems(problems, "HAM10000", "hint")
    message = str(error.value)
    assert message.startswith("38 problem(s) in HAM10000")
    assert f"... and {38 - validation.MAX_LISTED} more" in message and message.endswith("hint")
    validation.raise_problems([], "nothing")  # no problem, no error

"""Property-based tests (Hypothesis, seeded, bounded): random mutations of the metadata and
ground-truth tables of tiny valid HAM10000 / ISIC 2019 / ISIC 2018 layouts, of manifests and
predictions CSVs, and random bytes given to the image gate. Whatever the input, the only
exception is the project's DataError, its message names the file (or folder), `check` never
raises, and the raw folders are byte-identical afterwards."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from utils import fileio, paths
from utils.data import check, images, manifest, readers
from utils.errors import DataError
from utils.scoring import predictions

FUZZ = settings(derandomize=True, max_examples=50, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

IDS = [f"ISIC_00{n:05d}" for n in range(8)]
HAM_CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc", "nv"]
ISIC_COLUMNS = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
TASK3_COLUMNS = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]


def _jpeg(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 9), (value, 80, 40)).save(path, format="JPEG")


def _one_hot(columns: list[str], index: int) -> list[str]:
    return ["1.0" if i == index else "0.0" for i in range(len(columns))]


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> dict[str, tuple[Path, str, str]]:
    """{layout: (folder, table file name, its valid text)} of tiny valid layouts."""
    base = tmp_path_factory.mktemp("fuzz")
    ham = base / "HAM10000"
    rows = ["lesion_id,image_id,dx,dx_type,age,sex,localization"]
    for i, (image_id, dx) in enumerate(zip(IDS, HAM_CLASSES)):
        rows.append(f"HAM_{i // 2:07d},{image_id},{dx},histo,{30 + i}.0,male,back")
        _jpeg(ham / "HAM10000_images_part_1" / f"{image_id}.jpg", 10 * i)
    isic = base / "ISIC_2019"
    truth = ["image," + ",".join(ISIC_COLUMNS)]
    meta = ["image,age_approx,anatom_site_general,lesion_id,sex"]
    for i, image_id in enumerate(IDS):
        truth.append(f"{image_id}," + ",".join(_one_hot(ISIC_COLUMNS, i % 8)))
        meta.append(f"{image_id},{40 + i},anterior torso,BCN_{i // 2:07d},female")
        _jpeg(isic / "ISIC_2019_Training_Input" / f"{image_id}.jpg", 10 * i)
    (isic / "ISIC_2019_Training_Metadata.csv").write_text("\n".join(meta) + "\n")
    task3 = base / "ISIC2018"
    gt = ["image," + ",".join(TASK3_COLUMNS)]
    for i, image_id in enumerate(IDS):
        gt.append(f"{image_id}," + ",".join(_one_hot(TASK3_COLUMNS, i % 7)))
        _jpeg(task3 / "ISIC2018_Task3_Test_Input" / f"{image_id}.jpg", 10 * i)
    return {
        "ham10000": (ham, "HAM10000_metadata.csv", "\n".join(rows) + "\n"),
        "isic2019": (isic, "ISIC_2019_Training_GroundTruth.csv", "\n".join(truth) + "\n"),
        "isic2018_task3_test": (task3, "ISIC2018_Task3_Test_GroundTruth.csv",
                                "\n".join(gt) + "\n"),
    }


NASTY = st.sampled_from(["", ",", ",,", '"', "\t", "\n", "\r\n", "\x00", "NaN", "nan", "1",
                         "0", "2", "-1", "1e309", "../../etc/passwd", "/abs", "C:\\x", "é",
                         "\ufeff", "ISIC_0000001", "mel", "UNK", " ", "unknown",
                         "1e309714285714285"])
TEXT = st.one_of(NASTY, st.text(max_size=12))


@st.composite
def mutated(draw, text: str) -> bytes:
    """`text` after 1-4 random edits: cut, delete / duplicate / swap lines, replace or insert
    characters or fields, or raw bytes that are not UTF-8."""
    lines = text.splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["cut", "drop", "dup", "swap", "char", "insert", "field",
                                     "header"]))
        joined = "".join(lines)
        if kind == "cut":
            joined = joined[: draw(st.integers(0, len(joined)))]
        elif kind in ("drop", "dup", "swap") and lines:
            i = draw(st.integers(0, len(lines) - 1))
            j = draw(st.integers(0, len(lines) - 1))
            if kind == "drop":
                del lines[i]
            elif kind == "dup":
                lines.insert(j, lines[i])
            else:
                lines[i], lines[j] = lines[j], lines[i]
            joined = "".join(lines)
        elif kind in ("char", "insert") and joined:
            at = draw(st.integers(0, len(joined) - 1))
            tail = joined[at + 1:] if kind == "char" else joined[at:]
            joined = joined[:at] + draw(TEXT) + tail
        elif kind in ("field", "header") and lines:
            i = 0 if kind == "header" else draw(st.integers(0, len(lines) - 1))
            fields = lines[i].rstrip("\r\n").split(",")
            fields[draw(st.integers(0, len(fields) - 1))] = draw(TEXT)
            lines[i] = ",".join(fields) + "\n"
            joined = "".join(lines)
        lines = joined.splitlines(keepends=True)
    data = "".join(lines).encode("utf-8")
    if draw(st.booleans()) and draw(st.booleans()):
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    return data


def _names_the_file(message: str, *names: str) -> bool:
    return any(name in message for name in names)


@pytest.mark.parametrize("layout", ["ham10000", "isic2019", "isic2018_task3_test"])
@FUZZ
@given(data=st.data())
def test_mutated_tables_give_a_data_error_naming_the_file(layouts, layout, data):
    root, name, text = layouts[layout]
    (root / name).write_bytes(data.draw(mutated(text)))
    before = fileio.tree_digest(root)
    try:
        table = readers.read_table(root, layout)
    except DataError as error:
        assert _names_the_file(str(error), name, str(root)), str(error)
    else:
        assert table["image_id"].is_unique and len(table) > 0
        assert set(table["image_id"]) <= set(IDS)
    report = check.inspect_dataset(root, layout, decode=False)  # never raises
    assert report.ok or all(p.where and p.message for p in report.problems)
    assert fileio.tree_digest(root) == before


@pytest.fixture(scope="module")
def run_tables(layouts, tmp_path_factory) -> tuple[Path, str, str]:
    """(a folder, a valid split manifest's text, a valid predictions CSV's text)."""
    root = layouts["ham10000"][0]
    (root / "HAM10000_metadata.csv").write_text(layouts["ham10000"][2])
    split = readers.read_ham10000(root)
    split["split"] = ["train", "train", "val", "val", "test", "test", "train", "train"]
    probs = np.full((len(split), 7), 1 / 7)
    frame = predictions.predictions_frame(split, probs, readers.datasets.HAM10000.classes)
    return (tmp_path_factory.mktemp("tables"), split.to_csv(index=False),
            frame.to_csv(index=False))


@FUZZ
@given(data=st.data())
def test_mutated_manifests_and_predictions(run_tables, data):
    """A split manifest and a predictions CSV, mutated: read, or one DataError naming them."""
    folder, manifest_text, predictions_text = run_tables
    path = folder / "manifest.csv"
    path.write_bytes(data.draw(mutated(manifest_text)))
    try:
        loaded = manifest.load_manifest(path)
        manifest.check_manifest(loaded, str(path))
    except DataError as error:
        assert "manifest.csv" in str(error), str(error)
    path = folder / "predictions_test.csv"
    path.write_bytes(data.draw(mutated(predictions_text)))
    try:
        read = predictions.read_predictions(path)
        predictions.arrays_from_predictions(read)
    except DataError as error:
        assert "predictions" in str(error), str(error)


SIGNATURES = [b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM",
              b"RIFF\x00\x00\x00\x00WEBP", b"II*\x00"]


@st.composite
def image_bytes(draw) -> bytes:
    """Random bytes after a real signature, or a small real image with bytes cut, flipped or
    appended."""
    if draw(st.booleans()):
        return draw(st.sampled_from(SIGNATURES)) + draw(st.binary(max_size=200))
    fmt = draw(st.sampled_from(["JPEG", "PNG", "GIF", "BMP", "WEBP"]))
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (16, 12), (200, 30, 30)).save(buffer, format=fmt)
    data = bytearray(buffer.getvalue())
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["cut", "flip", "append"]))
        if kind == "cut":
            data = data[: draw(st.integers(0, len(data)))]
        elif kind == "flip" and data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        else:
            data += draw(st.binary(min_size=1, max_size=40))
    return bytes(data)


@settings(derandomize=True, max_examples=200, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=image_bytes(), name=st.sampled_from(["x.jpg", "x.png", "X.JPG", "x.jpeg"]))
def test_the_image_gate_never_raises_on_random_bytes(tmp_path, data, name):
    path = tmp_path / name
    path.write_bytes(data)
    header, problem = images.check_file(path)
    assert (header is None) != (problem is None)
    if problem is not None:
        assert problem.where == str(path) and problem.message
    size, decode_problem = images.inspect_image(path)
    assert (size is None) != (decode_problem is None)
    try:
        rgb = images.read_rgb(path)
    except DataError as error:
        assert name in str(error)
    else:
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
        assert header is not None and rgb.shape[:2] == (header.height, header.width)
    assert path.read_bytes() == data


def test_a_huge_exponent_crashes_no_reader(layouts, tmp_path):
    """pandas' C number parser dies with a segmentation fault on 1e309714285714285
    (pandas-dev/pandas#63089; the fuzzer found it in a predictions CSV): every reader parses
    numbers with Python's float instead. Run in a child process, so a crash fails this test
    instead of killing the test session."""
    huge = "1e309714285714285"
    ham, ham_csv, ham_text = layouts["ham10000"]
    isic, isic_csv, isic_text = layouts["isic2019"]
    (tmp_path / "ham").mkdir()
    shutil.copytree(ham / "HAM10000_images_part_1", tmp_path / "ham" / "HAM10000_images_part_1")
    (tmp_path / "ham" / ham_csv).write_text(ham_text.replace("30.0", huge))
    shutil.copytree(isic, tmp_path / "isic")
    (tmp_path / "isic" / isic_csv).write_text(isic_text.replace("1.0", huge, 1))
    meta = (isic / "ISIC_2019_Training_Metadata.csv").read_text()
    (tmp_path / "isic" / "ISIC_2019_Training_Metadata.csv").write_text(meta.replace(",40,", ","
                                                                                     + huge + ","))
    (tmp_path / "manifest.csv").write_text(f"image_id,path,label,label_index,lesion_id,split,age\n"
                                           f"a,/x/a.jpg,mel,{huge},L1,train,{huge}\n")
    (tmp_path / "predictions_test.csv").write_text(
        "image_id,lesion_id,label,label_index,split,a,b\n" f"x,L,a,0,test,{huge},0.5\n")
    script = f"""
from utils.data import readers, manifest
from utils.scoring import predictions
from utils.errors import DataError
root = {str(tmp_path)!r}
print(len(readers.read_table(root + "/ham")))
try:
    readers.read_table(root + "/isic")
except DataError as error:
    print("isic", "one-hot row" in str(error))
for read in (lambda: manifest.load_manifest(root + "/manifest.csv"),
             lambda: predictions.read_predictions(root + "/predictions_test.csv")):
    try:
        read()
    except DataError as error:
        print(str(error).split(":")[0].rsplit("/", 1)[-1])
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=paths.repo_root(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["8", "isic", "True", "manifest.csv",
                                     "predictions_test.csv"]


def test_the_fuzzers_start_from_valid_layouts(layouts):
    """Control: before any mutation, each layout reads to its 8 rows without a problem."""
    for layout, (root, name, text) in layouts.items():
        (root / name).write_text(text)
        assert len(readers.read_table(root, layout)) == 8

"""`python -m utils check`: summary, problems, exit status; the raw folder is never modified."""
from __future__ import annotations

import shutil
import time

import pandas as pd
import pytest
from hostile import HUGE, jpeg_declaring, png_declaring

from utils import cli, fileio
from utils.data import check
from utils.data.datasets import HAM10000
from utils.data.manifest import load_manifest


@pytest.mark.real_data
def test_check_and_split_on_real_ham10000_fast_and_read_only(ham_real, tmp_path, capsys):
    before = fileio.tree_digest(ham_real)
    start = time.perf_counter()
    status = cli.main(["check", str(ham_real)])
    seconds = time.perf_counter() - start
    output = capsys.readouterr().out
    assert status == 0 and "no problems found" in output
    print(f"check on real HAM10000: {seconds:.1f} s")  # measured 2.8-4 s on the 2-core machine
    assert seconds < 60
    for label, count in HAM10000.counts.items():
        assert any(line.split()[:2] == [label, str(count)] for line in output.splitlines())
    assert "total   10015     7470" in output and "200x150: 10015" in output
    assert cli.main(["split", str(ham_real), str(tmp_path / "manifest.csv")]) == 0
    assert len(load_manifest(tmp_path / "manifest.csv")) == 10015
    assert fileio.tree_digest(ham_real) == before


def test_check_synthetic_summary(synthetic_ham, capsys):
    assert cli.main(["check", str(synthetic_ham)]) == 0
    output = capsys.readouterr().out
    metadata = pd.read_csv(synthetic_ham / "HAM10000_metadata.csv")
    summary = check.class_summary(check.inspect_dataset(synthetic_ham, progress=False).table)
    assert summary["images"].drop("total").to_dict() == metadata["dx"].value_counts().to_dict()
    assert summary.loc["total", "lesions"] == metadata["lesion_id"].nunique()
    assert "dataset: ham10000  (valid rows: 300)" in output
    assert "image sizes (width x height):" in output and "no problems found" in output


def test_check_reports_every_problem_and_fails(synthetic_ham, tmp_path, capsys):
    root = tmp_path / "HAM10000"
    shutil.copytree(synthetic_ham, root, ignore=shutil.ignore_patterns("*segmentation*"))
    metadata = pd.read_csv(root / "HAM10000_metadata.csv")
    paths = {p.stem: p for p in root.rglob("*.jpg")}
    first, second, third = metadata["image_id"][:3]
    paths[first].write_bytes(b"")
    data = paths[second].read_bytes()
    paths[second].write_bytes(data[: len(data) // 3])
    paths[third].unlink()
    assert cli.main(["check", str(root), "--workers", "2"]) == 1
    output = capsys.readouterr().out
    assert "3 problem(s):" in output
    assert f"{first}.jpg: empty file (0 bytes)" in output
    assert f"{second}.jpg is truncated or corrupt" in output
    assert f"line 4 (image '{third}'): listed image has no file" in output
    assert cli.main(["check", str(root), "--no-decode"]) == 1
    assert "1 problem(s):" in capsys.readouterr().out


def test_check_without_a_dataset_explains_what_it_looked_for(tmp_path, capsys):
    assert cli.main(["check", str(tmp_path)]) == 1
    assert "no known dataset layout; looked for HAM10000_metadata.csv" in capsys.readouterr().out


def test_check_reports_a_huge_header_among_every_other_problem(synthetic_ham, tmp_path, capsys):
    """On main, `check` died on the 50,000 x 50,000 image with DecompressionBombError, naming
    no file and reporting nothing else."""
    root = tmp_path / "HAM10000"
    shutil.copytree(synthetic_ham, root, ignore=shutil.ignore_patterns("*segmentation*"))
    ids = pd.read_csv(root / "HAM10000_metadata.csv")["image_id"]
    files = {p.stem: p for p in root.rglob("*.jpg")}
    files[ids[0]].write_bytes(png_declaring(*HUGE))  # a PNG under a .jpg name
    files[ids[1]].write_bytes(jpeg_declaring(*HUGE))
    files[ids[2]].write_bytes(b"")
    files[ids[3]].unlink()
    before = fileio.tree_digest(root)
    assert cli.main(["check", str(root), "--workers", "2"]) == 1
    output = capsys.readouterr().out
    assert "4 problem(s):" in output
    assert f"{ids[0]}.jpg declares 50000 x 50000 pixels" in output
    assert f"{ids[1]}.jpg declares 50000 x 50000 pixels" in output
    assert f"{ids[2]}.jpg: empty file (0 bytes)" in output
    assert f"(image '{ids[3]}'): listed image has no file" in output
    assert "valid rows: 299" in output  # the rest of the folder was checked
    assert fileio.tree_digest(root) == before

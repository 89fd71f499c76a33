"""Offline balancing (utils.augmentation.balance): exact per-class counts, traceability to
training images only,
raw data untouched, idempotence, resume after a kill, byte-identical output, clear errors."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from utils import cli, fileio
from utils.augmentation import balance
from utils.data import readers, splits
from utils.data.manifest import load_manifest, save_manifest
from utils.errors import DataError


@pytest.fixture(scope="module")
def split_csv(synthetic_ham: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    manifest = splits.lesion_split(readers.read_table(synthetic_ham), seed=0)
    return save_manifest(manifest, tmp_path_factory.mktemp("split") / "manifest.csv")


@pytest.fixture(scope="module")
def balanced_run(split_csv: Path, synthetic_ham: Path, tmp_path_factory: pytest.TempPathFactory):
    """One "max" balancing run (with 2 worker processes), and the raw digest taken before it."""
    raw_before = fileio.tree_digest(synthetic_ham)
    out_dir = tmp_path_factory.mktemp("balanced")
    result = balance.balance(split_csv, out_dir, target="max", seed=0, workers=2, progress=False)
    return result, raw_before


def _image_files(out_dir: Path) -> dict[str, float]:
    return {str(p.relative_to(out_dir)): p.stat().st_mtime_ns
            for p in sorted(out_dir.rglob("*")) if p.is_file()}


def _image_digest(out_dir: Path) -> dict[str, str]:
    return {k: v for k, v in fileio.tree_digest(out_dir).items() if k.startswith("images")}


def test_max_target_gives_exact_counts_and_traceable_files(balanced_run, split_csv):
    result, _ = balanced_run
    split = load_manifest(split_csv)
    frame = load_manifest(result.manifest_path)
    counts = balance.class_counts(frame)
    largest = split.loc[split["split"] == "train", "label"].value_counts().max()
    assert result.complete and (counts["train_total"] == largest).all()
    assert result.targets == {c: largest for c in counts.index}
    held_out_counts = balance.class_counts(split)[["val", "test"]]
    assert (counts[["val", "test"]].to_numpy() == held_out_counts.to_numpy()).all()
    augmented = frame.loc[frame["augmented"]]
    on_disk = sorted(str(p) for p in (result.out_dir / "images").rglob("*.jpg"))
    assert on_disk == sorted(augmented["path"])  # every file is a manifest row and vice versa
    train = split.loc[split["split"] == "train"].set_index("image_id")
    assert set(augmented["source_image_id"]) <= set(train.index)
    source_labels = train.loc[augmented["source_image_id"], "label"].to_numpy()
    assert (source_labels == augmented["label"].to_numpy()).all()
    held_out = split.loc[split["split"] != "train"]
    assert not set(augmented["lesion_id"]) & set(held_out["lesion_id"])
    assert not set(augmented["source_image_id"]) & set(held_out["image_id"])
    # round robin: within a class, use counts of sources differ by at most one
    uses = augmented.groupby(["label", "source_image_id"]).size()
    uses = uses.groupby("label").agg(["min", "max"])
    assert ((uses["max"] - uses["min"]) <= 1).all()
    assert balance.audit_balanced_manifest(frame)["augmented"] == len(augmented)
    steps = json.loads(augmented["transforms"].iloc[0])
    assert steps and all("name" in s for s in steps)
    original = frame.loc[~frame["augmented"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(original[split.columns], split, check_dtype=False)


def test_raw_folder_unchanged(balanced_run, synthetic_ham):
    _, raw_before = balanced_run
    assert fileio.tree_digest(synthetic_ham) == raw_before


def test_second_run_creates_nothing(balanced_run, split_csv):
    result, _ = balanced_run
    before = _image_files(result.out_dir)
    again = balance.balance(split_csv, result.out_dir, target="max", seed=0, workers=1,
                            progress=False)
    assert again.created == 0
    assert again.skipped == len(before) - 2  # every file but the manifest and balance.json
    assert _image_files(result.out_dir) == before  # same files, same mtimes


def test_other_settings_in_same_folder_are_refused(balanced_run, split_csv):
    result, _ = balanced_run
    with pytest.raises(DataError, match="other settings.*seed"):
        balance.balance(split_csv, result.out_dir, target="max", seed=1, workers=1, progress=False)


def test_interrupted_run_resumes_to_exact_and_identical_output(balanced_run, split_csv, tmp_path):
    result, _ = balanced_run
    out_dir = tmp_path / "resumed"
    partial = balance.balance(split_csv, out_dir, target="max", seed=0, workers=1,
                              max_new=150, progress=False)
    assert not partial.complete and partial.manifest_path is None and partial.created == 150
    assert not (out_dir / balance.MANIFEST_NAME).exists()
    written = sorted((out_dir / "images").rglob("*.jpg"))
    lost = written[::10]
    for path in lost:  # lose some outputs and leave half-written temporaries behind
        path.unlink()
        (path.parent / f".{path.name}.abc123.part").write_bytes(b"\xff\xd8 truncated")
    done = balance.balance(split_csv, out_dir, target="max", seed=0, workers=1, progress=False)
    expected_total = sum(done.targets.values()) - sum(
        balance.train_counts_of(load_manifest(split_csv)).values())
    assert done.complete and done.skipped == 150 - len(lost)
    assert done.created == expected_total - done.skipped
    assert not list(out_dir.rglob("*.part"))
    # byte-identical to the uninterrupted run made with 2 worker processes
    assert _image_digest(out_dir) == _image_digest(result.out_dir)
    frame = load_manifest(done.manifest_path)
    assert (balance.class_counts(frame)["train_total"] == list(done.targets.values())).all()


def test_killed_process_resumes(split_csv, tmp_path):
    out_dir = tmp_path / "killed"
    command = [sys.executable, "-m", "utils", "balance", str(split_csv), str(out_dir),
               "--target", "250", "--workers", "1", "--seed", "3"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if len(list((out_dir / "images").rglob("*.jpg"))) >= 30:
            os.killpg(process.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    process.wait()
    killed = process.returncode == -signal.SIGKILL
    assert killed, "the balance process finished before it could be killed"
    assert not (out_dir / balance.MANIFEST_NAME).exists()
    done = balance.balance(split_csv, out_dir, target=250, seed=3, workers=1, progress=False)
    assert done.skipped >= 30 and done.complete
    frame = load_manifest(done.manifest_path)
    assert (balance.class_counts(frame)["train_total"] == 250).all()
    assert len(list((out_dir / "images").rglob("*.jpg"))) == int(frame["augmented"].sum())
    # every image decodes (none half-written)
    for path in frame.loc[frame["augmented"], "path"]:
        assert Path(path).stat().st_size > 0
    clean = balance.balance(split_csv, tmp_path / "clean", target=250, seed=3, workers=1,
                            progress=False)
    assert _image_digest(out_dir) == _image_digest(clean.out_dir)


def test_same_seed_byte_identical_other_seed_differs(split_csv, tmp_path):
    target = {"df": 20, "vasc": 15}
    runs = [balance.balance(split_csv, tmp_path / name, target=target, seed=seed, workers=1,
                            progress=False) for name, seed in (("a", 4), ("b", 4), ("c", 5))]
    digests = [_image_digest(r.out_dir) for r in runs]
    assert digests[0] == digests[1] and digests[0] != digests[2]
    manifests = [r.manifest_path.read_text().replace(str(r.out_dir), "OUT") for r in runs[:2]]
    assert manifests[0] == manifests[1]
    counts = balance.class_counts(load_manifest(runs[0].manifest_path))
    assert counts.loc["df", "train_total"] == 20 and counts.loc["vasc", "train_total"] == 15
    assert (counts.drop(index=["df", "vasc"])["train_augmented"] == 0).all()
    # the same folder accepts a smaller target: extra images go, the rest stay byte-identical
    smaller = balance.balance(split_csv, runs[0].out_dir, target={"df": 12}, seed=4, workers=1,
                              progress=False)
    frame = load_manifest(smaller.manifest_path)
    on_disk = sorted(str(p) for p in (runs[0].out_dir / "images").rglob("*.jpg"))
    assert smaller.created == 0 and on_disk == sorted(frame.loc[frame["augmented"], "path"])
    assert balance.class_counts(frame).loc["df", "train_total"] == 12


def test_clear_errors(split_csv, tmp_path):
    split = load_manifest(split_csv)
    below = r"target 5 for class '\w+' is below its \d+ training images"
    with pytest.raises(DataError, match=below):
        balance.balance(split, tmp_path / "x", target=5, workers=1, progress=False)
    with pytest.raises(DataError, match="unknown class"):
        balance.balance(split, tmp_path / "x", target={"zzz": 5}, workers=1, progress=False)
    no_train = split.copy()
    no_train.loc[no_train["label"] == "df", "split"] = "val"
    with pytest.raises(DataError, match=r"\['df'\] have no training image"):
        balance.balance(no_train, tmp_path / "x", workers=1, progress=False)
    with pytest.raises(DataError, match="missing column.*lesion_id"):
        balance.balance(split.drop(columns="lesion_id"), tmp_path / "x", workers=1, progress=False)
    raw_folder = Path(split["path"].iloc[0]).parent.parent
    with pytest.raises(DataError, match="raw data is never written"):
        balance.balance(split, raw_folder, workers=1, progress=False)
    with pytest.raises(ValueError, match="bad --target"):
        balance.parse_target("df=many")
    assert balance.parse_target("df=10, vasc=12") == {"df": 10, "vasc": 12}
    assert balance.parse_target("max") == "max" and balance.parse_target("300") == 300


def test_bad_source_images_are_listed_before_anything_is_written(split_csv, tmp_path):
    """The image gate screens every source image the plan uses: one DataError names them all
    and the output folder is not even created (main: a worker died on the first one)."""
    from hostile import HUGE, png_declaring

    split = load_manifest(split_csv)
    train = split[split["split"] == "train"]
    smallest = train["label"].value_counts().idxmin()  # its images are all sources under "max"
    sources = train.loc[train["label"] == smallest, "path"].iloc[:2].tolist()
    copies = tmp_path / "copies"
    copies.mkdir()
    damaged = split.copy()
    for path, data in zip(sources, (b"", png_declaring(*HUGE))):
        copy = copies / Path(path).name
        copy.write_bytes(data)
        damaged.loc[damaged["path"] == path, "path"] = str(copy)
    out_dir = tmp_path / "out"
    with pytest.raises(DataError, match="2 problem") as error:
        balance.balance(damaged, out_dir, workers=1, progress=False)
    message = str(error.value)
    assert "empty file (0 bytes)" in message and "declares 50000 x 50000" in message
    assert "nothing was written" in message and not out_dir.exists()


def test_audit_catches_leaks(balanced_run):
    result, _ = balanced_run
    frame = load_manifest(result.manifest_path)
    val_row = frame.loc[frame["split"] == "val"].iloc[0]
    first_aug = frame.index[frame["augmented"]][0]
    leaky = frame.copy()
    leaky.loc[first_aug, ["source_image_id", "label", "lesion_id"]] = \
        [val_row["image_id"], val_row["label"], val_row["lesion_id"]]
    with pytest.raises(DataError, match="derive from validation/test"):
        balance.audit_balanced_manifest(leaky, check_files=False)
    lesion_leak = frame.copy()
    lesion_leak.loc[first_aug, "lesion_id"] = val_row["lesion_id"]
    with pytest.raises(DataError, match="appear both in augmented training images"):
        balance.audit_balanced_manifest(lesion_leak, check_files=False)
    Path(frame.loc[first_aug, "path"]).rename(Path(frame.loc[first_aug, "path"] + ".moved"))
    try:
        with pytest.raises(DataError, match="missing"):
            balance.audit_balanced_manifest(frame)
    finally:
        Path(frame.loc[first_aug, "path"] + ".moved").rename(frame.loc[first_aug, "path"])


def test_cli_balance(split_csv, tmp_path, capsys):
    assert cli.main(["balance", str(split_csv), str(tmp_path / "cli"), "--target", "df=12",
                     "--workers", "1", "--image-size", "64"]) == 0
    printed = capsys.readouterr().out
    assert "balanced_manifest.csv" in printed and "df" in printed
    frame = load_manifest(tmp_path / "cli" / balance.MANIFEST_NAME)
    augmented = frame.loc[frame["augmented"]]
    assert len(augmented) == 12 - int(((frame["label"] == "df") & (frame["split"] == "train")
                                       & ~frame["augmented"]).sum())
    from utils.augmentation.transforms import read_rgb

    assert min(read_rgb(augmented["path"].iloc[0]).shape[:2]) == 64


@pytest.mark.real_data
def test_real_ham10000_two_classes(ham_real, tmp_path):
    table = readers.read_ham10000(ham_real)
    split = splits.lesion_split(table, seed=0)
    small = split.loc[split["label"].isin(["df", "vasc"])].reset_index(drop=True)
    train = small.loc[small["split"] == "train", "label"].value_counts()
    target = {"df": int(train["df"]) + 25, "vasc": int(train["vasc"]) + 10}
    sources = small.loc[small["split"] == "train", "path"]
    digest_before = {p: fileio.md5sum(p) for p in sources}
    result = balance.balance(small, tmp_path / "real", target=target, seed=0, workers=1,
                             progress=False)
    frame = load_manifest(result.manifest_path)
    counts = balance.class_counts(frame)
    assert counts.loc["df", "train_total"] == target["df"]
    assert counts.loc["vasc", "train_total"] == target["vasc"]
    balance.audit_balanced_manifest(frame)
    assert all(str(ham_real) not in p for p in frame.loc[frame["augmented"], "path"])
    assert {p: fileio.md5sum(p) for p in sources} == digest_before

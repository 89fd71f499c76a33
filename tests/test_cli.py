"""utils.cli: every command, given a wrong option value or a missing path, ends in one `error:`
line naming the bad value (argparse usage error: exit status 2; later: 1), never a traceback,
and leaves no run folder behind; unexpected exceptions (bugs) still propagate."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from utils import cli, paths
from utils.errors import DataError


def call(argv: list[str], capsys) -> tuple[int, str]:
    """(exit status, stdout + stderr) of `python -m utils <argv>` run in this process; any
    exception other than SystemExit propagates (and fails the test): that is a traceback."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "error:" in line]


@pytest.fixture(scope="module")
def places(tmp_path_factory, synthetic_ham) -> dict[str, Path]:
    """A manifest of the synthetic folder, a folder of images, damaged model files, a run folder
    whose config is damaged, and paths that do not exist."""
    import keras

    root = tmp_path_factory.mktemp("cli")
    assert cli.main(["split", str(synthetic_ham), str(root / "manifest.csv")]) == 0
    images = root / "images"
    images.mkdir()
    for path in sorted((synthetic_ham / "HAM10000_images_part_1").glob("*.jpg"))[:3]:
        (images / path.name).write_bytes(path.read_bytes())
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Lambda(lambda x: x * 2)(inputs)
    keras.Model(inputs, outputs).save(root / "lambda.keras")
    (root / "junk.keras").write_bytes(b"not a zip archive")
    (root / "empty.csv").write_bytes(b"")
    broken_run = root / "broken-run"
    broken_run.mkdir()
    (broken_run / "config.json").write_text("{not json")
    (root / "a_file").write_text("a file, not a folder")
    return {"data": synthetic_ham, "root": root, "manifest": root / "manifest.csv",
            "images": images, "missing": root / "no-such-thing", "runs": root / "runs",
            "lambda": root / "lambda.keras", "junk": root / "junk.keras",
            "empty": root / "empty.csv", "broken_run": broken_run,
            "under_file": root / "a_file" / "sub"}


# (command line with {placeholders}, exit status, texts the output must hold)
CASES = [
    ("check {data} --dataset ham10k", 2, ["ham10k", "ham10000, isic2019"]),
    ("check {data} --workers 0", 2, ["--workers", "0 is not a positive integer"]),
    ("check {missing}", 1, ["no-such-thing: data folder not found"]),
    ("split {data} {root}/out.csv --fractions 0.5 0.5 0.5", 2,
     ["0.5 0.5 0.5", "summing to 1"]),
    ("split {data} {root}/out.csv --kfold 1", 2, ["1 folds: use 2 or more"]),
    ("split {data} {root}/out.csv --dataset isic", 2, ["'isic'", "known: ham10000"]),
    ("split {data} {root}/out.csv --seed -4", 2, ["-4 is negative"]),
    ("split {missing} {root}/out.csv", 1, ["no-such-thing: data folder not found"]),
    ("split {data} {data}/inside.csv", 1, ["refusing to write inside the raw data folder"]),
    ("balance {missing} {root}/bal", 1, ["no-such-thing: manifest not found"]),
    ("balance {empty} {root}/bal", 1, ["empty.csv: empty file"]),
    ("balance {data}/HAM10000_metadata.csv {root}/bal", 1, ["not a split manifest"]),
    ("balance {manifest} {root}/bal --target lots", 2, ["lots", "use max, a number"]),
    ("balance {manifest} {root}/bal --workers -1", 2, ["-1 is not a positive integer"]),
    ("train --backbone densenet", 2, ["'densenet'", "DenseNet121, DenseNet201"]),
    ("train --augment sometimes", 2, ["'sometimes'", "none", "online"]),
    ("train --epochs -1", 1, ["epochs=-1 must be >= 0"]),
    ("train --learning-rate 0", 1, ["learning_rate=0.0 must be > 0"]),
    ("train --split-fractions 0.5 0.5 0.5 --data-dir {data}", 1, ["split_fractions"]),
    ("train --data-dir {data} --backbone mobilenetv2 --image-size 8 --weights none "
     "--runs-root {runs}", 1, ["image_size 8 is below MobileNetV2's minimum of 32"]),
    ("train --data-dir {missing} --weights none --runs-root {runs}", 1,
     ["no-such-thing: data folder not found"]),
    ("train --manifest {missing} --weights none --runs-root {runs}", 1,
     ["no-such-thing: manifest not found"]),
    ("train --data-dir {data} --weights {missing} --runs-root {runs}", 1,
     ["no-such-thing: weights file not found"]),
    ("train --run-dir {broken_run}", 1, ["config.json: not a valid TrainConfig JSON"]),
    ("evaluate {missing}", 1, ["no-such-thing: neither a run folder nor a predictions CSV"]),
    ("evaluate {empty}", 1, ["empty.csv: empty file"]),
    ("evaluate {empty} --specificity 2", 2, ["2.0 is not between 0 and 1"]),
    ("predict {missing} {images} {root}/p.csv", 1, ["no-such-thing: model file not found"]),
    ("predict {junk} {images} {root}/p.csv", 1, ["junk.keras: not a readable .keras file"]),
    ("predict {lambda} {images} {root}/p.csv", 1,
     ["lambda.keras: refused", "never runs"]),
    ("predict {lambda} {images} {root}/p.csv --dataset imagenet", 2,
     ["'imagenet'", "known datasets: ham10000"]),
    ("predict {lambda} {images} {root}/p.csv --batch-size 0", 2, ["0 is not a positive"]),
    ("compare --runs {missing}", 1, ["no finished runs under"]),
    ("compare --n-boot -3", 2, ["-3 is negative"]),
    ("audit --backbone densenet --work-dir {root}/audit", 2, ["'densenet'", "DenseNet121"]),
    ("audit --data-dir {missing} --dataset ham10000 --work-dir {root}/audit", 1,
     ["no-such-thing: data folder not found"]),
    ("audit --epochs -2", 2, ["-2 is not a positive integer"]),
    ("ood --backbone densenet", 2, ["'densenet'"]),
    ("ood --n-boot -1", 2, ["-1 is negative"]),
    ("ood --data-dir {missing} --run-dir {root}/repro", 1,
     ["no-such-thing: data folder not found"]),
    ("external {missing} {data}", 1, ["no-such-thing"]),
    ("external {broken_run} {data} --specificity 1.5", 2, ["1.5 is not between 0 and 1"]),
    ("preprocess {missing} {root}/synth", 1, ["no-such-thing"]),
    ("preprocess {data} {root}/synth --steps sparkle", 1, ["sparkle"]),
    ("preprocess {data} {root}/synth --workers 0", 2, ["0 is not a positive integer"]),
    ("ablate --seeds 0 -1 --work-dir {root}/audit", 2, ["-1 is negative"]),
    ("select-recipe --budget-s -5", 2, ["-5.0 is not a finite number >= 0"]),
    ("select-recipe --seeds 0 x", 2, ["'x'"]),
    ("headtohead --n-boot -1", 2, ["-1 is negative"]),
    ("reproduce --budget-s nan", 2, ["nan is not a finite number >= 0"]),
    ("reproduce --backbone densenet", 2, ["'densenet'"]),
    ("reproduce --image-size 0", 2, ["expected a whole number >= 32", "'0'"]),
    ("reproduce --data-dir {missing} --run-dir {root}/repro", 1,
     ["no-such-thing: data folder not found"]),
    ("download imagenet", 2, ["'imagenet'", "ham10000"]),
    ("download ham10000 --retries -1", 2, ["-1 is negative"]),
    ("download isic2019 {root}/dl --mirror notaurl", 2, ["'notaurl' is not an http(s):// URL"]),
    ("synthetic {under_file} --n-images 20", 1, ["a_file/sub", "Not a directory"]),
    ("synthetic {root}/synth --n-images 2", 1, ["n_images=2 is too small"]),
    ("synthetic --image-size 0x5", 2, ["WIDTHxHEIGHT"]),
    ("synthetic --seed -1", 2, ["-1 is negative"]),
]


@pytest.mark.parametrize("line, status, texts", CASES, ids=[c[0][:60] for c in CASES])
def test_bad_input_is_one_error_line_never_a_traceback(line, status, texts, places, capsys):
    argv = [part.format(**places) for part in line.split()]
    code, output = call(argv, capsys)
    assert code == status, output
    assert "Traceback" not in output
    if not line.startswith(("check", "compare")):  # these print a report / a hint instead
        assert len(error_lines(output)) == 1, output
    for text in texts:
        assert text in output, output
    # nothing half-made: no run folder, no audit or report folder
    for name in ("runs", "audit", "repro", "bal", "out.csv", "p.csv", "synth"):
        assert not (places["root"] / name).exists(), name


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_command_refuses_an_unknown_option(command, capsys):
    code, output = call([command, "--no-such-option", "1"], capsys)
    assert code == 2 and output.startswith("usage: python -m utils")
    assert len(error_lines(output)) == 1 and "Traceback" not in output


def test_every_command_has_a_bad_input_case():
    """The commands of issue 10 each have cases above; a command added later gets the generic
    checks (unknown option, UserError as one line) and should add its own line to CASES."""
    covered = {line.split()[0] for line, _, _ in CASES}
    issue_10 = {"check", "split", "download", "synthetic", "balance", "train", "evaluate",
                "predict", "compare", "audit", "reproduce"}
    assert covered >= issue_10 and issue_10 <= set(cli.COMMANDS), issue_10 - covered


def test_unexpected_errors_keep_their_traceback(monkeypatch):
    """A bug is not dressed up as a user error: the exception propagates."""
    from utils.data import check

    def boom(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(check, "run", boom)
    with pytest.raises(ZeroDivisionError):
        cli.main(["check", "."])


def test_user_errors_of_a_new_command_are_one_line_for_free(monkeypatch, capsys):
    from utils.data import check

    def refuse(args):
        raise DataError("some.csv line 3: bad value 'x'; use y")

    monkeypatch.setattr(check, "run", refuse)
    code, output = call(["check", "."], capsys)
    assert code == 1 and output.strip() == "error: some.csv line 3: bad value 'x'; use y"


def test_the_issue_examples_print_no_traceback(synthetic_ham, tmp_path):
    """`python -m utils check DIR --dataset ham10k` and `split ... --fractions 0.5 0.5 0.5` in a
    real process (main printed a ValueError traceback for both)."""
    for argv in (["check", str(synthetic_ham), "--dataset", "ham10k"],
                 ["split", str(synthetic_ham), str(tmp_path / "out.csv"),
                  "--fractions", "0.5", "0.5", "0.5"]):
        result = subprocess.run([sys.executable, "-m", "utils", *argv], cwd=paths.repo_root(),
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert len(error_lines(result.stderr)) == 1, result.stderr


def test_a_failed_train_removes_the_run_folder_it_made(synthetic_ham, tmp_path, capsys,
                                                       monkeypatch):
    """A run that fails after its folder was made (here: ImageNet weights unreachable) leaves
    nothing behind; WeightsUnavailableError was caught nowhere on main."""
    from utils.training import models

    def unreachable(*args, **kwargs):
        raise models.WeightsUnavailableError("ImageNet weights for MobileNetV2: not cached and "
                                             "could not be downloaded; place the file as ...")

    monkeypatch.setattr(models, "_imagenet_backbone", unreachable)
    runs_root = tmp_path / "runs"
    code, output = call(["train", "--data-dir", synthetic_ham, "--weights", "imagenet",
                         "--image-size", "32", "--runs-root", runs_root], capsys)
    assert code == 1 and "error: ImageNet weights for MobileNetV2" in output
    assert "Traceback" not in output
    assert list(runs_root.iterdir()) == []  # the folder this invocation made is gone


def test_a_run_folder_in_use_is_refused_and_left_alone(synthetic_ham, tmp_path, capsys):
    """Another process holds the run folder: a second `train` into it stops at once, naming the
    folder and the holder, and changes nothing in it."""
    from utils import fileio
    from utils.training import runs

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"dataset": "ham10000"}))
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom utils.training import runs\n"
         f"with runs.lock_run({str(run_dir)!r}):\n    print('locked', flush=True)\n"
         "    time.sleep(60)"],
        cwd=paths.repo_root(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = fileio.tree_digest(run_dir)
        code, output = call(["train", "--run-dir", run_dir], capsys)
        assert code == 1 and "is in use by pid" in output and str(holder.pid) in output
        assert "run" in output and "Traceback" not in output
        assert fileio.tree_digest(run_dir) == before
    finally:
        holder.kill()
        holder.wait()
    with runs.lock_run(run_dir):  # the killed holder's lock died with it (stale-safe)
        assert f"pid {__import__('os').getpid()}" in (run_dir / runs.LOCK).read_text()


def _grow_smallest_class(manifest_path: Path, extra: int) -> str:
    """--target that adds `extra` images to the smallest training class (cls=N)."""
    from utils.data.manifest import load_manifest

    counts = load_manifest(manifest_path).query("split == 'train'")["label"].value_counts()
    return f"{counts.idxmin()}={counts.min() + extra}"


@pytest.mark.parametrize("command", ["check", "split", "balance", "predict"])
def test_commands_leave_the_data_folder_byte_identical(command, synthetic_ham, places, tmp_path,
                                                       capsys):
    """Every command that reads a data folder only reads it (train, evaluate --tta, reproduce
    and audit: in their own tests, tests/test_train.py, test_evaluate.py, test_reproduce.py,
    test_audit.py)."""
    from utils import fileio
    from utils.data import datasets

    if command == "predict":
        import keras

        inputs = keras.Input((16, 16, 3))
        x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
        keras.Model(inputs, keras.layers.Dense(datasets.HAM10000.num_classes,
                                               activation="softmax")(x)).save(tmp_path / "m.keras")
    argv = {
        "check": ["check", synthetic_ham, "--workers", "2"],
        "split": ["split", synthetic_ham, tmp_path / "manifest.csv", "--seed", "3"],
        "balance": ["balance", places["manifest"], tmp_path / "balanced", "--target",
                    _grow_smallest_class(places["manifest"], 5), "--workers", "1"],
        "predict": ["predict", tmp_path / "m.keras", synthetic_ham / "HAM10000_images_part_1",
                    tmp_path / "p.csv", "--dataset", "ham10000"],
    }[command]
    before = fileio.tree_digest(synthetic_ham)
    code, output = call(argv, capsys)
    assert code == 0, output
    assert fileio.tree_digest(synthetic_ham) == before

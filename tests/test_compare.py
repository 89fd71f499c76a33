"""`compare`: one table over run folders made from real predictions of tiny trained models."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from utils import cli, compare, evaluate, metrics

pytest.importorskip("keras")


@pytest.fixture(scope="module")
def runs_root(synthetic_ham, tmp_path_factory, make_run):

    root = tmp_path_factory.mktemp("runs")
    make_run(root, synthetic_ham, image_size=24, seed=0)
    make_run(root, synthetic_ham, image_size=32, seed=1)
    unfinished = root / "20260101-000009-synthetic-tiny-99"
    unfinished.mkdir()
    (unfinished / "config.json").write_text("{}")
    return root


def test_compare_two_runs(runs_root, tmp_path, capsys):
    first, second = sorted(p for p in runs_root.iterdir() if (p / "predictions_test.csv").is_file())
    evaluate.evaluate(first, n_boot=200, plots=False)  # one run has metrics.json, one has not
    out = tmp_path / "reports" / "comparison"
    assert cli.main(["compare", "--runs", str(runs_root), "--out", str(out), "--n-boot", "200"]) == 0
    captured = capsys.readouterr()
    assert "unfinished run" in captured.err and "tiny-99" in captured.err
    table = pd.read_csv(out.with_suffix(".csv"))
    assert list(table.columns) == list(compare.COLUMNS)
    assert sorted(table["run"]) == [first.name, second.name]
    assert sorted(table["image_size"]) == [24, 32]
    assert (table["weights"] == "none (from scratch)").all() and (table["epochs"] == 2).all()
    assert table["balanced_accuracy"].is_monotonic_decreasing
    for run_dir in (first, second):
        row = table.set_index("run").loc[run_dir.name]
        expected = metrics.evaluate_predictions(
            metrics.read_predictions(run_dir / "predictions_test.csv"), n_boot=200)["metrics"]
        assert row["balanced_accuracy"] == pytest.approx(expected["balanced_accuracy"]["value"])
        assert row["balanced_accuracy_ci_low"] == pytest.approx(expected["balanced_accuracy"]["ci_low"])
        assert row["macro_auc"] == pytest.approx(expected["macro_auc"]["value"])
        info = json.loads((run_dir / "run_info.json").read_text())
        assert row["train_time_s"] == pytest.approx(info["duration_s"])
    markdown = out.with_suffix(".md").read_text()
    assert markdown.count("\n") == 4 and first.name in markdown and "[" in markdown


def test_compare_without_runs_says_so(tmp_path, capsys):
    assert cli.main(["compare", "--runs", str(tmp_path / "none"), "--out", str(tmp_path / "c")]) == 1
    assert "no finished runs" in capsys.readouterr().err
    assert not (tmp_path / "c.csv").exists()

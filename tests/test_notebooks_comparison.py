"""Models/comparison.ipynb runs with papermill in smoke mode: it trains a tiny run with
utils.training.train and compares it with a run folder made from a tiny conv net's real
predictions. (tests/test_notebooks_build.py checks it is what notebooks/comparison.py builds.)"""
from __future__ import annotations

import nbformat
import pandas as pd
import pytest

from utils import notebooks, paths

NOTEBOOK = paths.repo_root() / "Models" / "comparison.ipynb"


def test_smoke_is_the_default():
    assert notebooks.parameters_of(NOTEBOOK)["SMOKE"] is True


@pytest.mark.slow
@pytest.mark.notebooks
def test_notebook_runs_in_smoke_mode(synthetic_ham, tmp_path, make_run):
    pytest.importorskip("keras")

    runs_dir = tmp_path / "runs"
    existing = make_run(runs_dir, synthetic_ham, seed=0)
    executed = notebooks.execute(
        NOTEBOOK, tmp_path / "comparison.ipynb",
        parameters={"RUNS_DIR": str(runs_dir), "DATA_DIR": str(synthetic_ham), "SMOKE": True,
                    "SMOKE_RUNS": [["mobilenetv2", 32]], "N_BOOT": 200,
                    "OUT": str(tmp_path / "out" / "comparison")},
        cwd=tmp_path, timeout_s=300)
    smoke_run = runs_dir / "smoke-mobilenetv2-32"
    assert (smoke_run / "model.keras").is_file() and (smoke_run / "history.csv").is_file()
    table = pd.read_csv(tmp_path / "out" / "comparison.csv")
    assert sorted(table["run"]) == sorted([existing.name, smoke_run.name])
    assert (tmp_path / "out" / "comparison.md").is_file()
    outputs = [o for c in nbformat.read(str(executed), as_version=4).cells
               if c.cell_type == "code" for o in c.outputs]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 4  # chart, curves, cm, ece
    text = "".join(o.get("text", "") for c in nbformat.read(str(executed), as_version=4).cells
                   for o in c.get("outputs", []))
    assert "findfont" not in text

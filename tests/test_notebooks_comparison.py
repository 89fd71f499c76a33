"""Models/comparison.ipynb: the committed copy is the generated one (no outputs), and it runs
with papermill in smoke mode: it trains a tiny run with utils.train and compares it with a run
folder made from a tiny conv net's real predictions."""
from __future__ import annotations


import nbformat
import pandas as pd
import pytest

from utils import notebooks, paths

NOTEBOOK = paths.repo_root() / "Models" / "comparison.ipynb"


def test_committed_notebook_is_generated_and_its_outputs_are_clean():
    committed = nbformat.read(str(NOTEBOOK), as_version=4)
    built = notebooks.load_spec("comparison").build()
    assert notebooks.sources(committed) == notebooks.sources(built), \
        "re-run scripts/notebooks/comparison.py"
    assert notebooks.output_problems(committed, str(paths.repo_root().parent)) == []
    code = [c for c in committed.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata["tags"]
    assert notebooks.parameters_of(NOTEBOOK)["SMOKE"] is True


@pytest.mark.slow
@pytest.mark.notebooks
def test_notebook_runs_in_smoke_mode(synthetic_ham, tmp_path, make_run):
    pytest.importorskip("keras")

    runs_dir = tmp_path / "runs"
    existing = make_run(runs_dir, synthetic_ham, image_size=24, seed=0)
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
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 4  # chart, curves, cm, reliability
    text = "".join(o.get("text", "") for o in outputs)
    assert "findfont" not in text

"""Data_Augmentated/Preprocessing.ipynb runs with papermill in smoke mode: every step shown on
synthetic images with its known answer, and the ablation table read from a report file.
(tests/test_notebooks_build.py checks it is what notebooks/preprocessing.py builds.)"""
from __future__ import annotations

import json

import nbformat
import pytest

from utils import notebooks, paths

NOTEBOOK = paths.repo_root() / "Data_Augmentated" / "Preprocessing.ipynb"


def _report(path):
    """A minimal ablation summary in the format utils.studies.ablate writes."""
    stats = {"value": 0.5, "ci_low": 0.4, "ci_high": 0.6}
    diff = {"value": 0.01, "ci_low": -0.02, "ci_high": 0.04}
    summary = {"command": "python -m utils ablate --smoke",
               "arms": {"none": {"name": "none"}, "colour": {"name": "colour"}},
               "comparison": {"arms": {
                   "none": {"balanced_accuracy": stats, "difference": None, "per_seed": [0.5]},
                   "colour": {"balanced_accuracy": stats, "difference": diff,
                              "per_seed": [0.51]}}}}
    path.write_text(json.dumps(summary))
    from utils.studies.ablation_report import plot

    plot({"arms": summary["arms"], "comparison": {"reference": "none",
                                                  **summary["comparison"]}},
         path.with_suffix(".png"))
    return path


@pytest.mark.slow
@pytest.mark.notebooks
def test_notebook_runs_in_smoke_mode(tmp_path):
    report = _report(tmp_path / "ablation.json")
    executed = notebooks.execute(NOTEBOOK, tmp_path / "Preprocessing.ipynb",
                                 parameters={"SMOKE": True, "REPORT": str(report)},
                                 cwd=tmp_path, timeout_s=300)
    cells = nbformat.read(str(executed), as_version=4).cells
    outputs = [o for c in cells if c.cell_type == "code" for o in c.outputs]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 5  # 4 steps + report plot
    text = json.dumps(outputs)
    assert "hair mask IoU" in text and "config.json records preprocess" in text
    assert "+0.010 [-0.020, +0.040]" in text  # the table read from the report
    assert not any(o.get("output_type") == "error" for o in outputs)

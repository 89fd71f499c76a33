"""Data_Augmentated/*_balancing.ipynb: both built from the template notebooks/balancing.py and
differing only in DATASET, so one of them (HAM10000) is executed with papermill in smoke mode on
a synthetic dataset."""
from __future__ import annotations

import nbformat
import pytest

from utils import notebooks, paths
from utils.augmentation import balance
from utils.data.manifest import load_manifest

NOTEBOOK_DIR = paths.repo_root() / "Data_Augmentated"
DATASETS = {"HAM10000_balancing.ipynb": "ham10000", "ISIC2019_balancing.ipynb": "isic2019"}


@pytest.mark.parametrize("name", DATASETS)
def test_notebooks_differ_only_in_their_dataset(name):
    path = NOTEBOOK_DIR / name
    assert notebooks.parameters_of(path)["DATASET"] == DATASETS[name]
    assert notebooks.parameters_of(path)["SMOKE"] is False
    template = notebooks.build_notebook("balancing.py")
    assert notebooks.cells_without_parameters(path) == notebooks.cells_without_parameters(template)


@pytest.mark.slow
@pytest.mark.notebooks
def test_notebook_runs_in_smoke_mode(synthetic_ham, tmp_path):
    name = "HAM10000_balancing.ipynb"
    out_dir = tmp_path / "balanced"
    executed = notebooks.execute(
        NOTEBOOK_DIR / name, tmp_path / name,
        parameters={"DATA_DIR": str(synthetic_ham), "SMOKE": True, "OUT_DIR": str(out_dir)},
        cwd=tmp_path, timeout_s=300)
    frame = load_manifest(out_dir / balance.MANIFEST_NAME)
    counts = balance.class_counts(frame)
    assert counts["train_total"].nunique() == 1  # "max": every class as large as the largest
    assert balance.audit_balanced_manifest(frame)["augmented"] > 0
    outputs = [o for c in nbformat.read(str(executed), as_version=4).cells
               if c.cell_type == "code" for o in c.outputs]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3  # grid, counts, examples

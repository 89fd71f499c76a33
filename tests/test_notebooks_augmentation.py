"""Execute the class-balancing notebooks of Data_Augmentated/ with papermill in smoke mode on the
synthetic datasets, and check the committed copies are the generated ones, without outputs."""
from __future__ import annotations

import nbformat
import pytest

from utils import balance, notebooks, paths

NOTEBOOK_DIR = paths.repo_root() / "Data_Augmentated"


@pytest.mark.parametrize("name", ["HAM10000_balancing.ipynb", "ISIC2019_balancing.ipynb"])
def test_committed_notebook_is_generated_and_its_outputs_are_clean(name):
    committed = nbformat.read(str(NOTEBOOK_DIR / name), as_version=4)
    built = notebooks.load_spec("augmentation").build(name)
    assert notebooks.sources(committed) == notebooks.sources(built), \
        "re-run scripts/notebooks/augmentation.py"
    assert notebooks.output_problems(committed, str(paths.repo_root().parent)) == []
    code = [c for c in committed.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata["tags"]


@pytest.mark.slow
@pytest.mark.notebooks
@pytest.mark.parametrize("name, fixture", [("HAM10000_balancing.ipynb", "synthetic_ham"),
                                           ("ISIC2019_balancing.ipynb", "synthetic_isic2019")])
def test_notebook_runs_in_smoke_mode(name, fixture, request, tmp_path):
    data_dir = request.getfixturevalue(fixture)
    out_dir = tmp_path / "balanced"
    executed = notebooks.execute(
        NOTEBOOK_DIR / name, tmp_path / name,
        parameters={"DATA_DIR": str(data_dir), "SMOKE": True, "OUT_DIR": str(out_dir)},
        cwd=tmp_path, timeout_s=300)
    frame = balance.read_manifest(out_dir / balance.MANIFEST_NAME)
    counts = balance.class_counts(frame)
    assert counts["train_total"].nunique() == 1  # "max": every class as large as the largest
    assert balance.audit_balanced_manifest(frame)["augmented"] > 0
    outputs = [o for c in nbformat.read(str(executed), as_version=4).cells
               if c.cell_type == "code" for o in c.outputs]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3  # grid, counts, examples

"""Models/*.ipynb: identical except the parameters cell, and each runs top to bottom with
papermill in smoke configuration (tiny image = backbone minimum or 64 px, 1 epoch, weights=None,
the 300-image synthetic dataset)."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from utils import notebooks, paths
from utils.backbones import list_backbones

# The per-backbone notebooks (Models/ also holds others, e.g. comparison.ipynb).
MODELS = sorted(path for path in (paths.repo_root() / "Models").glob("*.ipynb")
                if path.stem in list_backbones())
PAPER_BACKBONES = {"VGG16", "ResNet50", "InceptionV3", "DenseNet201"}
SMOKE_BUDGET_S = 60  # per notebook on the 2-core CI machine (DenseNet201/InceptionResNetV2 trace longer)


def test_every_paper_backbone_has_a_notebook():
    assert PAPER_BACKBONES <= {path.stem for path in MODELS}


def test_notebooks_identical_except_parameters():
    reference = notebooks.cells_without_parameters(MODELS[0])
    for path in MODELS[1:]:
        assert notebooks.cells_without_parameters(path) == reference, path.name
    for path in MODELS:
        params = notebooks.parameters_of(path)
        assert params["BACKBONE"] == path.stem and params["SMOKE"] is False


def test_notebooks_match_their_spec_script():
    """The committed notebooks are what scripts/notebooks/models.py writes (no hand edits);
    rendered outputs (scripts/render_notebooks.py) hold no machine path, error or real image."""
    module = notebooks.load_spec("models")
    for path in MODELS:
        built = notebooks.build_notebook(module.TITLE, module.parameters(path.stem),
                                         module.IMPORTS, module.STEPS, module.SUMMARY)
        assert notebooks.sources(built) == notebooks.sources(path), path.name
        assert notebooks.output_problems(path, str(paths.repo_root().parent)) == [], path.name


@pytest.mark.slow
@pytest.mark.notebooks
@pytest.mark.parametrize("path", MODELS, ids=[p.stem for p in MODELS])
def test_notebook_runs_in_smoke_mode(path: Path, synthetic_ham, tmp_path):
    started = time.time()
    output = notebooks.execute(
        path, tmp_path / path.name, cwd=tmp_path,
        parameters={"SMOKE": True, "DATA_DIR": str(synthetic_ham), "IMAGE_SIZE": None,
                    "RUNS_DIR": str(tmp_path / "runs")})
    elapsed = time.time() - started
    print(f"{path.stem}: {elapsed:.0f} s")
    executed = output.read_text()
    assert "run folder:" in executed and "predictions_test.csv" in executed
    (run_dir,) = (tmp_path / "runs").iterdir()  # nothing written into the repository's runs/
    assert (run_dir / "model.keras").is_file() and (run_dir / "predictions_test.csv").is_file()

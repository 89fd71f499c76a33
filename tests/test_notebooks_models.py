"""Models/<Backbone>.ipynb: one notebook per backbone of the registry, all built from the template
notebooks/models.py and differing only in the parameters cell (BACKBONE and the registry's
IMAGE_SIZE). Since they share every code cell, one of them is executed: the README's smoke
command, exactly as written, which must finish in about a minute (tiny synthetic data, the
backbone's minimum size, 1 epoch, nothing written into the repository)."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from utils import notebooks, paths
from utils.training.backbones import get_backbone

MODELS = [t for t in notebooks.targets() if t.spec == "models.py"]
PAPER_BACKBONES = {"VGG16", "ResNet50", "InceptionV3", "DenseNet201"}
SMOKE_LIMIT_S = 150  # measured 59 s for DenseNet201 on the shared 2-core machine
README_SMOKE = re.compile(r"^(\S*papermill \S+\.ipynb \S+ -p SMOKE True)\s*(#.*)?$", re.M)


def test_every_paper_backbone_has_a_notebook():
    assert PAPER_BACKBONES <= {Path(t.path).stem for t in MODELS}


@pytest.mark.parametrize("target", MODELS, ids=[Path(t.path).stem for t in MODELS])
def test_parameters_resolve_via_the_registry_and_code_is_the_template(target):
    path = paths.repo_root() / target.path
    params = notebooks.parameters_of(path)
    spec = get_backbone(params["BACKBONE"])
    assert spec.name == path.stem and params["IMAGE_SIZE"] == spec.default_size
    assert params["SMOKE"] is False and params["WEIGHTS"] == "imagenet"
    template = notebooks.build_notebook("models.py")
    assert notebooks.cells_without_parameters(path) == notebooks.cells_without_parameters(template)


@pytest.mark.parametrize("target", MODELS, ids=[Path(t.path).stem for t in MODELS])
def test_rendered_notebook_printed_the_config_of_the_parameters_it_shows(target):
    path = paths.repo_root() / target.path
    if not notebooks.has_outputs(path):
        pytest.skip(f"{target.path} has no rendered outputs (scripts/render_notebooks.py)")
    assert notebooks.printed_config(path) is not None, "the config cell has no output"
    assert notebooks.config_mismatches(path) == []


def readme_smoke_command() -> list[str]:
    """The README's smoke command, e.g. `.venv/bin/papermill Models/X.ipynb out.ipynb -p SMOKE
    True`, as argv."""
    match = README_SMOKE.search((paths.repo_root() / "README.md").read_text(encoding="utf-8"))
    assert match, "README.md no longer shows a `papermill ... -p SMOKE True` command"
    return shlex.split(match.group(1))


@pytest.mark.slow
@pytest.mark.notebooks
def test_readme_smoke_command_runs_in_about_a_minute(tmp_path):
    """Run the README's command as written (from the repository root), only writing the
    executed copy to a temporary folder instead of ./out.ipynb; the notebook's own smoke folder
    goes to the temporary folder too (TMPDIR)."""
    papermill, notebook, _out, *options = readme_smoke_command()
    assert Path(papermill).name == "papermill" and options == ["-p", "SMOKE", "True"]
    executable = Path(sys.executable).parent / "papermill"
    output = tmp_path / "out.ipynb"
    env = dict(os.environ, TMPDIR=str(tmp_path))
    started = time.time()
    result = subprocess.run([str(executable), notebook, str(output), *options],
                            cwd=paths.repo_root(), env=env, capture_output=True, text=True,
                            timeout=600)
    elapsed = time.time() - started
    print(f"{' '.join(readme_smoke_command())}: {elapsed:.0f} s")
    assert result.returncode == 0, result.stderr[-3000:]
    executed = nbformat.read(str(output), as_version=4)
    config = notebooks.printed_config(executed)
    spec = get_backbone(Path(notebook).stem)
    assert (config["backbone"], config["image_size"], config["weights"], config["epochs"],
            config["smoke"]) == (spec.name, spec.min_size, None, 1, True)
    text = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    run_dir = Path(re.findall(r"^run folder: (.+)$", text, re.M)[-1])  # the notebook's last cell
    for written in (run_dir, Path(config["data_dir"])):
        assert written.is_relative_to(tmp_path), f"{written} is not in the temporary folder"
    assert (run_dir / "model.keras").is_file() and (run_dir / "predictions_test.csv").is_file()
    # per-class results with CIs, TensorBoard's place, and the figures (curves, confusion, CAM)
    shown = text + "".join(o.get("data", {}).get("text/plain", "") for c in executed.cells
                           for o in c.get("outputs", []))
    for expected in ("precision", "recall", "specificity", "f1", "tensorboard --logdir"):
        assert expected in shown, expected
    figures = sum("image/png" in o.get("data", {}) for c in executed.cells
                  for o in c.get("outputs", []))
    assert figures >= 3, f"{figures} figures (training curves, confusion matrix, Grad-CAM)"
    assert elapsed < SMOKE_LIMIT_S, f"smoke run took {elapsed:.0f} s (README: about a minute)"

"""utils.notebooks: the notebook sources in notebooks/ lint and compile, every committed notebook
is what its source builds, and the checks of rendered notebooks catch what they should."""
from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from utils import notebooks, paths

SPECS = sorted(notebooks.spec_dir().glob("*.py"))
TARGETS = notebooks.targets()


def test_every_committed_notebook_has_a_source_and_every_source_a_notebook():
    committed = {p.relative_to(paths.repo_root()).as_posix()
                 for p in notebooks.iter_repository_notebooks(paths.repo_root())}
    assert committed == {t.path for t in TARGETS}
    assert {notebooks.spec_dir() / t.spec for t in TARGETS} == set(SPECS)


@pytest.mark.parametrize("spec", SPECS, ids=[p.name for p in SPECS])
def test_sources_compile_and_have_a_documented_parameters_cell(spec: Path):
    compile(spec.read_text(encoding="utf-8"), str(spec), "exec")  # as py_compile, no .pyc
    cells = notebooks.read_spec(spec)
    (parameters,) = [source for _, source, tags in cells if "parameters" in tags]
    notebooks.parse_parameters(parameters, where=spec.name)  # one `NAME = literal  # comment` each
    assert cells[0][0] == "markdown" and cells[0][1].startswith("# ")  # title first


def test_sources_pass_ruff():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -r requirements.txt)")
    result = subprocess.run(
        [ruff, "check", "--no-cache", "--line-length", "100", "--extend-select", "E501,I",
         *map(str, SPECS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("target", TARGETS, ids=[t.path for t in TARGETS])
def test_committed_notebook_is_what_its_source_builds(target: notebooks.Target):
    """Sources (papermill's injected-parameters cell aside) equal the build; rendered outputs
    hold no machine path, error or real image id, and agree with the parameters shown."""
    path = paths.repo_root() / target.path
    committed = nbformat.read(str(path), as_version=4)
    built = notebooks.build_target(target)
    assert notebooks.sources(committed) == notebooks.sources(built), \
        f"{target.path}: run scripts/build_notebooks.py"
    assert [c.id for c in committed.cells] == [f"cell-{i}" for i in range(len(committed.cells))]
    assert notebooks.output_problems(committed, str(paths.repo_root().parent)) == []
    notebooks.shown_parameters(committed)  # raises unless an injected cell follows parameters
    assert notebooks.config_mismatches(committed) == []
    assert len(notebooks.injected_cells(committed)) <= 1


def test_build_is_stable_and_keeps_comments():
    first, second = (notebooks.build_notebook("models.py", {"BACKBONE": "VGG16"}) for _ in "ab")
    assert nbformat.writes(first) == nbformat.writes(second)
    assert [c.id for c in first.cells] == [f"cell-{i}" for i in range(len(first.cells))]
    (cell,) = [c for c in first.cells if "parameters" in c.metadata.get("tags", [])]
    assert 'BACKBONE = "VGG16"  # a name from' in cell.source


def test_set_parameters_replaces_values_only():
    source = 'A = 1  # one\nB = "x#y"  # text with a hash\nC = None  # nothing'
    assert notebooks.set_parameters(source, {"B": "z", "C": [1, 2]}) == \
        'A = 1  # one\nB = "z"  # text with a hash\nC = [1, 2]  # nothing'
    with pytest.raises(ValueError, match="no parameter"):
        notebooks.set_parameters(source, {"D": 1})


@pytest.mark.parametrize("source, message", [
    ("A = 1", "comment"),
    ("a = 1  # lower", "UPPER_CASE"),
    ("A = len([])  # call", "plain literal"),
    ("A = [\n 1]  # two lines", "one line"),
    ("import os  # no", "only"),
])
def test_parameters_cell_rules(source, message):
    with pytest.raises(ValueError, match=message):
        notebooks.parse_parameters(source)


def _rendered(printed: dict, injected: str | None) -> nbformat.NotebookNode:
    """The MobileNetV2 notebook as if rendered: `printed` as the config cell's output."""
    notebook = notebooks.build_notebook("models.py")
    cells = []
    for cell in notebook.cells:
        if cell.cell_type == "code" and cell.source.endswith("config.to_dict()"):
            cell.outputs = [nbformat.v4.new_output(
                "execute_result", data={"text/plain": repr(printed)}, execution_count=1)]
        cells.append(cell)
        if injected is not None and "parameters" in cell.metadata.get("tags", []):
            cells.append(nbformat.v4.new_code_cell(
                injected, metadata={"tags": ["injected-parameters"]}))
    notebook.cells = cells
    return notebook


def test_config_mismatch_is_caught():
    from utils.training.config import preset

    config = preset("ham10000", backbone="MobileNetV2", weights=None, image_size=75,
                    epochs=3).resolve(gpu_visible=False).to_dict()
    injected = "# Parameters\nWEIGHTS = None\nIMAGE_SIZE = 75\nEPOCHS = 3\n"
    assert notebooks.config_mismatches(_rendered(config, injected)) == []
    # the bug of issue 10: the injected cell dropped, the parameters cell shows 224 / imagenet
    problems = notebooks.config_mismatches(_rendered(config, None))
    assert len(problems) == 3 and any("IMAGE_SIZE = 224" in p for p in problems)
    assert notebooks.config_mismatches(_rendered(dict(config, seed=1), injected)) == [
        "SEED = 0 shown, but the printed config has seed=1"]


def test_keep_outputs_only_while_the_code_is_unchanged():
    target = notebooks.target_of("Models/MobileNetV2.ipynb")
    rendered = _rendered({"seed": 0}, "# Parameters\nSEED = 0\n")
    kept = notebooks.keep_outputs(notebooks.build_target(target), copy.deepcopy(rendered))
    assert notebooks.sources(kept) == notebooks.sources(rendered)
    assert notebooks.printed_config(kept) == {"seed": 0} and notebooks.injected_cells(kept)
    edited = notebooks.build_target(target)  # a markdown edit keeps the outputs
    edited.cells[0].source += "\n\nOne more sentence."
    kept = notebooks.keep_outputs(edited, copy.deepcopy(rendered))
    assert notebooks.printed_config(kept) == {"seed": 0}
    assert kept.cells[0].source.endswith("One more sentence.")
    changed = notebooks.build_notebook("models.py", {"SEED": 1})  # a code edit drops them
    dropped = notebooks.keep_outputs(changed, copy.deepcopy(rendered))
    assert not notebooks.has_outputs(dropped) and not notebooks.injected_cells(dropped)


def test_build_script_check_passes():
    """`scripts/build_notebooks.py --check` (what a contributor runs) agrees with the tests."""
    result = subprocess.run([sys.executable, "scripts/build_notebooks.py", "--check"],
                            cwd=paths.repo_root(), capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

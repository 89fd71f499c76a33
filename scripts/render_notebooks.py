"""Execute committed notebooks on the synthetic default and store their outputs in place.

    .venv/bin/python scripts/render_notebooks.py            # all notebooks (~15 min on 2 cores)
    .venv/bin/python scripts/render_notebooks.py Models/VGG16.ipynb

Reviewers then read rendered results on the forge without running anything. Each notebook is
built from its source in notebooks/ (utils.notebooks.build_target) and executed with papermill
with RENDER_PARAMETERS; papermill's `injected-parameters` cell is kept right after the
parameters cell, so the parameters a reader sees are the ones that produced the outputs (and
"Run all" in Jupyter reproduces them; `papermill -p ...` replaces that cell). Only the synthetic
default is used (DATA_DIR=None), so no pixel of real, non-commercial data enters git. The script
refuses to write a notebook whose outputs hold an absolute path of this machine, an error or a
real image id, or whose printed config disagrees with the parameters it shows.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import nbformat

from utils import notebooks, paths

# Parameters of the rendered runs: synthetic data, trained from scratch (ImageNet weights cannot
# be assumed), small images and few epochs so all notebooks render in minutes on a CPU.
RENDER_PARAMETERS: dict[str, dict] = {
    "Data_Augmentated": {"DATA_DIR": None, "SMOKE": False},
    "Data_Augmentated/Preprocessing.ipynb": {"SMOKE": False},  # synthetic images only
    "Models/comparison.ipynb": {"DATA_DIR": None, "SMOKE": False,
                                "RUNS_DIR": "runs/rendered",  # the runs of the Models below
                                "OUT": "runs/rendered/comparison"},
    "Models": {"DATA_DIR": None, "WEIGHTS": None, "IMAGE_SIZE": 75, "EPOCHS": 3, "SMOKE": False,
               "RUNS_DIR": "runs/rendered"},
}

# First line of the injected cell (papermill writes "# Parameters").
INJECTED_HEADER = ("# Parameters of the outputs below (scripts/render_notebooks.py, synthetic data:"
                   " not a result).\n# Delete this cell, or pass papermill -p, to run with the"
                   " parameters above.")


def parameters_for(path: Path) -> dict:
    """The render parameters of one notebook (most specific entry wins)."""
    relative = path.resolve().relative_to(paths.repo_root()).as_posix()
    if relative in RENDER_PARAMETERS:
        return RENDER_PARAMETERS[relative]
    return RENDER_PARAMETERS[relative.split("/")[0]]


def clean(notebook: nbformat.NotebookNode, source: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Keep outputs (less stderr) and the injected-parameters cell; drop papermill/timing
    metadata; restore the built sources; stable ids."""
    notebook.metadata.pop("papermill", None)
    injected = notebooks.injected_cells(notebook)
    cells = [c for c in notebook.cells if notebooks.INJECTED_TAG not in c.metadata.get("tags", [])]
    if len(cells) != len(source.cells) or len(injected) > 1:
        raise RuntimeError("executed notebook has a different number of cells than its source")
    for cell in injected:
        cell.metadata = {"tags": [notebooks.INJECTED_TAG]}
        cell.source = cell.source.replace("# Parameters", INJECTED_HEADER, 1)
    for cell, original in zip(cells, source.cells):
        cell.metadata = original.metadata
        cell.source = original.source
    for cell in notebook.cells:
        if cell.cell_type == "code":  # stderr holds progress bars and library warnings only
            cell.outputs = [o for o in cell.outputs
                            if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
    return notebooks.normalise(notebook)


def render(path: Path) -> Path:
    """Build one notebook from notebooks/, execute it with its render parameters and write it
    with outputs."""
    path = path.resolve()
    source = notebooks.build_target(notebooks.target_of(path))
    with tempfile.TemporaryDirectory() as tmp:
        built = notebooks.write_notebook(Path(tmp) / "built" / path.name, source)
        executed = notebooks.execute(built, Path(tmp) / path.name, parameters_for(path),
                                     cwd=paths.repo_root())
        notebook = clean(nbformat.read(str(executed), as_version=4), source)
    problems = (notebooks.output_problems(notebook, str(paths.repo_root().parent))
                + notebooks.config_mismatches(notebook))
    if problems:
        raise RuntimeError(f"{paths.display(path)}: not written:\n  " + "\n  ".join(problems)
                           + "\n(print paths with utils.paths.display)")
    return notebooks.write_notebook(path, notebook)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="notebooks to render (default: all in Data_Augmentated/ and Models/)")
    args = parser.parse_args(argv)
    targets = [p.resolve() for p in args.notebooks] or [
        paths.repo_root() / t.path for t in notebooks.targets()]
    for path in targets:
        print(f"rendering {paths.display(path)} ...", flush=True)
        render(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Execute every committed notebook on the synthetic default and store its outputs in place.

    .venv/bin/python scripts/render_notebooks.py            # all notebooks (~15 min on 2 cores)
    .venv/bin/python scripts/render_notebooks.py Models/VGG16.ipynb

Reviewers then read rendered results on the forge without running anything. Only the synthetic
default is used (DATA_DIR=None), so no pixel of real, non-commercial data enters git; the script
refuses to write a notebook whose outputs hold an absolute path of this machine. The code cells
stay exactly the generated ones (tests compare sources, not outputs).
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
    "Data_Augmentated": {"SMOKE": False},
    "Models/comparison.ipynb": {"SMOKE": False, "RUNS_DIR": "runs/rendered",  # the runs below
                                "OUT": "runs/rendered/comparison"},
    "Models": {"WEIGHTS": None, "IMAGE_SIZE": 75, "EPOCHS": 3, "SMOKE": False,
               "RUNS_DIR": "runs/rendered"},
}


def parameters_for(path: Path) -> dict:
    """The render parameters of one notebook (most specific entry wins)."""
    relative = path.relative_to(paths.repo_root()).as_posix()
    if relative in RENDER_PARAMETERS:
        return RENDER_PARAMETERS[relative]
    return RENDER_PARAMETERS[relative.split("/")[0]]


def clean(notebook: nbformat.NotebookNode, source: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Keep outputs (less stderr), drop papermill/timing metadata, restore sources and ids."""
    notebook.metadata.pop("papermill", None)
    cells = [c for c in notebook.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    if len(cells) != len(source.cells):
        raise RuntimeError("executed notebook has a different number of cells than its source")
    for cell, original in zip(cells, source.cells):
        cell.metadata = original.metadata
        cell.source = original.source
        if cell.cell_type == "code":  # stderr holds progress bars and library warnings only
            cell.outputs = [o for o in cell.outputs
                            if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
    notebook.cells = cells
    return notebooks.normalise(notebook)


def render(path: Path) -> Path:
    """Execute one notebook with its render parameters and write it back with outputs."""
    source = nbformat.read(str(path), as_version=4)
    with tempfile.TemporaryDirectory() as tmp:
        executed = notebooks.execute(path, Path(tmp) / path.name, parameters_for(path),
                                     cwd=paths.repo_root())
        notebook = clean(nbformat.read(str(executed), as_version=4), source)
    text = nbformat.writes(notebook)
    machine_root = str(paths.repo_root().parent)
    if machine_root in text:
        raise RuntimeError(f"{paths.display(path)}: outputs contain the machine path "
                           f"{machine_root}; print paths with utils.paths.display")
    return notebooks.write_notebook(path, notebook)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="notebooks to render (default: all in Data_Augmentated/ and Models/)")
    args = parser.parse_args(argv)
    targets = [p.resolve() for p in args.notebooks] or list(
        notebooks.iter_repository_notebooks(paths.repo_root()))
    for path in targets:
        print(f"rendering {paths.display(path)} ...", flush=True)
        render(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

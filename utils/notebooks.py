"""Build, check and execute the repository's notebooks.

Notebooks are generated from short specifications (see `notebooks_spec/`), so the per-backbone
notebooks stay identical except for their `parameters` cell and every notebook opens the same way:
title and licence markdown, a `parameters` cell of plain literals, one imports cell, then short
markdown/code pairs. Outputs are stripped when written, so git diffs show only code changes.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from utils import fileio

KERNEL_SPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


def parameters_source(params: dict[str, Any]) -> str:
    """Python source of a papermill parameters cell: one `NAME = literal` line per parameter."""
    lines = []
    for name, value in params.items():
        if not name.isupper():
            raise ValueError(f"notebook parameter {name!r} must be UPPER_CASE")
        if not isinstance(value, (str, int, float, bool, type(None), list, tuple)):
            raise ValueError(f"notebook parameter {name!r} must be a plain literal, got {value!r}")
        lines.append(f"{name} = {value!r}")
    return "\n".join(lines)


def build_notebook(
    title_markdown: str,
    params: dict[str, Any],
    imports: str,
    steps: Sequence[tuple[str, str]],
    summary_markdown: str,
) -> nbformat.NotebookNode:
    """A notebook: title, tagged parameters cell, imports cell, (markdown, code) steps, summary."""
    cells = [
        new_markdown_cell(title_markdown.strip()),
        new_code_cell(parameters_source(params), metadata={"tags": ["parameters"]}),
        new_code_cell(imports.strip()),
    ]
    for markdown, code in steps:
        if markdown:
            cells.append(new_markdown_cell(markdown.strip()))
        if code:
            cells.append(new_code_cell(code.strip()))
    cells.append(new_markdown_cell(summary_markdown.strip()))
    notebook = new_notebook(cells=cells, metadata={"kernelspec": KERNEL_SPEC,
                                                   "language_info": {"name": "python"}})
    return normalise(notebook)


def normalise(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Stable cell ids (cell-0, cell-1, …) so regenerating a notebook yields no spurious diff."""
    for index, cell in enumerate(notebook.cells):
        cell["id"] = f"cell-{index}"
    return notebook


def write_notebook(path: str | os.PathLike, notebook: nbformat.NotebookNode) -> Path:
    """Validate and write a notebook atomically (1-space JSON indent, as Jupyter writes)."""
    nbformat.validate(notebook)
    return fileio.write_text(path, nbformat.writes(notebook) + "\n")


def parameters_of(path: str | os.PathLike) -> dict[str, Any]:
    """The literals of a notebook's `parameters` cell (evaluated safely with ast.literal_eval)."""
    import ast

    notebook = nbformat.read(str(path), as_version=4)
    for cell in notebook.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            values: dict[str, Any] = {}
            for node in ast.parse(cell.source).body:
                if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
                    raise ValueError(f"{path}: the parameters cell may hold only assignments")
                values[node.targets[0].id] = ast.literal_eval(node.value)
            return values
    raise ValueError(f"{path}: no cell tagged 'parameters'; add the tag in Jupyter's cell toolbar")


def cells_without_parameters(path: str | os.PathLike) -> list[str]:
    """Sources of every cell except the parameters cell (to compare per-backbone notebooks)."""
    notebook = nbformat.read(str(path), as_version=4)
    return [
        cell.source
        for cell in notebook.cells
        if "parameters" not in cell.get("metadata", {}).get("tags", [])
    ]


def execute(
    path: str | os.PathLike,
    output_path: str | os.PathLike,
    parameters: dict[str, Any] | None = None,
    cwd: str | os.PathLike | None = None,
    timeout_s: int = 1800,
) -> Path:
    """Run a notebook top to bottom with papermill and write the executed copy."""
    import papermill

    papermill.execute_notebook(
        str(path),
        str(output_path),
        parameters=parameters or {},
        cwd=str(cwd or Path(path).parent),
        kernel_name="python3",
        progress_bar=False,
        execution_timeout=timeout_s,
    )
    return Path(output_path)


def strip_outputs(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of the notebook without outputs or execution counts."""
    clean = json.loads(json.dumps(notebook))
    clean = nbformat.from_dict(clean)
    for cell in clean.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
    clean.metadata.pop("papermill", None)
    return clean


def iter_repository_notebooks(root: str | os.PathLike) -> Iterable[Path]:
    """Every committed notebook of the repository (Data_Augmentated/ and Models/)."""
    root = Path(root)
    for folder in ("Data_Augmentated", "Models"):
        yield from sorted((root / folder).glob("*.ipynb"))


def load_spec(family: str):
    """The notebook spec module scripts/notebooks/<family>.py (it builds the notebooks)."""
    import importlib.util

    from utils import paths

    path = paths.repo_root() / "scripts" / "notebooks" / f"{family}.py"
    spec = importlib.util.spec_from_file_location(f"notebook_spec_{family}", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"no notebook spec at {paths.display(path)}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sources(notebook: nbformat.NotebookNode | str | os.PathLike) -> list[tuple[str, str, tuple]]:
    """(cell type, source, tags) of every cell: what a notebook *says*, outputs aside."""
    if not isinstance(notebook, nbformat.NotebookNode):
        notebook = nbformat.read(str(notebook), as_version=4)
    return [(cell.cell_type, cell.source, tuple(cell.get("metadata", {}).get("tags", [])))
            for cell in notebook.cells]


def output_problems(notebook: nbformat.NotebookNode | str | os.PathLike,
                    machine_root: str) -> list[str]:
    """Why committed outputs would be unacceptable: machine paths, errors, real image ids."""
    import re

    if not isinstance(notebook, nbformat.NotebookNode):
        notebook = nbformat.read(str(notebook), as_version=4)
    problems = []
    for index, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            text = json.dumps(output)
            if machine_root in text:
                problems.append(f"cell {index}: output holds the machine path {machine_root}")
            if output.get("output_type") == "error":
                problems.append(f"cell {index}: output is an error ({output.get('ename')})")
            if re.search(r"ISIC_\d{7}", text):
                problems.append(f"cell {index}: output names a real ISIC image (real data)")
    return problems

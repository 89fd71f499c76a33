"""Build, check and execute the repository's notebooks.

Every notebook of `Models/` and `Data_Augmentated/` is built from a source file in `notebooks/`:
a jupytext percent-format Python file (`# %%` code cells, `# %% [markdown]` cells written as
comments, the papermill parameters cell marked `# %% tags=["parameters"]`) that ruff lints and
`python -m py_compile` compiles like any module. `build_notebook` reads such a file as *text*
(jupytext; the file is never executed), sets per-notebook parameters and returns the notebook
with stable cell ids; `targets()` says which notebook comes from which source with which
parameters. So the per-backbone `Models/<Backbone>.ipynb` notebooks come from one template and
differ only in their parameters cell (BACKBONE and the registry's IMAGE_SIZE), and the two
`Data_Augmentated/` notebooks only in DATASET.

    .venv/bin/python scripts/build_notebooks.py       # rebuild every notebook from notebooks/
    .venv/bin/python scripts/render_notebooks.py      # execute them on synthetic data (~15 min)

Committed notebooks carry outputs rendered by `scripts/render_notebooks.py` on the synthetic
stand-in (never real data), with papermill's `injected-parameters` cell kept after the
parameters cell, so the parameters shown are the ones that produced the outputs. The build keeps
those outputs while the code cells are unchanged and drops them otherwise (re-render then).
"""
from __future__ import annotations

import ast
import io
import json
import os
import re
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from utils import fileio, paths

KERNEL_SPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}
PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"  # papermill's cell holding the parameters of a run
SPEC_FORMAT = "py:percent"


def spec_dir() -> Path:
    """The notebook sources (jupytext percent-format .py files)."""
    return paths.repo_root() / "notebooks"


@dataclass(frozen=True)
class Target:
    """One committed notebook: where it goes, its source in notebooks/, its parameter values."""

    path: str  # relative to the repository, e.g. "Models/VGG16.ipynb"
    spec: str  # file name in notebooks/, e.g. "models.py"
    parameters: Mapping[str, Any] = field(default_factory=dict)  # overrides of the template


def targets() -> list[Target]:
    """Every committed notebook and how it is built (one per backbone of the registry)."""
    from utils.training.backbones import get_backbone, list_backbones

    models = [Target(f"Models/{name}.ipynb", "models.py",
                     {"BACKBONE": name, "IMAGE_SIZE": get_backbone(name).default_size})
              for name in list_backbones()]
    return models + [
        Target("Models/comparison.ipynb", "comparison.py"),
        Target("Data_Augmentated/HAM10000_balancing.ipynb", "balancing.py",
               {"DATASET": "ham10000"}),
        Target("Data_Augmentated/ISIC2019_balancing.ipynb", "balancing.py",
               {"DATASET": "isic2019"}),
        Target("Data_Augmentated/Preprocessing.ipynb", "preprocessing.py"),
    ]


def target_of(path: str | os.PathLike) -> Target:
    """The Target of a committed notebook path (absolute, or relative to the repository)."""
    relative = Path(path)
    if relative.is_absolute():
        relative = relative.resolve().relative_to(paths.repo_root())
    for target in targets():
        if Path(target.path) == relative:
            return target
    raise ValueError(f"{relative}: not a notebook built from notebooks/ (see utils.notebooks)")


# --------------------------------------------------------------------------- parameters cell
def _comments_by_line(source: str) -> dict[int, str]:
    """{line number: comment text} of a piece of Python source (1-based, as ast numbers lines)."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return {token.start[0]: token.string for token in tokens if token.type == tokenize.COMMENT}


def parse_parameters(source: str, where: str = "parameters cell") -> dict[str, Any]:
    """The literals of a parameters cell; ValueError unless every statement is one line
    `NAME = literal  # comment` (UPPER_CASE name, plain literal, one comment per parameter)."""
    comments = _comments_by_line(source)
    values: dict[str, Any] = {}
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)):
            raise ValueError(f"{where}: line {node.lineno}: only `NAME = literal` assignments")
        name = node.targets[0].id
        if not name.isupper():
            raise ValueError(f"{where}: parameter {name} must be UPPER_CASE")
        try:
            values[name] = ast.literal_eval(node.value)
        except ValueError:
            raise ValueError(f"{where}: {name} must be a plain literal") from None
        if node.lineno != node.end_lineno or node.lineno not in comments:
            raise ValueError(f"{where}: {name} must fit on one line with a `# comment`")
    return values


def _literal(value: Any) -> str:
    """Python source of a literal; strings in double quotes, as ruff formats them."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)


def set_parameters(source: str, overrides: Mapping[str, Any], where: str = "template") -> str:
    """The parameters-cell source with the values of `overrides` replaced, comments kept."""
    parse_parameters(source, where)
    lines = source.split("\n")
    unknown = set(overrides)
    for node in ast.parse(source).body:
        name = node.targets[0].id
        if name in overrides:
            text = _literal(overrides[name])
            if ast.literal_eval(text) != overrides[name]:
                raise ValueError(f"{where}: {name}={overrides[name]!r} is not a plain literal")
            line = lines[node.lineno - 1]
            lines[node.lineno - 1] = (line[:node.value.col_offset] + text
                                      + line[node.value.end_col_offset:])
            unknown.discard(name)
    if unknown:
        raise ValueError(f"{where}: no parameter(s) {sorted(unknown)} in its parameters cell")
    return "\n".join(lines)


# --------------------------------------------------------------------------- build
def read_spec(path: str | os.PathLike) -> list[tuple[str, str, tuple[str, ...]]]:
    """(cell type, source, tags) of every cell of a percent-format source file (read as text)."""
    import jupytext

    notebook = jupytext.reads(Path(path).read_text(encoding="utf-8"), fmt=SPEC_FORMAT)
    return [(cell.cell_type, cell.source, tuple(cell.metadata.get("tags", ())))
            for cell in notebook.cells]


def build_notebook(spec: str | os.PathLike, parameters: Mapping[str, Any] | None = None
                   ) -> nbformat.NotebookNode:
    """The notebook of a source file in notebooks/ (a name there, or a path) with the given
    parameter values; exactly one cell must be tagged `parameters`."""
    path = Path(spec)
    if len(path.parts) == 1:  # a bare name: a file of notebooks/
        path = spec_dir() / path
    cells = []
    for cell_type, source, tags in read_spec(path):
        if PARAMETERS_TAG in tags:
            source = set_parameters(source, parameters or {}, where=paths.display(path))
        metadata = {"tags": list(tags)} if tags else {}
        make = new_markdown_cell if cell_type == "markdown" else new_code_cell
        cells.append(make(source, metadata=metadata))
    if sum(PARAMETERS_TAG in c.metadata.get("tags", []) for c in cells) != 1:
        raise ValueError(f"{paths.display(path)}: needs exactly one `# %% tags=[\"parameters\"]`")
    notebook = new_notebook(cells=cells, metadata={"kernelspec": KERNEL_SPEC,
                                                   "language_info": {"name": "python"}})
    return normalise(notebook)


def build_target(target: Target) -> nbformat.NotebookNode:
    return build_notebook(target.spec, target.parameters)


def normalise(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Stable cell ids (cell-0, cell-1, …) so regenerating a notebook yields no spurious diff."""
    for index, cell in enumerate(notebook.cells):
        cell["id"] = f"cell-{index}"
    return notebook


def keep_outputs(built: nbformat.NotebookNode, committed: nbformat.NotebookNode | None
                 ) -> nbformat.NotebookNode:
    """`built` with the rendered outputs (and injected-parameters cell) of `committed` when both
    have the same code cells (markdown edits keep outputs); else `built` as it is, no outputs."""
    if committed is None or _code_sources(committed) != _code_sources(built):
        return built
    rendered = iter(c for c in committed.cells
                    if c.cell_type == "code" and not _is_injected(c))
    cells = []
    for cell in built.cells:
        if cell.cell_type == "code":
            old = next(rendered)
            cell.outputs, cell.execution_count = old.outputs, old.execution_count
        cells.append(cell)
        if PARAMETERS_TAG in cell.metadata.get("tags", []):
            cells.extend(c for c in committed.cells if _is_injected(c))
    built.cells = cells
    built.metadata = committed.metadata
    return normalise(built)


def write_notebook(path: str | os.PathLike, notebook: nbformat.NotebookNode) -> Path:
    """Validate and write a notebook atomically (1-space JSON indent, as Jupyter writes)."""
    nbformat.validate(notebook)
    return fileio.write_text(path, nbformat.writes(notebook) + "\n")


# --------------------------------------------------------------------------- reading notebooks
def _read(notebook: nbformat.NotebookNode | str | os.PathLike) -> nbformat.NotebookNode:
    if isinstance(notebook, nbformat.NotebookNode):
        return notebook
    return nbformat.read(str(notebook), as_version=4)


def _tags(cell: Any) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def _is_injected(cell: Any) -> bool:
    return INJECTED_TAG in _tags(cell)


def _code_sources(notebook: nbformat.NotebookNode) -> list[str]:
    return [c.source for c in notebook.cells if c.cell_type == "code" and not _is_injected(c)]


def sources(notebook: nbformat.NotebookNode | str | os.PathLike
            ) -> list[tuple[str, str, tuple]]:
    """(cell type, source, tags) of every cell but papermill's injected-parameters cell: what a
    notebook *says*, outputs and render parameters aside."""
    return [(cell.cell_type, cell.source, tuple(_tags(cell)))
            for cell in _read(notebook).cells if not _is_injected(cell)]


def injected_cells(notebook: nbformat.NotebookNode | str | os.PathLike) -> list[Any]:
    return [cell for cell in _read(notebook).cells if _is_injected(cell)]


def parameters_of(notebook: nbformat.NotebookNode | str | os.PathLike) -> dict[str, Any]:
    """The literals of a notebook's `parameters` cell (read with ast.literal_eval)."""
    for cell in _read(notebook).cells:
        if PARAMETERS_TAG in _tags(cell):
            return parse_parameters(cell.source)
    raise ValueError("no cell tagged 'parameters'; add the tag in Jupyter's cell toolbar")


def shown_parameters(notebook: nbformat.NotebookNode | str | os.PathLike) -> dict[str, Any]:
    """The parameters a notebook runs with: its parameters cell, overridden by papermill's
    injected-parameters cell when there is one (which must directly follow it)."""
    notebook = _read(notebook)
    values = parameters_of(notebook)
    tags = [_tags(cell) for cell in notebook.cells]
    for index, cell in enumerate(notebook.cells):
        if _is_injected(cell):
            if index == 0 or PARAMETERS_TAG not in tags[index - 1]:
                raise ValueError(f"cell {index}: the injected-parameters cell must directly "
                                 "follow the parameters cell")
            for node in ast.parse(cell.source).body:
                values[node.targets[0].id] = ast.literal_eval(node.value)
    return values


def cells_without_parameters(notebook: nbformat.NotebookNode | str | os.PathLike) -> list[str]:
    """Sources of every cell but the parameters and injected cells (per-backbone comparisons)."""
    return [source for _, source, tags in sources(notebook) if PARAMETERS_TAG not in tags]


def printed_config(notebook: nbformat.NotebookNode | str | os.PathLike) -> dict | None:
    """The resolved training config a rendered notebook printed (the output of its cell ending
    in `config.to_dict()`), or None where there is no such output."""
    for cell in _read(notebook).cells:
        if cell.cell_type == "code" and cell.source.rstrip().endswith("config.to_dict()"):
            for output in cell.get("outputs", []):
                text = output.get("data", {}).get("text/plain")
                if text:
                    return ast.literal_eval("".join(text) if isinstance(text, list) else text)
    return None


def config_mismatches(notebook: nbformat.NotebookNode | str | os.PathLike) -> list[str]:
    """Where a rendered notebook's printed config disagrees with the parameters it shows
    (parameters cell overridden by the injected cell). Each parameter named like a config field
    (IMAGE_SIZE -> image_size) must have printed what `TrainConfig.resolve` makes of it (None
    sizes -> the registry's default, no DATA_DIR -> a synthetic dataset label, …); with SMOKE
    only BACKBONE, SEED and SMOKE are compared (the smoke preset overrides the rest, as the
    notebook says)."""
    from utils.training.config import TrainConfig

    notebook = _read(notebook)
    printed = printed_config(notebook)
    if printed is None:
        return []
    shown = shown_parameters(notebook)
    smoke = bool(shown.get("SMOKE"))
    compared = {name.lower(): value for name, value in shown.items()
                if name.lower() in printed
                and (not smoke or name.lower() in ("backbone", "seed", "smoke"))}
    try:
        expected = TrainConfig.from_dict({**printed, **compared}).resolve(gpu_visible=False)
    except ValueError as error:
        return [f"the parameters shown make no valid config: {error}"]
    expected_values = expected.to_dict()
    return [f"{key.upper()} = {value!r} shown, but the printed config has {key}={printed[key]!r}"
            for key, value in compared.items() if expected_values[key] != printed[key]]


def output_problems(notebook: nbformat.NotebookNode | str | os.PathLike,
                    machine_root: str) -> list[str]:
    """Why committed outputs would be unacceptable: machine paths, errors, real image ids."""
    problems = []
    for index, cell in enumerate(_read(notebook).cells):
        for output in cell.get("outputs", []):
            data = {k: v for k, v in output.get("data", {}).items() if not k.startswith("image/")}
            text = json.dumps({**output, "data": data})  # base64 pixels can spell any path
            if machine_root in text:
                problems.append(f"cell {index}: output holds the machine path {machine_root}")
            if output.get("output_type") == "error":
                problems.append(f"cell {index}: output is an error ({output.get('ename')})")
            if re.search(r"ISIC_\d{7}", text):
                problems.append(f"cell {index}: output names a real ISIC image (real data)")
    return problems


def has_outputs(notebook: nbformat.NotebookNode | str | os.PathLike) -> bool:
    return any(cell.get("outputs") for cell in _read(notebook).cells)


# --------------------------------------------------------------------------- execution
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


def iter_repository_notebooks(root: str | os.PathLike) -> Iterable[Path]:
    """Every committed notebook of the repository (Data_Augmentated/ and Models/)."""
    root = Path(root)
    for folder in ("Data_Augmentated", "Models"):
        yield from sorted((root / folder).glob("*.ipynb"))

"""The package's structure, checked from the source with `ast`: imports only go down the data
flow (base < data < augmentation < scoring < training < evaluation < studies < command line),
there is no import cycle (function-level imports included), and no module is over 500 lines."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from utils import cli, paths

PACKAGE = paths.repo_root() / "utils"
STAGES = ("base", "data", "augmentation", "scoring", "training", "evaluation", "studies", "top")
BASE = {"utils", "utils.errors", "utils.paths", "utils.fileio", "utils.tables", "utils.figures",
        "utils.arguments"}
TOP = {"utils.cli", "utils.__main__", "utils.notebooks"}  # dispatch and tooling: may import all
MAX_LINES = 500


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def stage(module: str) -> int:
    if module in TOP:
        return STAGES.index("top")
    if module in BASE:
        return STAGES.index("base")
    return STAGES.index(module.split(".")[1])


def imported_modules(module: str) -> set[str]:
    """Every utils module that `module` imports, at any depth of its code."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.rsplit(".", node.level)[0]
                base = f"{package}.{base}" if base else package
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                     for alias in node.names]
        else:
            continue
        found.update(n for n in names if n in MODULES and n != module)
    return found


GRAPH = {module: imported_modules(module) for module in MODULES}


def test_every_module_belongs_to_a_stage():
    for module in MODULES:
        assert module in BASE | TOP or module.split(".")[1] in STAGES, module


def back_edges(graph: dict[str, set[str]]) -> list[str]:
    """Imports of a later stage by an earlier one."""
    return [f"{a} -> {b}" for a, targets in graph.items() for b in sorted(targets)
            if stage(b) > stage(a)]


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle met by a depth-first walk (each as the list of modules around it)."""
    cycles: list[list[str]] = []
    state: dict[str, str] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack + [target])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return cycles


def test_imports_only_go_down_the_flow():
    assert back_edges(GRAPH) == []


def test_no_import_cycles():
    assert find_cycles(GRAPH) == []


def test_the_checks_find_a_back_edge_and_a_cycle():
    graph = {"utils.evaluation.evaluate": {"utils.studies.audit"},
             "utils.data.readers": {"utils.data.validation"},
             "utils.data.validation": {"utils.data.readers"}}
    assert back_edges(graph) == ["utils.evaluation.evaluate -> utils.studies.audit"]
    assert find_cycles(graph) == [["utils.data.readers", "utils.data.validation",
                                   "utils.data.readers"]]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_is_small(module):
    lines = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{module}: {lines} lines; split it by what it does"


def test_every_command_module_exists_and_has_the_command_interface():
    for name, (module, _) in cli.COMMANDS.items():
        assert module in MODULES, name
        tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
        functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert {"add_arguments", "run"} <= functions, module

"""Build every notebook of Models/ and Data_Augmentated/ from its source in notebooks/.

    .venv/bin/python scripts/build_notebooks.py            # rewrite the notebooks that changed
    .venv/bin/python scripts/build_notebooks.py --check    # exit 1 if one is out of date

Sources are jupytext percent-format .py files (edit them, lint them with ruff); which notebook
comes from which source with which parameters is `utils.notebooks.targets()`. Rendered outputs
are kept while a notebook's code cells are unchanged; a notebook whose code changed is written
without outputs, to be re-rendered with scripts/render_notebooks.py (listed at the end).
"""
from __future__ import annotations

import argparse
import sys

import nbformat

from utils import notebooks, paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when a committed notebook is not up to date")
    args = parser.parse_args(argv)
    stale, unrendered = [], []
    for target in notebooks.targets():
        path = paths.repo_root() / target.path
        committed = nbformat.read(str(path), as_version=4) if path.is_file() else None
        notebook = notebooks.keep_outputs(notebooks.build_target(target), committed)
        text = nbformat.writes(notebook) + "\n"
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(target.path)
            if not args.check:
                notebooks.write_notebook(path, notebook)
                print("wrote", target.path)
        if not notebooks.has_outputs(notebook):
            unrendered.append(target.path)
    if args.check:
        for name in stale:
            print(f"{name} is not what notebooks/ builds: run scripts/build_notebooks.py")
        return 1 if stale else 0
    if not stale:
        print("all notebooks up to date")
    if unrendered:
        print("without outputs (render them):\n  .venv/bin/python scripts/render_notebooks.py "
              + " ".join(unrendered))
    return 0


if __name__ == "__main__":
    sys.exit(main())

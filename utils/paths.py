"""All filesystem locations of the repository, in one place (Cookiecutter Data Science layout).

`data/raw/<dataset>` is never modified by any command; `data/interim`, `data/processed` and
`runs/` hold everything the code writes.
"""
from __future__ import annotations

import os
from pathlib import Path

DATA_ENV_VAR = "SKIN_DATA_DIR"  # points at a folder holding one sub-folder per dataset


def repo_root() -> Path:
    """The repository root (the folder holding this package)."""
    return Path(__file__).resolve().parent.parent


def data_root() -> Path:
    """Root of the raw datasets: $SKIN_DATA_DIR, else <repo>/data/raw."""
    env = os.environ.get(DATA_ENV_VAR)
    return Path(env).expanduser().resolve() if env else repo_root() / "data" / "raw"


def raw_dir(dataset: str) -> Path:
    """Default folder of one raw dataset, e.g. data/raw/HAM10000."""
    return data_root() / dataset


def processed_dir() -> Path:
    return repo_root() / "data" / "processed"


def interim_dir() -> Path:
    return repo_root() / "data" / "interim"


def synthetic_dir() -> Path:
    """Where the embedded synthetic default dataset is generated."""
    return repo_root() / "data" / "synthetic"


def runs_dir() -> Path:
    return repo_root() / "runs"


def reports_dir() -> Path:
    return repo_root() / "reports"


def shared_data_dir() -> Path | None:
    """The project's real development data (../shared/data), or None where absent."""
    candidate = repo_root().parent / "shared" / "data"
    return candidate.resolve() if candidate.is_dir() else None


def display(path: str | os.PathLike) -> str:
    """A path as printed to users: relative to the repository when inside it."""
    resolved = Path(path).resolve()
    try:
        return str(resolved.relative_to(repo_root()))
    except ValueError:
        return str(resolved)

"""Run folders: runs/<YYYYmmdd-HHMMSS>-<dataset>-<backbone>-<size>/ holding config.json,
manifest.csv, history.csv, model.keras, predictions_*.csv, run_info.json and evaluation outputs."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from utils import paths
from utils.config import TrainConfig

RUN_FILES = ("config.json", "manifest.csv", "history.csv", "model.keras", "predictions_val.csv",
             "predictions_test.csv", "run_info.json")


def run_name(config: TrainConfig, timestamp: float | None = None) -> str:
    """<YYYYmmdd-HHMMSS>-<dataset>-<backbone>-<size> (the config must be resolved)."""
    if config.image_size is None:
        raise ValueError("run_name needs a resolved config (image_size is None): call .resolve()")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(timestamp))
    return f"{stamp}-{config.dataset}-{config.backbone.lower()}-{config.image_size}"


def new_run_dir(config: TrainConfig, root: str | os.PathLike | None = None) -> Path:
    """Create a fresh run folder (a numeric suffix avoids clashes within one second)."""
    root = Path(root) if root is not None else paths.runs_dir()
    base = run_name(config)
    for attempt in range(1000):
        candidate = root / (base if attempt == 0 else f"{base}-{attempt}")
        try:
            candidate.mkdir(parents=True, exist_ok=False)
            return candidate
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a run folder under {root} named {base}-*")


def list_runs(root: str | os.PathLike | None = None) -> list[Path]:
    """Run folders (holding a config.json) under root, oldest first."""
    root = Path(root) if root is not None else paths.runs_dir()
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / "config.json").is_file())


@dataclass(frozen=True)
class Run:
    """A run folder's contents, read lazily where large."""

    path: Path
    config: TrainConfig
    info: dict

    @property
    def history(self) -> pd.DataFrame:
        return pd.read_csv(self.path / "history.csv")

    @property
    def manifest(self) -> pd.DataFrame:
        return pd.read_csv(self.path / "manifest.csv")

    def predictions(self, split: str) -> pd.DataFrame:
        return pd.read_csv(self.path / f"predictions_{split}.csv")

    @property
    def model_path(self) -> Path:
        return self.path / "model.keras"

    @property
    def complete(self) -> bool:
        return all((self.path / name).is_file() for name in RUN_FILES)


def load_run(path: str | os.PathLike) -> Run:
    """Read a run folder's config and run_info.json (empty dict while training)."""
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"{paths.display(path)} is not a run folder (no config.json); list runs with "
            f"utils.runs.list_runs()"
        )
    info_file = path / "run_info.json"
    info = json.loads(info_file.read_text(encoding="utf-8")) if info_file.is_file() else {}
    return Run(path=path, config=TrainConfig.load(config_file), info=info)

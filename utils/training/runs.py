"""The RUN FOLDER format: runs/<YYYYmmdd-HHMMSS>-<dataset>-<backbone>-<size>/.

Every file name of a run folder is written here once; training writes the folder, evaluation,
studies and tests read it through these names:
config.json (resolved TrainConfig), manifest.csv (the split trained on), history.csv (one row per
epoch), model.keras (best epoch), predictions_<split>.csv (utils.scoring.predictions),
run_info.json (time, device, versions), budget.json (a budgeted run's measurements, sizes and
outcome), checkpoints/ (best epoch, finished stages, the running weight average) and backup/
(resume), logs/ (TensorBoard), workers/ (non-chief workers of a multi-worker cluster), and the
evaluation outputs metrics.json / metrics.csv / plots/.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from utils import paths
from utils.training.config import TrainConfig

CONFIG = "config.json"
MANIFEST = "manifest.csv"
HISTORY = "history.csv"
MODEL = "model.keras"
RUN_INFO = "run_info.json"
JOB_CONFIG = "job_config.json"  # the end-to-end job's settings (utils.studies.reproduce)
BEST_CHECKPOINT = Path("checkpoints") / "best.weights.h5"
BACKUP_DIR = "backup"
LOGS_DIR = "logs"
PLOTS_DIR = "plots"


BUDGET = "budget.json"  # the wall-clock budget's measurements and chosen sizes (training.budget)


def average_state_name(stage: int) -> Path:
    """The running weight average of a stage (EMA/SWA, utils.training.averaging), for resume."""
    return Path("checkpoints") / f"average_stage{stage}.npz"


def predictions_name(split: str, variant: str = "") -> str:
    """predictions_<split>.csv, or predictions_<split>_<variant>.csv (tta, calibrated)."""
    return f"predictions_{split}{'_' + variant if variant else ''}.csv"


def metrics_names(split: str = "test") -> tuple[str, str]:
    """(metrics.json, metrics.csv) for the test split, metrics_<split>.* otherwise."""
    stem = "metrics" if split == "test" else f"metrics_{split}"
    return f"{stem}.json", f"{stem}.csv"


RUN_FILES = (CONFIG, MANIFEST, HISTORY, MODEL, predictions_name("val"), predictions_name("test"),
             RUN_INFO)


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
    return sorted(p for p in root.iterdir() if (p / CONFIG).is_file())


@dataclass(frozen=True)
class Run:
    """A run folder's contents, read lazily where large."""

    path: Path
    config: TrainConfig
    info: dict

    @property
    def history(self) -> pd.DataFrame:
        return pd.read_csv(self.path / HISTORY)

    @property
    def manifest(self) -> pd.DataFrame:
        from utils.data.manifest import load_manifest

        return load_manifest(self.path / MANIFEST)

    def predictions(self, split: str) -> pd.DataFrame:
        from utils.scoring.predictions import read_predictions

        return read_predictions(self.path / predictions_name(split))

    @property
    def model_path(self) -> Path:
        return self.path / MODEL

    @property
    def complete(self) -> bool:
        return all((self.path / name).is_file() for name in RUN_FILES)


def load_run(path: str | os.PathLike) -> Run:
    """Read a run folder's config and run_info.json (empty dict while training)."""
    path = Path(path)
    config_file = path / CONFIG
    if not config_file.is_file():
        raise FileNotFoundError(
            f"{paths.display(path)} is not a run folder (no config.json); list runs with "
            f"utils.training.runs.list_runs()"
        )
    info_file = path / RUN_INFO
    info = json.loads(info_file.read_text(encoding="utf-8")) if info_file.is_file() else {}
    return Run(path=path, config=TrainConfig.load(config_file), info=info)

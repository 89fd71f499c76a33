"""The RUN FOLDER format: runs/<YYYYmmdd-HHMMSS>-<dataset>-<backbone>-<size>/.

Every file name of a run folder is written here once; training writes the folder, evaluation,
studies and tests read it through these names:
config.json (resolved TrainConfig), manifest.csv (the split trained on), history.csv (one row per
epoch), model.keras (best epoch), predictions_<split>.csv (utils.scoring.predictions),
run_info.json (time, device, versions), budget.json (a budgeted run's measurements, sizes and
outcome), checkpoints/ (best epoch, finished stages, the running weight average) and backup/
(resume), logs/ (TensorBoard), workers/ (non-chief workers of a multi-worker cluster),
members/m<k>/ (an ensemble's members, run folders themselves: utils.training.ensemble), .lock
(held by the process training into the folder), and the evaluation outputs metrics.json /
metrics.csv / plots/, selective.csv, subgroups.csv, corruptions.csv, model_card.md and
external/<test set>/."""
from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pandas as pd

from utils import paths
from utils.errors import UserError
from utils.training.config import TrainConfig

try:  # POSIX; elsewhere runs are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

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
LOCK = ".lock"  # flock-ed by the training process; holds its pid, host and start time


# evaluation outputs beside metrics.json (utils.evaluation.evaluate)
MODEL_CARD = "model_card.md"
SELECTIVE = "selective.csv"  # abstention: validation-fixed coverage points and AURC
SUBGROUPS = "subgroups.csv"  # metrics per age band, sex, site, dx_type, source
CORRUPTIONS = "corruptions.csv"  # balanced accuracy per corruption and severity
EXTERNAL_DIR = "external"  # external/<test set>/: predictions_test.csv, metrics.json, plots/


class RunLockedError(UserError, RuntimeError):
    """Another process is training into the same run folder."""


MEMBERS_DIR = "members"  # an ensemble's members, one run folder each (utils.training.ensemble)
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


@contextmanager
def lock_run(run_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold an exclusive lock on `run_dir` (flock on <run>/.lock) while the block runs.

    RunLockedError naming the folder and the holder (pid, host, start time) when another process
    holds it. The kernel drops the lock when its process dies, so a stale .lock file left by a
    killed run never blocks a resume."""
    path = Path(run_dir) / LOCK
    handle = open(path, "a+", encoding="utf-8")
    if fcntl is not None:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunLockedError(
                f"{paths.display(run_dir)} is in use by {holder}: two runs writing one run "
                "folder would corrupt it. Wait for that run to finish (or stop it), or pass "
                "another --run-dir") from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        yield path
    finally:
        handle.close()  # closing the file releases the lock


def completed_epochs(run_dir: str | os.PathLike) -> int:
    """Epochs logged in history.csv (0 without one; 1 when it exists but cannot be read, so an
    unreadable history never counts as "nothing to keep"), an ensemble's members' included."""
    members = Path(run_dir) / MEMBERS_DIR
    return _logged_epochs(run_dir) + sum(_logged_epochs(m) for m in sorted(members.glob("m*")))


def _logged_epochs(run_dir: str | os.PathLike) -> int:
    history = Path(run_dir) / HISTORY
    if not history.is_file():
        return 0
    try:
        return len(pd.read_csv(history))
    except (ValueError, OSError):  # pandas' EmptyDataError and ParserError are ValueErrors
        return 0 if history.stat().st_size == 0 else 1


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

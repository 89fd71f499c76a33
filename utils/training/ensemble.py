"""A small ensemble of fast models: `members` runs trained one after another, averaged into one
model.keras.

A config with `members > 1` trains member k into `<run>/members/m<k>/` (a run folder of its own,
trained by `utils.training.train.train` with `members=1` and seed `seed + 1000 k`), then writes
the run's model.keras: one Keras model whose output is the mean of the members' softmax
probabilities (`keras.layers.Average`, loads with safe_mode=True; each member keeps its own
preprocessing inside), its val/test predictions and run_info.json. Evaluation, TTA, `predict`
and the model card read the run folder as they read any other.

Wall clock: with a budget, member k gets an equal share of the time left when it starts, after
holding back the final prediction passes of the members before it (measured by the first
member; every member reserves its own), so the whole run fits the budget and the time a member
leaves unused goes to the next. Without a budget every member trains `epochs` epochs.
Members never predict the test split: only the ensemble, the reported model, does.
Resume: finished members are reused, an interrupted one resumes (train.train).
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from utils.training import runs
from utils.training.config import MEMBER_SEED_STRIDE, TrainConfig

LAYER_PREFIX = "member"  # the ensemble model's sub-models: member0, member1, ...


def member_dir(run_dir: Path, k: int) -> Path:
    return Path(run_dir) / runs.MEMBERS_DIR / f"m{k}"


def member_config(config: TrainConfig, k: int, budget_s: float | None) -> TrainConfig:
    """The TrainConfig of member k: one model, its own seed, its share of the budget."""
    return replace(config, members=1, seed=config.seed + MEMBER_SEED_STRIDE * k,
                   budget_s=config.budget_s if budget_s is None else budget_s)


def member_budget(total_s: float, elapsed_s: float, members: int, k: int,
                  final_s: float) -> float:
    """Seconds of wall clock for member k (0-based) of `members`: an equal share of what is left
    of `total_s` after `elapsed_s`, once the final prediction passes of the other members
    (`final_s` each, what one member's plain and TTA predictions of val and test take) are held
    back; every member's own budget reserves its own passes."""
    left = members - k
    return max(0.0, (total_s - elapsed_s - (members - 1) * final_s) / left)


def final_seconds(member_run: Path) -> float:
    """What the member's budget reserved for its final prediction passes (budget.json)."""
    from utils.training import budget

    report = budget.load_report(member_run) or {}
    measured = report.get("measured") or [{}]
    return float(measured[-1].get("final_s", 0.0))


def average_model(members: Sequence[Any]) -> Any:
    """One Keras model whose output is the mean of the members' probabilities."""
    import keras

    inputs = keras.Input(shape=members[0].input_shape[1:], name="image")
    outputs = [keras.Model(m.input, m.output, name=f"{LAYER_PREFIX}{k}")(inputs)
               for k, m in enumerate(members)]
    mean = keras.layers.Average(name="mean_probabilities")(outputs)
    return keras.Model(inputs, mean, name="ensemble")


def is_ensemble(model: Any) -> bool:
    return any(layer.name == f"{LAYER_PREFIX}0" for layer in model.layers)


def explained_member(model: Any) -> Any:
    """The model Grad-CAM explains: the first member of an ensemble, the model otherwise."""
    return model.get_layer(f"{LAYER_PREFIX}0") if is_ensemble(model) else model


def train_members(config: TrainConfig, run_dir: Path, manifest: pd.DataFrame, started: float,
                  train_one: Callable[..., Path]) -> list[Path]:
    """Train (or reuse, or resume) every member into run_dir/members/; returns their folders.

    train_one: utils.training.train.train (passed in: train imports this module)."""
    folders: list[Path] = []
    final_s = 0.0
    for k in range(config.members):
        budget_s = member_budget(float(config.budget_s or 0), time.time() - started,
                                 config.members, k, final_s) if config.budget_s else None
        if budget_s is not None and budget_s < 1.0:  # the earlier members ran over
            print(f"[ensemble] no time left for member {k + 1}: it trains one short epoch and "
                  "the run goes over its budget (budget.json says so)", flush=True)
            budget_s = 1.0  # not 0, which would turn sizing off
        print(f"[ensemble] member {k + 1} of {config.members}"
              + (f": {budget_s:.0f} s of wall clock" if budget_s else ""), flush=True)
        folders.append(train_one(member_config(config, k, budget_s), run_dir=member_dir(run_dir, k),
                                 manifest=manifest, predict_splits=("val",)))
        final_s = final_s or final_seconds(folders[-1])
    sizes = {TrainConfig.load(f / runs.CONFIG).image_size for f in folders}
    if len(sizes) > 1:
        raise ValueError(f"the members were sized to different image sizes {sorted(sizes)}: an "
                         "ensemble needs one; give --image-size with a budget that fits it")
    return folders


def sized_config(config: TrainConfig, folders: Sequence[Path]) -> TrainConfig:
    """The run's config with the members' sizes: image size, and epochs of the first member."""
    first = TrainConfig.load(Path(folders[0]) / runs.CONFIG)
    return replace(config, image_size=first.image_size, epochs=first.epochs,
                   stage1_epochs=first.stage1_epochs, stage2_epochs=first.stage2_epochs,
                   steps_per_epoch=first.steps_per_epoch)


def members_summary(folders: Sequence[Path]) -> list[dict[str, Any]]:
    """Per member: folder, seed, epochs, best validation balanced accuracy, wall clock."""
    rows = []
    for folder in folders:
        info = json.loads((Path(folder) / runs.RUN_INFO).read_text())
        rows.append({"run_dir": Path(folder).name,
                     "seed": TrainConfig.load(Path(folder) / runs.CONFIG).seed,
                     "epochs_completed": info.get("epochs_completed"),
                     "best_val_balanced_accuracy": info.get("best_val_balanced_accuracy"),
                     "duration_s": info.get("duration_s")})
    return rows


def budget_report(config: TrainConfig, folders: Sequence[Path], cpu_start: dict,
                  started: float) -> dict[str, Any] | None:
    """The run's budget.json: the first member's measurements, the planned epochs of all members
    (outcome added by budget.record_outcome), each member's own report."""
    from utils.training import budget

    reports = [budget.load_report(f) for f in folders]
    if not config.budget_s or any(r is None for r in reports):
        return None
    first = reports[0]
    return {
        "budget": config.budget, "budget_s": float(config.budget_s), "margin": first["margin"],
        "measured": first["measured"],
        "chosen": {"image_size": first["chosen"]["image_size"],
                   "epochs": int(sum(r["chosen"]["epochs"] for r in reports)),
                   "steps_per_epoch": first["chosen"]["steps_per_epoch"]},
        "members": [{"run_dir": Path(f).name, "budget_s": r["budget_s"], "chosen": r["chosen"],
                     "outcome": r.get("outcome", {})} for f, r in zip(folders, reports)],
        "cpu_start": cpu_start, "sized_at_s": first["sized_at_s"],
    }


def validation_balanced_accuracy(run_dir: Path) -> float | None:
    """Balanced accuracy of the run's plain validation predictions."""
    from utils.scoring import metrics
    from utils.scoring.predictions import arrays_from_predictions, read_predictions

    path = Path(run_dir) / runs.predictions_name("val")
    if not path.is_file():
        return None
    y, probs, _ = arrays_from_predictions(read_predictions(path))
    if not len(y):
        return None
    matrix = metrics.confusion_matrices(y, metrics.predicted_labels(probs), probs.shape[1], None)
    return round(float(metrics.rates_from_confusion(matrix)["balanced_accuracy"][0]), 4)

"""Wall-clock budgets: a named recipe that sizes a run to fit a stated time on the machine at hand.

    python -m utils train --data-dir ../shared/data/HAM10000 --budget cpu-30min

A budget preset (`BUDGETS`) is a training recipe (TrainConfig fields: backbone, schedule,
techniques) plus a wall-clock budget in seconds for the WHOLE run: data preparation (reading the
table, the split, filling the cache of resized images), tracing, training, validation at each
epoch end and the final predictions. Before training, `size_run` measures on this machine, with
a throw-away probe of the same model and pipeline: the tracing time, seconds per training step
(a dozen steps after tracing) and seconds per prediction batch. It then sets the number of epochs
(and, when not even `min_epochs` fit at the preferred image size, the next smaller candidate
size) so that what was measured adds up to the budget less a safety margin. The plan only
predicts: training itself runs until the deadline (the budget less the final predictions), the
cosine following the clock, so a run whose dozen timed steps were pessimistic trains more epochs
than planned instead of leaving its budget unused, and a deadline callback stops training early
should the machine be slower than measured. The measurements, the chosen sizes, the CPU
time other processes took during the run (a shared machine runs slower) and the outcome go to
the run folder's budget.json (utils.training.runs.BUDGET) and the resolved config.json.

The sizes depend on the machine: the same command elsewhere trains a different number of epochs.
To replay a run, pass the epochs it trained and its image size with sizing off (`--budget-s 0
--epochs N --image-size S`, see `replay_arguments`). Its cosine followed the clock
(utils.training.optim.cosine_callback), which a replay without a deadline does not repeat: same
sizes, not exactly the same schedule.
"""
from __future__ import annotations

import json
import math
import os
import resource
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from utils import fileio
from utils.training import runs
from utils.training.config import MEMBER_SEED_STRIDE, TrainConfig

# The budgeted CPU recipe: from scratch, cosine decay with warm-up, balanced sampling, online
# augmentation, cached resized images, an EMA of the weights, predictions averaged over the 8
# dihedral views (TTA) and fused with a metadata model (age, sex, site; fitted on the training
# split). Each choice rests on paired screening runs on real HAM10000's validation split
# (`python -m utils select-recipe`; a technique is kept only when the 95 % CI of its paired
# difference lies above 0; equal compute, 5 epochs per run, unless said otherwise):
# - balanced sampling over class weights: reports/cpu_recipe_selection.md (2 seeds, at commit
#   4686df9 when the base still used class weights: its "sampling" variant is today's base);
# - TTA: reports/cpu_recipe_selection2.md (2 seeds, on today's base), +0.023 [+0.004, +0.045];
#   label smoothing, AdamW, mixup and CutMix showed no clear difference there (not kept);
# - EMA and 64 px: with one seed (cpu_recipe_selection_seed0.md) neither dropping the EMA nor
#   96 px beat the base.
# - metadata fusion: reports/cpu_recipe_metadata.md (2 seeds, full 30-minute runs): +0.045
#   [+0.007, +0.081] on one view, TTA + metadata +0.062 [+0.024, +0.096] (TTA alone at that
#   horizon: -0.006 [-0.027, +0.015]).
CPU_RECIPE: Mapping[str, Any] = {
    "backbone": "mobilenetv2", "weights": None, "image_size": 64, "batch_size": 32,
    "learning_rate": 2e-3, "lr_schedule": "cosine", "warmup_epochs": 1.0, "optimizer": "adam",
    "weight_decay": 0.0, "label_smoothing": 0.0, "mixup_alpha": 0.0, "cutmix_alpha": 0.0,
    "imbalance": "sampling", "augment": "online", "cache": True, "patience": 0,
    "weight_average": "ema", "ema_decay": 0.998, "predict_tta": True, "metadata_fusion": True,
}


# Views a recipe with predict_tta predicts (utils.evaluation.tta.DIHEDRAL_VIEWS; a test checks
# they agree): its final predictions of val and test cost this many passes each, all counted.
TTA_VIEWS = 8


@dataclass(frozen=True)
class Budget:
    """A wall-clock budget and the recipe trained within it."""

    name: str  # what --budget takes
    seconds: float  # wall clock of the whole run (data, tracing, training, validation, predictions)
    recipe: Mapping[str, Any] = field(default_factory=lambda: dict(CPU_RECIPE))  # config fields
    sizes: tuple[int, ...] = (64, 48)  # candidate image sizes, preferred first (fallbacks smaller)
    min_epochs: int = 8  # fewer epochs than this at a size: try the next smaller size
    margin: float = 0.06  # fraction of the budget held back for timing noise
    measure_steps: int = 12  # training steps timed after tracing


BUDGETS: dict[str, Budget] = {
    "cpu-30min": Budget("cpu-30min", 30 * 60),
    # screening runs and the backbone head-to-head: a fixed image size (no fallback)
    "cpu-5min": Budget("cpu-5min", 5 * 60, sizes=(), min_epochs=1),
}


def get_budget(name: str) -> Budget:
    if name not in BUDGETS:
        raise ValueError(f"unknown budget {name!r}; budgets: {', '.join(BUDGETS)}")
    return BUDGETS[name]


def apply_budget(name: str, config: TrainConfig) -> TrainConfig:
    """`config` with the budget's recipe and wall clock (explicit overrides go on top)."""
    spec = get_budget(name)
    return replace(config, **dict(spec.recipe), budget=spec.name, budget_s=float(spec.seconds))


def sizes_run(config: TrainConfig) -> bool:
    """True when the run's epochs are to be sized by measurement."""
    return bool(config.budget_s)


# --------------------------------------------------------------------------- machine load
def cpu_snapshot() -> dict[str, float]:
    """Wall time, this process's CPU seconds (threads included, children too) and the machine's
    busy CPU seconds (/proc/stat; NaN elsewhere)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy = float("nan")
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        ticks = [float(v) for v in fields]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0.0)  # idle + iowait
        busy = (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    return {"wall": time.time(), "own_cpu": own.ru_utime + own.ru_stime + kids.ru_utime
            + kids.ru_stime, "busy_cpu": busy}


def others_share(start: Mapping[str, float], end: Mapping[str, float]) -> float | None:
    """Fraction of the machine's CPU capacity used by OTHER processes between two snapshots."""
    wall = end["wall"] - start["wall"]
    busy = end["busy_cpu"] - start["busy_cpu"]
    if not wall > 0 or math.isnan(busy):
        return None
    others = max(0.0, busy - (end["own_cpu"] - start["own_cpu"]))
    return round(others / (wall * (os.cpu_count() or 1)), 3)


# --------------------------------------------------------------------------- measuring
def _batch_clock() -> Any:
    """A callback noting time.perf_counter() at the end of every training batch."""
    import keras

    class BatchClock(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.times: list[float] = []

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            self.times.append(time.perf_counter())

    return BatchClock()


def measure(model: Any, data: dict, measure_steps: int = 12, trace_steps: int = 2,
            callbacks: list | None = None) -> dict[str, float]:
    """Time a compiled model on the run's own datasets: tracing (the first fit call beyond its
    steps), a training step (with `callbacks`: the per-step work training adds, e.g. the weight
    average's update), a prediction batch. The model's weights and optimiser state are
    restored afterwards, its traced functions kept (training does not trace again)."""
    from utils.training import optim

    initial = model.get_weights()
    train = data["train"].repeat()
    callbacks = list(callbacks or [])
    started = time.perf_counter()
    model.fit(train, epochs=1, steps_per_epoch=trace_steps, verbose=0, callbacks=callbacks)
    first = time.perf_counter() - started
    clock = _batch_clock()
    steps = max(4, measure_steps)
    model.fit(train, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=callbacks + [clock])
    # from the end of the 2nd step: a callback may trace its own function in the first one
    step_s = (clock.times[-1] - clock.times[1]) / (len(clock.times) - 2)
    batches = data["val"].take(4)
    model.predict(batches, verbose=0)  # traces the predict function
    started = time.perf_counter()
    model.predict(batches, verbose=0)
    predict_s = (time.perf_counter() - started) / max(1, sum(1 for _ in batches))
    model.set_weights(initial)
    optim.reset_optimizer(model.optimizer)
    return {"trace_s": max(0.0, first - trace_steps * step_s), "step_s": step_s,
            "predict_batch_s": predict_s}


def plan_epochs(remaining_s: float, measured: Mapping[str, float], train_steps: int,
                val_batches: int, final_batches: int, stages: int = 1,
                epoch_overhead_s: float = 1.0) -> dict[str, Any]:
    """Epochs (and steps per epoch) that fit `remaining_s` given the measurements.

    Per epoch: train_steps training steps + one validation pass + overhead (callbacks, saving);
    once: the final predictions and, for two stages, tracing each stage again.
    When not one whole epoch fits, one epoch of as many steps as fit."""
    final = final_batches * measured["predict_batch_s"] + 5.0  # predictions, model saving
    # the measured model is trained as traced; pre-trained runs compile (trace) per stage
    fixed = (stages if stages > 1 else 0.1) * measured["trace_s"] * 1.2 + final
    per_epoch = (train_steps * measured["step_s"] + val_batches * measured["predict_batch_s"]
                 + epoch_overhead_s)
    available = remaining_s - fixed
    epochs = int(available // per_epoch) if available > 0 else 0
    steps = train_steps
    if epochs < 1:
        epochs = 1
        room = available - val_batches * measured["predict_batch_s"] - epoch_overhead_s
        steps = max(1, min(train_steps, int(room // measured["step_s"])))
    planned = fixed + epochs * (steps * measured["step_s"] + val_batches
                                * measured["predict_batch_s"] + epoch_overhead_s)
    return {"epochs": epochs, "steps_per_epoch": steps, "fixed_s": round(fixed, 2),
            "final_s": round(final, 2),
            "epoch_s": round(per_epoch, 2), "planned_s": round(planned, 2)}


def _with_epochs(config: TrainConfig, epochs: int) -> TrainConfig:
    """Put `epochs` into the fields the run trains by (two stages when pre-trained)."""
    if not config.pretrained:
        return replace(config, epochs=epochs)
    stage1 = max(1, round(0.2 * epochs)) if epochs > 1 else 0
    return replace(config, stage1_epochs=stage1, stage2_epochs=max(1, epochs - stage1))


def size_run(config: TrainConfig, manifest: Any, num_classes: int, strategy: Any,
             started: float, run_dir: Path,
             compile_model: Callable[[Any, float, TrainConfig], None]
             ) -> tuple[TrainConfig, dict, Any]:
    """Build, compile and time the run's model, then size epochs (and, when fewer than the
    budget's min_epochs fit, the image size) to fit config.budget_s counted from `started`
    (time.time() at the run's start). Returns the sized config, its datasets and the compiled
    model (weights as initialised, traced once); writes budget.json."""
    import keras

    from utils.training import averaging, models, pipeline
    from utils.training.data import make_datasets
    from utils.training.devices import worker_task

    if worker_task() is not None:
        raise ValueError("a wall-clock budget is sized on one machine: on a multi-worker cluster "
                         "give the sizes instead (--budget-s 0 --epochs N --image-size S, e.g. "
                         "from a budget.json), so that every worker trains the same epochs")
    cpu_start = cpu_snapshot()
    spec = BUDGETS.get(config.budget or "", Budget("custom", float(config.budget_s)))
    sizes = [int(config.image_size)] + [s for s in spec.sizes if s < int(config.image_size)]
    total = float(config.budget_s)
    usable = total * (1.0 - spec.margin)
    counts = {s: int((manifest["split"] == s).sum()) for s in ("train", "val", "test")}
    tried, chosen = [], None
    for size in sizes:
        candidate = replace(config, image_size=size)
        if size < _min_size(candidate):
            break
        t0 = time.time()
        data = make_datasets(manifest, candidate, num_classes)
        prepare_s = time.time() - t0
        keras.utils.set_random_seed(candidate.seed)
        with strategy.scope():
            model = models.build_classifier(
                candidate.backbone, num_classes, weights=candidate.weights, image_size=size,
                dropout=candidate.dropout, bn_momentum=candidate.bn_momentum)
            compile_model(model, candidate.learning_rate if not candidate.pretrained
                          else candidate.stage1_lr, candidate)
        average = averaging.make_callback(candidate, None, 0, 1)  # its per-step cost counts
        measured = measure(model, data, spec.measure_steps,
                           callbacks=[average] if average is not None else None)
        train_steps = int(data["steps"])
        val_batches = pipeline.steps_for(max(1, counts["val"]), candidate.batch_size)
        views = 1 + (TTA_VIEWS if candidate.predict_tta else 0)  # plain, then the TTA views
        final_batches = views * sum(pipeline.steps_for(counts[s], candidate.batch_size)
                                    for s in ("val", "test") if counts[s])
        remaining = usable - (time.time() - started)
        plan = plan_epochs(remaining, measured, train_steps, val_batches, final_batches,
                           stages=2 if candidate.pretrained else 1)
        tried.append({"image_size": size, "prepare_s": round(prepare_s, 2),
                      **{k: round(v, 4) for k, v in measured.items()},
                      "train_images_per_s": round(candidate.batch_size / measured["step_s"], 1),
                      "train_steps_per_epoch": train_steps, "val_batches": val_batches,
                      "final_prediction_passes": views,
                      "remaining_s": round(remaining, 1), **plan})
        chosen = (candidate, data, model, tried[-1])
        if plan["epochs"] >= spec.min_epochs and plan["steps_per_epoch"] == train_steps:
            break
    if chosen is None:
        raise ValueError(f"budget: no candidate image size >= {_min_size(config)} px for "
                         f"{config.backbone}")
    candidate, data, model, entry = chosen
    sized = _with_epochs(candidate, entry["epochs"])
    if entry["steps_per_epoch"] < entry["train_steps_per_epoch"]:
        sized = replace(sized, steps_per_epoch=entry["steps_per_epoch"])
        data = {**data, "steps": entry["steps_per_epoch"]}
    report = {
        "budget": config.budget, "budget_s": total, "margin": spec.margin,
        "deadline": started + usable - entry["final_s"],
        "measured": tried, "chosen": {"image_size": sized.image_size, "epochs": entry["epochs"],
                                      "steps_per_epoch": entry["steps_per_epoch"]},
        "cpu_start": cpu_start, "sized_at_s": round(time.time() - started, 1),
    }
    fileio.write_json(run_dir / runs.BUDGET, report)
    return sized, data, model


def _min_size(config: TrainConfig) -> int:
    from utils.training import backbones

    return backbones.get_backbone(config.backbone).min_size


def load_report(run_dir: Path) -> dict | None:
    path = Path(run_dir) / runs.BUDGET
    return json.loads(path.read_text()) if path.is_file() else None


def record_outcome(run_dir: Path, config: TrainConfig) -> dict | None:
    """Add the outcome to budget.json: total wall clock (run_info's duration), epochs trained vs
    planned, whether it fitted, and the CPU share other processes took meanwhile."""
    report = load_report(run_dir)
    if report is None:
        return None
    info = json.loads((Path(run_dir) / runs.RUN_INFO).read_text())
    epochs_done = int(info.get("epochs_completed", 0))
    report["outcome"] = {
        "duration_s": info.get("duration_s"),
        "within_budget": bool(info.get("duration_s", math.inf) <= report["budget_s"]),
        "epochs_completed": epochs_done,
        "epochs_planned": int(report["chosen"]["epochs"]),
        "stopped_by_deadline": epochs_done < report["chosen"]["epochs"],
        "other_processes_cpu_share": others_share(report["cpu_start"], cpu_snapshot()),
    }
    fileio.write_json(Path(run_dir) / runs.BUDGET, report)
    return report


def deadline_callback(deadline: float) -> Any:
    """Stops fit at an epoch end when another epoch (as long as the longest so far) would end
    after `deadline` (time.time())."""
    import keras

    class Deadline(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.begun, self.longest = 0.0, 0.0

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.begun = time.time()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            now = time.time()
            self.longest = max(self.longest, now - self.begun)
            if now + self.longest > deadline:
                self.model.stop_training = True

    return Deadline()


def replay_arguments(config: TrainConfig, epochs: int | None = None) -> str:
    """CLI options that replay a sized run without re-measuring: its image size and `epochs`
    (the epochs it trained; default: the config's planned ones)."""
    text = f"--budget-s 0 --image-size {config.image_size}" + (
        f" --members {config.members}" if config.members > 1 else "")
    if config.pretrained:
        stage2 = config.stage2_epochs if epochs is None else max(1, epochs - config.stage1_epochs)
        text += f" --stage1-epochs {config.stage1_epochs} --stage2-epochs {stage2}"
    else:
        text += f" --epochs {config.epochs if epochs is None else epochs}"
    if config.steps_per_epoch:
        text += f" --steps-per-epoch {config.steps_per_epoch}"
    return text


def recipe_line(config: TrainConfig) -> str:
    """One model-card line naming the training techniques of a config."""
    schedule = config.lr_schedule + (f" with {config.warmup_epochs:g} warm-up epoch(s)"
                                     if config.lr_schedule == "cosine" and config.warmup_epochs
                                     else "")
    average = {"none": "none", "ema": f"EMA (decay {config.ema_decay:g} per step)",
               "swa": f"SWA (from {config.swa_start:.0%} of the epochs)"}[config.weight_average]
    optimizer = config.optimizer + (f" (weight decay {config.weight_decay:g})"
                                     if config.optimizer == "adamw" else "")
    mixing = ", ".join(f"{name} {alpha:g}" for name, alpha in
                       (("mixup", config.mixup_alpha), ("CutMix", config.cutmix_alpha)) if alpha)
    members = (f"; an ensemble of {config.members} models trained one after another (seeds "
               f"{config.seed}, {config.seed + MEMBER_SEED_STRIDE}, ...; each an equal share "
               "of the wall clock), probabilities averaged in one model.keras"
               if config.members > 1 else "")
    return (f"- Recipe: {optimizer}, learning rate {config.learning_rate:g}, schedule {schedule}, "
            f"batch {config.batch_size}, dropout {config.dropout:g}, label smoothing "
            f"{config.label_smoothing:g}, batch mixing {mixing or 'none'}, weight averaging "
            f"{average}, cached resized images {'yes' if config.cache else 'no'}, predictions "
            + ("averaged over the 8 dihedral views (TTA)" if config.predict_tta
               else "plain (one view)")
            + (", fused with a metadata model (age, sex, site) fitted on the training split"
               if config.metadata_fusion else "")
            + members + ".")


def card_lines(run_dir: Path, config: TrainConfig) -> list[str]:
    """Model-card lines on the budget: what was measured, what was chosen, what it took."""
    report = load_report(run_dir)
    if report is None:
        return []
    chosen, outcome = report["chosen"], report.get("outcome", {})
    last = report["measured"][-1]
    share = outcome.get("other_processes_cpu_share")
    shared = ("not measured" if share is None else
              f"other processes used {100 * share:.0f} % of the machine's CPU time meanwhile "
              f"({'shared' if share >= 0.05 else 'otherwise idle'} machine)")
    lines = [
        f"- Wall-clock budget `{report['budget'] or 'custom'}`: {report['budget_s']:.0f} s for "
        "the whole run (data preparation, tracing, training, validation each epoch, final "
        "predictions). Measured before training on this machine at "
        + ", ".join(f"{m['image_size']} px: {m['train_images_per_s']:.0f} training img/s, "
                    f"tracing {m['trace_s']:.0f} s" for m in report["measured"])
        + f"; chosen {chosen['image_size']} px, {chosen['epochs']} epochs "
        f"(planned {last['planned_s']:.0f} s of training and predictions after "
        f"{report['sized_at_s']:.0f} s of preparation and measuring)"
        + (f"; the plan counts {last['final_prediction_passes']} prediction passes over the "
           "validation and test images (plain, then each TTA view; the TTA passes run in the "
           "evaluation after training, outside the duration below)"
           if last.get("final_prediction_passes", 1) > 1 else "") + ".",
    ]
    if outcome:
        done, planned = outcome["epochs_completed"], chosen["epochs"]
        lines.append(
            f"- Took {outcome['duration_s']:.0f} s of wall clock "
            f"({'within' if outcome['within_budget'] else 'OVER'} the budget), {done} epochs"
            + (" (stopped early by the deadline)" if done < planned else
               f" (trained on to the deadline: {done - planned} more than planned)"
               if done > planned else "")
            + f"; {shared}. Replay these sizes without re-measuring: `"
            + replay_arguments(config, done) + "` (the rate schedule followed the wall clock, "
            "so a replay has the same sizes, not exactly the same schedule).")
    if report.get("members"):
        lines.append("- Members (one run folder each under members/, sized in turn; the first's "
                     "measurements above): " + "; ".join(
                         f"{m['run_dir']}: {m['budget_s']:.0f} s, "
                         f"{m['outcome'].get('epochs_completed', '?')} of "
                         f"{m['chosen']['epochs']} planned epochs" for m in report["members"])
                     + " (the epochs above are their sum; the replay gives each member the "
                     "first's epochs).")
    return lines

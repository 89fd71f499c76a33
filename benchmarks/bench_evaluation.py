"""What the evaluation sections of issue 13 add to `evaluate` (and so to the quickstart), measured
side by side in one process on a copy of one run folder:

    python benchmarks/bench_evaluation.py runs/<run folder> [--n-boot 1000]

Times, in seconds: the evaluation as it ran before the new sections (plain metrics, TTA of the
test split, temperature scaling, plots), then each addition alone: TTA of the validation split
(the melanoma rule of the TTA variant is fixed on it), selective prediction, subgroups,
corruptions (6 x 5 conditions), their plots and the model card; then the full evaluation with
every section. Nothing is written into the given run folder.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable


def timed(label: str, function: Callable[[], Any], rows: list[tuple[str, float]]) -> Any:
    started = time.perf_counter()
    value = function()
    rows.append((label, time.perf_counter() - started))
    print(f"{label:<58} {rows[-1][1]:7.1f} s", flush=True)
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--n-boot", type=int, default=1000)
    args = parser.parse_args()

    from utils.evaluation import evaluate, model_card, selective, subgroups, tta
    from utils.scoring import predictions
    from utils.training import runs

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(shutil.copytree(args.run_dir, Path(tmp) / "run"))
        for name in run_dir.glob("predictions_*_*.csv"):  # start from the training outputs only
            name.unlink()
        rows: list[tuple[str, float]] = []
        n = args.n_boot
        timed("warm-up (TensorFlow import, first model load and trace)",
              lambda: evaluate.evaluate(run_dir, n_boot=10, tta=True, plots=False,
                                        selective=False, subgroups=False, card=False), [])
        timed("before: metrics + test TTA + temperature + plots", lambda: evaluate.evaluate(
            run_dir, n_boot=n, tta=True, calibrate=True, selective=False, subgroups=False,
            card=False), rows)
        frame = predictions.read_predictions(run_dir / runs.predictions_name("test"))
        val = predictions.read_predictions(run_dir / runs.predictions_name("val"))
        classes = predictions.class_columns(frame)
        timed("+ TTA of the validation split", lambda: evaluate.tta_predictions(
            run_dir, "val", classes, tuple(tta.DIHEDRAL_VIEWS)), rows)
        section = timed("+ selective prediction", lambda: selective.selective_section(
            frame, val, n), rows)
        from utils.data.manifest import load_manifest

        manifest = load_manifest(run_dir / runs.MANIFEST)
        groups = timed("+ subgroups", lambda: subgroups.subgroup_section(
            frame, manifest, n), rows)
        corrupt, _ = timed("+ corruptions (31 conditions)", lambda: evaluate.corruption_results(
            run_dir, "test", classes, n, 0), rows)
        result = {"selective": section, "subgroups": groups, "corruptions": corrupt,
                  "metrics": {"balanced_accuracy": {"value": 0.5}}}
        timed("+ risk-coverage, subgroup and corruption plots", lambda: evaluate.section_plots(
            run_dir / runs.PLOTS_DIR, "test", result), rows)
        full = timed("after: every section (evaluate --tta --calibrate --corruptions)",
                     lambda: evaluate.evaluate(run_dir, n_boot=n, tta=True, calibrate=True,
                                               corruptions=True, card=False), rows)
        timed("+ model card", lambda: model_card.build_card(run_dir, full, "benchmark"), rows)
        before, after = rows[0][1], rows[-2][1] + rows[-1][1]
        print(f"\nadded by the new sections: {after - before:.1f} s "
              f"({before:.1f} s -> {after:.1f} s; {len(frame)} test images, "
              f"{len(val)} validation images, n_boot {n})")


if __name__ == "__main__":
    main()

"""The leakage audit's report: markdown, its JSON twin and the budget-sweep figure.

Every number comes from the audit's summary (utils.studies.audit.audit); the plain-words
paragraph is computed from it too, never typed.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from utils import fileio
from utils.figures import save_figure
from utils.studies.paper_protocol import PROTOCOL_NAMES, PROTOCOLS
from utils.tables import format_ci, markdown_table

FIGURE_SUFFIX = "_sweep.png"
SYNTHETIC_NOTE = ("the generated synthetic default (HAM10000 layout; synthetic images: these "
                  "numbers check the code, they are not a result)")


def _pct(stats: dict[str, Any] | None) -> str:
    """A rate with its CI in percent points, e.g. '61.2 % [58.0, 64.1]'."""
    if not stats or stats.get("value") is None:
        return "n/a"
    low, high = stats.get("ci_low"), stats.get("ci_high")
    text = f"{100 * stats['value']:.1f} %"
    return text if low is None or high is None else f"{text} [{100 * low:.1f}, {100 * high:.1f}]"


def _points(stats: dict[str, Any]) -> str:
    """A difference of rates in percentage points with its CI."""
    if stats.get("value") is None:
        return "n/a"
    return (f"{100 * stats['value']:+.1f} points [{100 * stats['ci_low']:+.1f}, "
            f"{100 * stats['ci_high']:+.1f}]")


def main_table(budget: dict[str, Any]) -> str:
    """Own and clean test scores (means over seeds) and the paired inflation, per protocol."""
    paired = budget["paired"]
    rows = []
    for protocol in PROTOCOLS:
        mean, inflation = paired["mean"][protocol], paired["inflation"][protocol]
        rows.append([PROTOCOL_NAMES[protocol],
                     _pct(mean["own_test"]["accuracy"]), _pct(mean["clean_test"]["accuracy"]),
                     _pct(mean["clean_test"]["accuracy_at_own_mix"]),
                     _points(inflation["accuracy_at_own_mix"]),
                     _pct(mean["own_test"]["balanced_accuracy"]),
                     _pct(mean["clean_test"]["balanced_accuracy"]),
                     _points(inflation["balanced_accuracy"])])
    return markdown_table(rows, ["protocol", "accuracy, own test", "accuracy, clean test",
                                 "accuracy, clean test at the own test's class mix",
                                 "inflation of accuracy (own - clean, same mix)",
                                 "balanced acc., own test", "balanced acc., clean test",
                                 "inflation of balanced acc."])


def seed_table(budget: dict[str, Any]) -> str:
    """Every model: own and clean scores with lesion-bootstrap CIs, last-epoch train accuracy."""
    rows = []
    for protocol in PROTOCOLS:
        for seed, result in budget["results"][protocol].items():
            rows.append([protocol, seed, format_ci(result["own_test"]["accuracy"]),
                         format_ci(result["clean_test"]["accuracy"]),
                         format_ci(result["own_test"]["balanced_accuracy"]),
                         format_ci(result["clean_test"]["balanced_accuracy"]),
                         result["final_train_accuracy"]])
    return markdown_table(rows, ["protocol", "seed", "accuracy own", "accuracy clean",
                                 "balanced acc. own", "balanced acc. clean",
                                 "train accuracy, last epoch"])


def class_table(budget: dict[str, Any]) -> str:
    """Recall per class (the paper's per-class accuracy), own vs clean test, mean over seeds."""
    recall = budget["per_class_recall"]
    classes = list(recall[PROTOCOLS[0]]["clean_test"])
    rows = [[code, *(recall[p][t].get(code) for p in PROTOCOLS for t in ("own_test",
                                                                        "clean_test"))]
            for code in classes]
    return markdown_table(rows, ["class", "published, own test", "published, clean test",
                                 "ours, own test", "ours, clean test"])


def sweep_table(summary: dict[str, Any]) -> str:
    """One row per budget and protocol: accuracy own / clean (raw and at the own test's class
    mix), balanced accuracy own / clean, and the two class-mix-free inflations with CIs."""
    rows = []
    for budget in summary["budgets"]:
        paired = budget["paired"]
        for protocol in PROTOCOLS:
            mean, inflation = paired["mean"][protocol], paired["inflation"][protocol]
            train = [r["final_train_accuracy"] for r in budget["results"][protocol].values()]
            rows.append([_budget_name(budget), len(budget["seeds"]), protocol,
                         _pct(mean["own_test"]["accuracy"]), _pct(mean["clean_test"]["accuracy"]),
                         _pct(mean["clean_test"]["accuracy_at_own_mix"]),
                         _points(inflation["accuracy_at_own_mix"]),
                         _pct(mean["own_test"]["balanced_accuracy"]),
                         _pct(mean["clean_test"]["balanced_accuracy"]),
                         _points(inflation["balanced_accuracy"]),
                         sum(train) / len(train) if None not in train else None])
    return markdown_table(rows, [
        "budget", "seeds", "protocol", "accuracy own test", "accuracy clean test",
        "accuracy clean test at own mix", "inflation of accuracy (same mix)",
        "balanced acc. own test", "balanced acc. clean test", "inflation of balanced acc.",
        "train accuracy"])


SWEEP_PANELS = (("accuracy", "accuracy_at_own_mix",
                 "accuracy (clean test re-weighted to the own test's class mix)"),
                ("balanced_accuracy", "balanced_accuracy", "balanced accuracy"))


def sweep_figure(summary: dict[str, Any], path: str | os.PathLike) -> Path:
    """Per budget and protocol, own test vs clean test (95 % CIs) in two class-mix-free views:
    accuracy with the clean test at the own test's class mix, and balanced accuracy. (Raw clean
    accuracy is not comparable: the clean test is 67 % nv, the published test 16 %.)"""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11.0, 4.6))
    budgets = sorted(summary["budgets"], key=lambda b: (b["image_size"], b["epochs"]))
    labels = [f"{b['image_size']} px\n{b['epochs']} ep" for b in budgets]
    styles = {("published", "own_test"): ("tab:red", "o", "-"),
              ("published", "clean_test"): ("tab:red", "s", "--"),
              ("lesion", "own_test"): ("tab:blue", "o", "-"),
              ("lesion", "clean_test"): ("tab:blue", "s", "--")}
    for panel, (own_rate, clean_rate, title) in enumerate(SWEEP_PANELS):
        ax = figure.add_subplot(1, 2, panel + 1)
        for (protocol, test), (colour, marker, line) in styles.items():
            rate = own_rate if test == "own_test" else clean_rate
            stats = [b["paired"]["mean"][protocol][test][rate] for b in budgets]
            x = [i + (-0.06 if protocol == "published" else 0.06) for i in range(len(budgets))]
            y = [s["value"] for s in stats]
            err = [[s["value"] - s["ci_low"] for s in stats],
                   [s["ci_high"] - s["value"] for s in stats]]
            ax.errorbar(x, y, yerr=err, color=colour, marker=marker, linestyle=line, capsize=3,
                        label=f"{'published' if protocol == 'published' else 'ours'}: "
                              f"{'own test' if test == 'own_test' else 'clean test'}")
        if own_rate == "accuracy":
            ax.axhline(summary["published_accuracy"], color="black", linestyle=":", linewidth=1)
            ax.text(len(budgets) - 1, summary["published_accuracy"] - 0.03,
                    "published: 97.9 % (DenseNet201, ImageNet,\n224 px, 33 epochs; own test)",
                    ha="right", va="top", fontsize=8)
        ax.set_xticks(range(len(budgets)), labels)
        ax.set_ylim(0, 1.02)
        ax.set_ylabel(f"test {title.split(' (')[0]} (95 % CI)")
        ax.set_title(title, fontsize=9)
        ax.legend(loc="lower right", fontsize=8)
    figure.suptitle(f"Own test vs clean test, {summary['config']['backbone']} "
                    f"(weights: {summary['config']['weights'] or 'none'})")
    figure.tight_layout()
    return save_figure(figure, path)


def _verdict(stats: dict[str, Any], what: str) -> str:
    """'inflates X by ...' where the CI excludes zero, else 'within noise'."""
    if stats.get("ci_low") is None:
        return f"{what} could not be estimated"
    if stats["ci_low"] > 0:
        return f"the leak inflates {what} by {_points(stats)}"
    if stats["ci_high"] < 0:
        return f"{what} is lower on the own test by {_points(stats)}"
    return f"the own - clean difference in {what} is within noise, {_points(stats)}"


def _budget_name(budget: dict[str, Any]) -> str:
    epochs = budget["epochs"]
    return f"{budget['image_size']} px x {epochs} epoch{'s' if epochs != 1 else ''}"


def plain_summary(summary: dict[str, Any]) -> str:
    """The result in plain words, computed from the summary."""
    main = summary["budgets"][0]
    paired = main["paired"]
    pub, ours = paired["mean"]["published"], paired["mean"]["lesion"]
    inflation = paired["inflation"]["published"]["accuracy_at_own_mix"]
    balanced = paired["inflation"]["published"]["balanced_accuracy"]
    leak = summary["leakage"]["published"]
    lines = [
        f"At the main budget ({_budget_name(main)}, {len(main['seeds'])} seeds), models "
        f"trained under the published protocol score {_pct(pub['own_test']['accuracy'])} "
        f"accuracy on their own test split and {_pct(pub['clean_test']['accuracy'])} on "
        f"lesions no protocol saw, or {_pct(pub['clean_test']['accuracy_at_own_mix'])} at the "
        f"own test's class mix (largest class {_largest_share(summary, 'published', 'test')} of "
        f"the own test, {_largest_share(summary, 'clean', 'test')} of the clean test). At equal "
        f"class mix {_verdict(inflation, 'accuracy')}; {_verdict(balanced, 'balanced accuracy')} "
        "(paired 95 % CIs over seeds and lesions). "
        f"{100 * leak['test_augmented_share']:.0f} % of the published test split are augmented "
        f"copies and {100 * leak['test_origin_in_train_share']:.0f} % have their source image "
        "in training.",
        f"The lesion-grouped protocol's models score {_pct(ours['own_test']['accuracy'])} on "
        f"their own test and {_pct(ours['clean_test']['accuracy'])} on the clean test. On the "
        f"clean test, published minus ours is "
        f"{_points(paired['clean_difference']['accuracy'])} of accuracy and "
        f"{_points(paired['clean_difference']['balanced_accuracy'])} of balanced accuracy.",
    ]
    if len(summary["budgets"]) > 1:
        ordered = sorted(summary["budgets"], key=lambda b: _train_accuracy(b, "published"))
        lines.append(
            "Across the budget sweep, as the published protocol's models memorise more (last-epoch "
            "training accuracy " + ", ".join(f"{_train_accuracy(b, 'published'):.2f} at "
                                              f"{_budget_name(b)}" for b in ordered)
            + "), the inflation of accuracy at equal class mix is " + ", ".join(
                _points(b["paired"]["inflation"]["published"]["accuracy_at_own_mix"])
                for b in ordered)
            + ".")
    lines.append(
        "The published 97.9 % is an own-test accuracy of the same kind, reached after far more "
        "memorisation (ImageNet DenseNet201, 224 px, 33 epochs, training accuracy 0.9999). At "
        f"these budgets the leak accounts for {_points(inflation)} of the published protocol's "
        "own-test accuracy; what the same models achieve on new lesions is "
        f"{_pct(pub['clean_test']['accuracy'])} (ours: {_pct(ours['clean_test']['accuracy'])}), "
        "and that, not the own-test number, is what a clinic would see.")
    return "\n\n".join(lines)


def _largest_share(summary: dict[str, Any], manifest: str, split: str) -> str:
    """The share of the most frequent class in one split of a manifest, e.g. '67 %'."""
    counts = [row.get(split, 0) for row in summary["data"]["counts"][manifest].values()]
    return f"{100 * max(counts) / max(sum(counts), 1):.0f} %"


def _train_accuracy(budget: dict[str, Any], protocol: str) -> float:
    values = [r["final_train_accuracy"] for r in budget["results"][protocol].values()
              if r["final_train_accuracy"] is not None]
    return sum(values) / len(values) if values else float("nan")


def markdown(summary: dict[str, Any], figure_name: str) -> str:
    config, data = summary["config"], summary["data"]
    leak, main = summary["leakage"], summary["budgets"][0]
    counts = data["counts"]
    clean_n = sum(sum(v.values()) for v in counts["clean"].values())
    copies = ", ".join(f"{c} {k}" for c, k in summary["copies"].items())
    lines = [
        "# Leakage audit: the published protocol against the lesion-grouped protocol", "",
        f"Generated by `{summary['command']}` (utils/studies/audit.py) on "
        f"{summary['machine']}: {summary['train_seconds'] / 60:.0f} min of training, "
        f"{summary['seconds'] / 60:.0f} min for the last invocation (a resumed audit reuses "
        "finished models)" + (f"; {summary['note']}" if summary.get("note") else "") + ". "
        "Do not edit by hand; the JSON twin holds every number.", "",
        "## Result", "", plain_summary(summary), "",
        "## What was compared", "",
        f"- Data: {config['data_dir'] or SYNTHETIC_NOTE}, {data['n_images']} images of "
        f"{data['n_lesions']} lesions"
        + (f", at most {config['cap_per_class']} images per class" if config["cap_per_class"]
           else "") + ".",
        f"- Clean test: {clean_n} untouched originals, lesion-disjoint and class-stratified "
        f"({config['clean_test_fraction']:.0%} of each class), held out before either protocol.",
        f"- Published protocol (utils/studies/paper_protocol.py): every image of each class "
        f"folder augmented with the published recipe (rotation 180, zoom 0.2, shifts 0.2, both "
        f"flips, nearest fill, min-max rescale) and copies per image {copies} "
        f"({'name collisions replayed' if config['collisions'] else 'no collisions'}), then the "
        f"published counter split per class folder: {leak['published']['n_train']} / "
        f"{leak['published']['n_val']} / {leak['published']['n_test']} images.",
        f"- Ours: lesion-grouped split of the same images, then the training split balanced to "
        f"{config['balance_target'] or 'the largest class'} per class: "
        f"{leak['lesion']['n_train']} / {leak['lesion']['n_val']} / {leak['lesion']['n_test']}.",
        f"- Same model and budget for both: {config['backbone']}, weights "
        f"{config['weights'] or 'none (from scratch)'}, batch {config['batch_size']}, Adam "
        f"{config['learning_rate']} with cosine decay, equal optimizer steps (epochs counted "
        f"over the published training split), the last epoch kept (no selection); training "
        f"seeds {config['seeds']}; data seed {config['data_seed']}.", "",
        markdown_table([[PROTOCOL_NAMES[p], f"{100 * leak[p]['test_augmented_share']:.1f} %",
                         f"{100 * leak[p]['test_lesion_in_train_share']:.1f} %",
                         f"{100 * leak[p]['test_origin_in_train_share']:.1f} %"]
                        for p in PROTOCOLS],
                       ["protocol", "test images that are augmented copies",
                        "test images whose lesion is in training",
                        "test images whose source image is in training"]), "",
        f"## Main budget: {_budget_name(main)}, seeds {', '.join(map(str, main['seeds']))}",
        "",
        "Means over seeds; 95 % CIs from a paired bootstrap over seeds and lesions "
        "(utils/studies/audit_stats.py).", "", main_table(main), "",
        "Every model (lesion-bootstrap 95 % CIs):", "", seed_table(main), "",
        "Recall per class (the paper's per-class accuracy; the published notebooks scored df "
        "441/441 and vasc 500/500 on their own test), mean over seeds:", "", class_table(main),
        "", "## Budget sweep", "", f"![sweep]({figure_name})", "", sweep_table(summary), "",
        "## Leakage beyond lesion_id", "",
    ]
    lines += _extra_checks(summary)
    lines += ["", "## Limits", "",
              "- Trained from scratch on a CPU at small sizes: the published models (ImageNet "
              "weights, 224 px, 33 epochs) memorised far more, and the inflation grows with "
              "memorisation (sweep). Re-run the same command with `--weights imagenet` and larger "
              "budgets on a GPU to measure it there.",
              "- The published mel folder (6,016 files of unknown origin) is replaced by "
              "HAM10000's own mel images with 6 copies each; HAM akiec follows the printed folder "
              "sizes (25 copies), not the code cell (5).",
              "- The folder order the published counter ran over is modelled as creation order "
              "(utils/augmentation/published.py); another listing order changes which files are "
              "tested, not that copies of training images are."]
    return "\n".join(lines) + "\n"


def _extra_checks(summary: dict[str, Any]) -> list[str]:
    near, meta = summary["near_duplicates"], summary["metadata_leak"]
    ours, held = near["our_default_split"], near["clean_test_vs_pool"]
    lines = [f"- Near-duplicate images (perceptual hash within {near['hash_threshold']} bits, "
             f"then high-pass thumbnail correlation >= {near['min_correlation']}; "
             "utils/data/duplicates.py): "
             f"{ours['pairs']} pairs, {ours['pairs_of_different_lesions']} of them between "
             f"different lesion ids; {ours['pairs_across_sets']} of those cross our default "
             f"lesion-grouped train/val/test split, {held['pairs_across_sets']} cross the "
             "audit's clean test and pool. `python -m utils split --group-by near_duplicates` "
             "keeps them together."]
    if meta:
        above = (meta["balanced_accuracy"]["ci_low"] or 0) > meta["chance"]
        lines.append(f"- Metadata alone: predicting the class from `{meta['field']}` "
                     f"({', '.join(meta['values'])}) on our split gives balanced accuracy "
                     f"{format_ci(meta['balanced_accuracy'])} against chance "
                     f"{meta['chance']:.3f} (accuracy {format_ci(meta['accuracy'])}): "
                     + ("above chance, so the field carries label information and must never "
                        "be a model input." if above else "not distinguishable from chance."))
    else:
        lines.append("- Metadata alone: the dataset has no dx_type field; not measured.")
    return lines


def readme_text(summary: dict[str, Any], report: str | os.PathLike,
                readme: str | os.PathLike) -> str:
    """The README's account of the published result: the plain-words result and the figure."""
    report = Path(report).resolve()
    base = Path(readme).resolve().parent
    link = os.path.relpath(report, base)
    figure = os.path.relpath(report.with_name(report.stem + FIGURE_SUFFIX), base)
    return (f"Generated by `{summary['command']}` ([report]({link})); do not edit by hand.\n\n"
            f"{plain_summary(summary)}\n\n![Own test vs clean test per budget]({figure})")


def write_report(summary: dict[str, Any], out: str | os.PathLike) -> list[Path]:
    """<out>.md, <out>.json and <out>_sweep.png, atomically."""
    out = Path(out)
    summary = {**summary, "machine": summary.get("machine") or machine()}
    figure = out.with_name(out.stem + FIGURE_SUFFIX)
    sweep_figure(summary, figure)
    return [fileio.write_text(out, markdown(summary, figure.name)),
            fileio.write_json(out.with_suffix(".json"), summary), figure]


def machine() -> str:
    """The machine in words (CPU cores or GPUs)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return (f"{len(gpus)} GPU(s)" if gpus else f"{os.cpu_count()} CPU cores") + \
        f", {platform.machine()}"

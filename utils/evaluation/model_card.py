"""The model card: one markdown page per run, built only from the run folder and its evaluation.

`build_card(run_dir, result, command)` reads the run's config.json, run_info.json, manifest.csv
and external/ results, and the metrics of `python -m utils evaluate` (`result`, as in
metrics.json). Sections: model, data, test metrics (plain / TTA / temperature-scaled), per-class
table, confusion matrix, selective prediction, subgroups, corruptions, external test sets,
Grad-CAM localisation (the end-to-end job), the reporting checklist (utils.evaluation.checklist)
and intended use. A section that was not computed says which option computes it; nothing is
typed by hand. `python -m utils evaluate` writes it into the run folder, `python -m utils
reproduce` into the report folder.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from utils.data.manifest import augmented_mask, load_manifest
from utils.evaluation import checklist
from utils.evaluation.subgroups import MIN_SUBGROUP_IMAGES
from utils.scoring import metrics
from utils.tables import format_ci, markdown_table
from utils.training import budget, runs
from utils.training.config import TrainConfig

PER_CLASS = (("precision", "precision"), ("sensitivity", "recall (sensitivity)"),
             ("specificity", "specificity"), ("f1", "F1"), ("mcc", "MCC"), ("auc", "AUC"))
PROVENANCE = (
    "Balanced accuracy (mean per-class recall; a tied maximum counts as wrong) and the AUCs "
    "(per class one-vs-rest, macro = their mean) are computed as the official "
    "`isic-challenge-scoring` 5.6.0 computes them (tested equal). Accuracy, macro-F1, the "
    "per-class precision, recall, specificity, F1 and MCC (from the argmax decision) and the "
    "melanoma operating point are this repository's additions; the official scorer's per-class "
    "sensitivity and specificity threshold each probability at 0.5 instead.")


def _stats(section: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
    return (section or {}).get("metrics", {}).get(name)


def data_lines(config: TrainConfig, manifest: pd.DataFrame) -> list[str]:
    """Data source, split unit and the images per class and split."""
    originals = manifest[~augmented_mask(manifest)]
    crossing = int((originals.groupby("lesion_id")["split"].nunique() > 1).sum())
    counts = pd.crosstab(manifest["label"], manifest["split"])
    counts = counts[[s for s in ("train", "val", "test") if s in counts.columns]]
    copies = augmented_mask(manifest)
    copies_outside_train = int((copies & (manifest["split"] != "train")).sum())
    lines = [f"- {checklist.data_source(config)}"]
    if crossing or copies_outside_train:  # the published protocol (reproduce --protocol paper)
        lines.append(
            f"- **Leaking split** (manifest.csv): {crossing} of {originals['lesion_id'].nunique()} "
            f"lesions are in more than one set and {copies_outside_train} augmented copies sit in "
            "validation or test. The test scores below overstate performance on new lesions "
            "(see reports/leakage_audit.md).")
    else:
        lines.append(f"- Lesion-grouped split (manifest.csv): {originals['lesion_id'].nunique()} "
                     "lesions, none of them in more than one set.")
    if copies.any() and not copies_outside_train:
        lines.append(f"- The training split holds {int(copies.sum())} offline-"
                     "augmented copies of its own images (counted below).")
    return lines + ["", markdown_table(counts, ["class", *counts.columns], index=True)]


# evaluation sections a run's result can be (result keys; "plain" is the result itself)
VARIANT_NAMES = {"plain": "plain predictions", "tta": "TTA predictions",
                 "metadata": "plain predictions fused with metadata",
                 "tta_metadata": "TTA predictions fused with metadata"}
COLUMN_NAMES = {"plain": "plain", "tta": "TTA", "metadata": "plain + metadata",
                "tta_metadata": "TTA + metadata", "calibration": "temperature-scaled"}


def result_variant(predict_tta: bool, metadata_fusion: bool = False) -> str:
    """The evaluation section that is a recipe's result (see VARIANT_NAMES)."""
    return {(False, False): "plain", (True, False): "tta", (False, True): "metadata",
            (True, True): "tta_metadata"}[(bool(predict_tta), bool(metadata_fusion))]


def metrics_lines(result: dict[str, Any], predict_tta: bool = False,
                  metadata_fusion: bool = False) -> list[str]:
    """Headline metrics of each variant, the operating point and where the numbers come from.

    predict_tta / metadata_fusion: the recipe predicts with TTA and / or fuses metadata, so its
    result is that column (said so)."""
    point = result.get("operating_point")
    names = ["balanced_accuracy", "accuracy", "macro_f1", "macro_auc"]
    if point:
        names += [point["sensitivity_name"], point["specificity_name"]]
    columns = ["plain", "tta", *(k for k in ("metadata", "tta_metadata") if k in result),
               "calibration"]
    rows = [[name, *(format_ci(_stats(result if c == "plain" else result.get(c), name))
                     for c in columns)] for name in names]
    lines = [f"## Test metrics ({result['n_images']} images, 95 % bootstrap CI over "
             f"{result['bootstrap']['unit']}s, {result['bootstrap']['n_boot']} replicates)", "",
             markdown_table(rows, ["metric", *(COLUMN_NAMES[c] for c in columns)]), ""]
    wanted = result_variant(predict_tta, metadata_fusion)
    if wanted != "plain" and wanted not in result:
        lines += ["This run's recipe predicts with " + _recipe_modes(predict_tta, metadata_fusion)
                  + ", but that was not evaluated (`python -m utils evaluate RUN"
                  + (" --tta" if predict_tta else "") + (" --metadata" if metadata_fusion else "")
                  + "`): the other columns are the same model predicting otherwise, **not the "
                  "recipe's result**.", ""]
    elif wanted != "plain":
        lines += ["This run's recipe predicts with " + _recipe_modes(predict_tta, metadata_fusion)
                  + " (config " + " and ".join(f"`{k}`" for k, on in (
                      ("predict_tta", predict_tta), ("metadata_fusion", metadata_fusion)) if on)
                  + ", chosen before this run on validation screening runs, not on this test "
                  f"split): **its result is the {COLUMN_NAMES[wanted]} column**; the other "
                  "columns are the same model predicting otherwise. The per-class table and the "
                  f"confusion matrix below are of the {VARIANT_NAMES[wanted]}."
                  + (f" Predicting the validation and test images over the 8 views took "
                     f"{result['tta']['predict_s']:.0f} s after training." if "predict_s" in
                     result.get("tta", {}) else ""), ""]
    if "metadata" in result:
        lines += [metadata_text(result["metadata"]), ""]
    if point:
        lines.append(
            f"Melanoma operating point: the rule \"P({point['class']}) >= "
            f"{point['threshold']:.4f}\" was fixed on the {point.get('val_images', '?')} "
            f"validation images as the lowest threshold reaching specificity "
            f"{point['target_specificity']:.2f} there (validation sensitivity "
            f"{point.get('val_sensitivity') or float('nan'):.3f}, specificity "
            f"{point.get('val_specificity') or float('nan'):.3f}); the test rows above show what "
            "that fixed rule achieves on test (the other variants fix their own threshold on "
            "their own validation predictions).")
    else:
        lines.append("No melanoma operating point: it is fixed on validation predictions, and "
                     "none were available (or the classes have no melanoma).")
    return lines + ["", PROVENANCE]


def _recipe_modes(predict_tta: bool, metadata_fusion: bool) -> str:
    return " and ".join(text for text, on in (
        ("test-time augmentation", predict_tta),
        ("patient metadata fused into the image probabilities", metadata_fusion)) if on)


def metadata_text(section: dict[str, Any]) -> str:
    """What the '+ metadata' columns are."""
    return ("The \"+ metadata\" columns multiply the image model's class probabilities with "
            "those of a multinomial logistic regression on the patient's age, sex and body site "
            f"({section.get('sites', '?')} sites), fitted on the training split only "
            f"({section.get('fitted_on', '?')}; `{section.get('metadata_model', '')}` in the run "
            "folder), and renormalise (utils/scoring/metadata_fusion.py: both models are "
            "class-balanced, so the product is the naive-Bayes fusion; no weight is tuned). "
            "Calibration, abstention, subgroups, corruptions, Grad-CAM and the external sets "
            "below use the image model alone.")


def headline_section(result: dict[str, Any], predict_tta: bool,
                     metadata_fusion: bool = False) -> tuple[dict[str, Any], str]:
    """(the evaluation section that is the run's result, its VARIANT_NAMES key): the recipe's
    prediction mode where it was evaluated, else plain. The card and `compare` both report
    this section."""
    wanted = result_variant(predict_tta, metadata_fusion)
    if wanted != "plain" and wanted in result:
        return {**result, **result[wanted]}, wanted
    return result, "plain"


def section_name(variant: str) -> str:
    return VARIANT_NAMES[variant] + (", the recipe's result" if variant != "plain" else "")


def per_class_lines(result: dict[str, Any], name: str = "plain predictions") -> list[str]:
    """Per-class precision, recall, specificity, F1, MCC and AUC with CIs (of `result`, one
    section of the evaluation, called `name`)."""
    support = result.get("support", {})
    rows = [[code, support.get(code, ""),
             *(format_ci(_stats(result, f"{metric}/{code}")) for metric, _ in PER_CLASS)]
            for code in result["classes"]]
    return [f"## Per-class metrics (test, {name}, 95 % CI)", "",
            markdown_table(rows, ["class", "test images", *(label for _, label in PER_CLASS)]),
            "", "One-vs-rest per class from the argmax decision; empty cells (n/a) are undefined "
                "(e.g. a class never predicted has no precision). All values with their CIs are "
                "in [metrics.csv](metrics.csv)."]


def confusion_lines(result: dict[str, Any], name: str = "plain predictions") -> list[str]:
    classes = result["classes"]
    lines = [f"Confusion matrix (test, {name}, counts; rows = true class, columns = predicted; "
             "a tied maximum counts as no prediction):", "",
             markdown_table([[label, *(int(v) for v in row[:len(classes)])]
                             for label, row in zip(classes, result["confusion_matrix"])],
                            ["true \\ predicted", *classes])]
    if "calibration" in result:
        cal = result["calibration"]
        lines += ["", f"Temperature {cal['temperature']:.3f} (fitted on validation): expected "
                  f"calibration error {cal['test_ece_before']:.3f} → {cal['test_ece_after']:.3f}."]
    return lines


def selective_lines(result: dict[str, Any]) -> list[str]:
    section = result.get("selective")
    head = ["## Selective prediction (abstaining on the least confident images)", ""]
    if section is None:
        return head + ["Not computed (`python -m utils evaluate` without --no-selective)."]
    lines = head + [
        f"Confidence: {section['confidence']}. Area under the risk-coverage curve (AURC, mean "
        f"error rate of the kept images over all coverages; lower is better): "
        f"{format_ci(section['aurc'])}; a perfect ranking of the same errors would give "
        f"{section['aurc_optimal']:.3f}, keeping every image gives the error rate "
        f"{section['risk_at_full_coverage']:.3f}.", ""]
    if not section["operating_points"]:
        return lines + [section.get("note", "")]
    mel = metrics.melanoma_class(result["classes"])
    rows = [["100 % (no abstention)", "", "1.000", result["n_images"],
             format_ci(_stats(result, "balanced_accuracy")),
             format_ci(_stats(result, f"sensitivity/{mel}")) if mel else "n/a",
             f"{section['risk_at_full_coverage']:.3f}"]]
    for point in section["operating_points"]:
        rows.append([f"{point['target_coverage']:.0%} of validation", f"{point['threshold']:.3f}",
                     format_ci(point["coverage"]), point["kept"],
                     format_ci(point["balanced_accuracy"]),
                     format_ci(point.get("melanoma_sensitivity")),
                     format_ci(point["selective_risk"])])
    return lines + [
        markdown_table(rows, ["operating point", "confidence threshold", "test coverage",
                              "kept test images", "balanced accuracy", "melanoma sensitivity",
                              "error rate"]), "",
        "Each threshold keeps the stated share of the VALIDATION images; applied unchanged to "
        "the test images it keeps the test coverage shown. Metrics are over the kept images "
        "(abstained images would go to a dermatologist). Plot: "
        "[risk-coverage](plots/test_risk_coverage.png); table: [selective.csv](selective.csv)."]


def _recall_cell(group: dict[str, Any], code: str) -> str:
    stats = group["metrics"].get(f"recall/{code}")
    if not stats or stats["value"] is None:
        return ""
    return f"{stats['value']:.2f} ({group['class_counts'][code]})"


def subgroup_lines(result: dict[str, Any]) -> list[str]:
    section = result.get("subgroups")
    head = ["## Subgroups", ""]
    if section is None:
        return head + ["Not computed (`python -m utils evaluate` without --no-subgroups)."]
    if not section["attributes"]:
        return head + [section.get("note", "No metadata to group by.")]
    classes = result["classes"]
    lines = head + [
        f"Test images (plain predictions) grouped by the metadata the dataset has. Groups "
        f"with fewer than "
        f"{section['min_images']} images are reported as too small, without numbers. Balanced "
        "accuracy is over the classes present in the group; recall cells read \"recall (images "
        "of that class in the group)\". CIs of every value are in "
        "[subgroups.csv](subgroups.csv); plot: [subgroups](plots/test_subgroups.png)."]
    for attribute in section["attributes"]:
        rows = []
        for group in attribute["groups"]:
            if group["status"] != "ok":
                rows.append([group["group"], group["n_images"], group["n_lesions"],
                             "too small", "", *([""] * len(classes))])
                continue
            rows.append([group["group"], group["n_images"], group["n_lesions"],
                         format_ci(group["metrics"]["balanced_accuracy"]),
                         format_ci(group["metrics"]["macro_auc"]),
                         *(_recall_cell(group, code) for code in classes)])
        lines += ["", f"**{attribute['attribute']}**", "",
                  markdown_table(rows, ["group", "images", "lesions", "balanced accuracy",
                                        "macro AUC", *(f"recall {c}" for c in classes)])]
    return lines


def corruption_lines(result: dict[str, Any]) -> list[str]:
    section = result.get("corruptions")
    head = ["## Corruptions", ""]
    if section is None:
        return head + ["Not computed (`python -m utils evaluate <run> --corruptions`)."]
    table = pd.DataFrame(section["table"])
    rows = []
    for name, group in table[table["corruption"] != "clean"].groupby("corruption", sort=False):
        values = group.sort_values("severity")["balanced_accuracy"].tolist()
        summary = section["per_corruption"][name]
        rows.append([name, section["parameters"][name]["meaning"],
                     ", ".join(f"{v:g}" for v in section["parameters"][name]["values"]),
                     *values, summary["mean_balanced_accuracy"],
                     summary["mean_relative_to_clean"]])
    return head + [
        f"The {section['n_images']} test images, read and resized as in training "
        f"({section['image_size']} px, {section['resize_policy']}), corrupted on the fly "
        "(OpenCV / scikit-image; ImageNet-C severities where one exists). Clean balanced "
        f"accuracy {section['clean_balanced_accuracy']:.3f}; mean over all corruptions and "
        f"severities {section['mean_balanced_accuracy']:.3f} "
        f"({section['mean_relative_to_clean']:.1%} of clean).", "",
        markdown_table(rows, ["corruption", "parameter", "severities 1-5",
                              *(f"BA s{s}" for s in range(1, section["severities"] + 1)),
                              "mean BA", "mean / clean"]), "",
        "CIs (lesion bootstrap, paired with clean for the ratio) are in "
        "[corruptions.csv](corruptions.csv); plot: [corruptions](plots/test_corruptions.png)."]


def external_lines(external: dict[str, dict[str, Any]]) -> list[str]:
    head = ["## External test sets", ""]
    if not external:
        return head + ["None evaluated. `python -m utils external <run> <folder>` predicts and "
                       "scores the ISIC 2018 Task 3 test (the official HAM10000 test) or the "
                       "ISIC 2019 images that are not from HAM10000."]
    rows = []
    for name, result in external.items():
        point = result.get("operating_point") or {}
        small = result["n_images"] < MIN_SUBGROUP_IMAGES
        cells = (["too small", "", "", ""] if small else
                 [format_ci(_stats(result, "balanced_accuracy")),
                  format_ci(_stats(result, "macro_auc")),
                  format_ci(_stats(result, point.get("sensitivity_name", "-"))),
                  format_ci(_stats(result, point.get("specificity_name", "-")))])
        official = result.get("official")
        rows.append([result.get("dataset", name), result["n_images"],
                     result.get("n_excluded_ham10000", len(result.get("excluded_images", []))),
                     *cells, "" if not official else
                     f"{official['balanced_accuracy']:.3f} / {official['macro_auc']:.3f}"])
    return head + [markdown_table(rows, [
        "test set", "images scored", "excluded", "balanced accuracy", "macro AUC",
        "melanoma sensitivity (val-fixed rule)", "melanoma specificity (val-fixed rule)",
        "official scorer BA / AUC"]), "",
        "ISIC 2019 codes map to HAM10000's as AK + SCC → akiec, the rest one to one; ISIC 2019 "
        "images from HAM10000 (lesion id HAM_…, or image ids ISIC_0024306-ISIC_0034320) are "
        "excluded. ISIC 2018 Task 3: ISIC_0035068 is excluded from scoring as the official "
        f"scorer does. Sets under {MIN_SUBGROUP_IMAGES} images are reported as too small. "
        "Per set: external/<set>/metrics.json."]


def gradcam_lines(localisation: pd.DataFrame, image_size: int, members: int = 1) -> list[str]:
    return ["## Grad-CAM localisation (test images with lesion masks)", "",
            *([f"This model averages {members} members; Grad-CAM explains the first "
               "(members/m0).", ""] if members > 1 else []),
            markdown_table(localisation[["label", "n_images", "energy_inside", "pointing_game",
                                         "mask_fraction"]],
                           ["class", "images", "CAM energy inside lesion", "pointing game",
                            "lesion share of image"]), "",
            "A uniform heatmap would score the lesion share in the energy column. Grad-CAM reads "
            f"the registry's last convolutional layer, whose grid is only about {image_size} / "
            "32 cells a side at this input size: coarse maps localise poorly."]


def build_card(run_dir: str | Path, result: dict[str, Any], command: str,
               localisation: pd.DataFrame | None = None,
               external: dict[str, dict[str, Any]] | None = None,
               source: str = "utils/evaluation/model_card.py") -> str:
    """The model card markdown of a run folder and its test evaluation `result`."""
    from utils.evaluation.external import external_results

    run_dir = Path(run_dir)
    config = TrainConfig.load(run_dir / runs.CONFIG)
    headline, variant = headline_section(result, config.predict_tta, config.metadata_fusion)
    info = json.loads((run_dir / runs.RUN_INFO).read_text())
    manifest = load_manifest(run_dir / runs.MANIFEST)
    external = external_results(run_dir) if external is None else external
    synthetic = checklist.is_synthetic(config)
    lines = [
        f"# Model card: {config.backbone} on {config.dataset}", "",
        f"Generated by `{command}` ({source}); every number below comes from this run"
        + (" on SYNTHETIC images: they show that the pipeline works, not how well any model "
           "diagnoses skin lesions." if synthetic else "."), "",
        "## Model",
        f"- Backbone {config.backbone}, input {config.image_size} px ({config.resize_policy}), "
        f"weights: {config.weights or 'none (trained from scratch)'}; head: global average "
        f"pooling, dropout {config.dropout}, softmax.",
        "- Training: " + ("two stages (frozen backbone, then top blocks)" if config.weights
                          else "one stage, whole network, BatchNorm learning") + "; "
        f"augmentation {config.augment}, imbalance handling {config.imbalance}, "
        f"seed {config.seed}; {info.get('epochs_completed', '?')} epochs in "
        f"{info.get('duration_s', 0):.0f} s on {info.get('device', '?')}"
        + (f" (all {config.members} members together)" if config.members > 1 else "") + "; "
        + ("the weights of the epoch with the best validation balanced accuracy."
           if config.select_best else "the weights of the last epoch (or their average)."),
        budget.recipe_line(config), *budget.card_lines(Path(run_dir), config), "",
        "## Data", *data_lines(config, manifest), "",
        *metrics_lines(result, config.predict_tta, config.metadata_fusion), "",
        *per_class_lines(headline, section_name(variant)), "",
        *confusion_lines(headline, section_name(variant)), "",
        "Plots: " + ("[training curves](plots/training_curves.png), "
                     if (Path(run_dir) / runs.HISTORY).is_file() else "") +
        "[confusion matrix](plots/test_confusion_matrix_normalised.png), "
        "[ROC curves](plots/test_roc_curves.png), "
        "[reliability](plots/test_reliability_compared.png).", "",
        *selective_lines(result), "", *subgroup_lines(result), "", *corruption_lines(result), "",
        *external_lines(external), "",
    ]
    if localisation is not None:
        lines += [*gradcam_lines(localisation, config.image_size, config.members), ""]
    lines += [*checklist.checklist_lines(config, info, manifest, result, external,
                                         localisation is not None), "",
              "## Intended use and limits",
              "Research and teaching only; not a medical device. Trained on "
              + ("synthetic images: these numbers show that the pipeline works, not how well "
                 "any model diagnoses skin lesions." if synthetic else
                 "dermoscopy images of one dataset; performance on other populations, devices, "
                 "skin tones and clinics is unknown beyond the external sets above.")]
    return "\n".join(lines) + "\n"


def section_names(card: str) -> Sequence[str]:
    """The level-2 headings of a card (for checks)."""
    return [line[3:].split(" (")[0] for line in card.splitlines() if line.startswith("## ")]

"""The reporting checklist of the model card, filled from the run itself.

Items follow the four domains of CLEAR Derm, the consensus checklist for image-based AI in
dermatology (Daneshjou R. et al., "Checklist for Evaluation of Image-Based Artificial
Intelligence Reports in Dermatology: CLEAR Derm Consensus Guidelines From the International Skin
Imaging Collaboration Artificial Intelligence Working Group", JAMA Dermatol. 2022;158(1):90-96):
data, technique, technical assessment, application. Each item is answered from the run folder
(config, run_info, manifest, metrics); an item no run can answer (skin tone where the metadata
lacks it, a reader study, prospective use) says so instead of being left out.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from utils.data import datasets
from utils.data.manifest import augmented_mask
from utils.tables import format_ci, markdown_table
from utils.training.config import TrainConfig

FILLED, PARTLY, CANNOT = "filled", "partly", "cannot be filled by a run"
CITATION = ("Daneshjou R. et al., CLEAR Derm consensus guidelines, JAMA Dermatol. "
            "2022;158(1):90-96")


def is_synthetic(config: TrainConfig) -> bool:
    """True for a run on synthetic images (the generated default or a synthetic folder)."""
    return config.data_dir is None or config.dataset.startswith("synthetic")


def dataset_facts(config: TrainConfig) -> datasets.DatasetInfo | None:
    """The public dataset a run trained on (None for synthetic images)."""
    return None if is_synthetic(config) else datasets.get_dataset(config.dataset)


def data_source(config: TrainConfig) -> str:
    """Where the images come from, with licence and citation."""
    info = dataset_facts(config)
    if info is None:
        where = (f"the folder {config.data_dir}" if config.data_dir else
                 f"the generated default ({config.synthetic_images} images, seed {config.seed})")
        layout = "ISIC 2019" if "isic" in config.dataset else "HAM10000"
        return (f"Synthetic dermoscopy-like images (utils.data.synthetic, {layout} layout) from "
                f"{where}; no real patient.")
    return (f"{info.title} from {config.data_dir}; licence {info.licence}; {info.citation}.")


def stored_sizes(paths: pd.Series) -> str:
    """The pixel sizes (width x height) of the image files as stored, most common first (read
    from the file headers)."""
    from PIL import Image

    counts: dict[str, int] = {}
    missing = 0
    for path in paths.astype(str):
        try:
            with Image.open(path) as image:
                key = f"{image.width}x{image.height}"
        except OSError:
            missing += 1
            continue
        counts[key] = counts.get(key, 0) + 1
    ranked = sorted(counts.items(), key=lambda item: -item[1])
    text = ", ".join(f"{size} ({n})" for size, n in ranked[:3])
    text += f", {len(ranked) - 3} other sizes" if len(ranked) > 3 else ""
    return (text or "none readable") + (f"; {missing} files not found" if missing else "")


def _demographics(test: pd.DataFrame) -> str:
    parts = []
    if "age" in test and test["age"].notna().any():
        q1, median, q3 = np.nanpercentile(test["age"].astype(float), [25, 50, 75])
        parts.append(f"age median {median:.0f} (IQR {q1:.0f}-{q3:.0f}, "
                     f"{int(test['age'].isna().sum())} unknown)")
    if "sex" in test and test["sex"].notna().any():
        counts = test["sex"].fillna("unknown").value_counts()
        parts.append("sex " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    known = "; ".join(parts) if parts else "no age or sex in the metadata"
    return (f"Test split: {known}. Skin tone (Fitzpatrick type) is not recorded in this "
            "dataset's metadata and cannot be reported.")


def _ground_truth(test: pd.DataFrame, config: TrainConfig) -> tuple[str, str]:
    if "dx_type" in test and test["dx_type"].notna().any():
        counts = test["dx_type"].value_counts()
        return FILLED, ("How the test diagnoses were confirmed (dx_type): "
                        + ", ".join(f"{k} {v}" for k, v in counts.items()) + ".")
    if dataset_facts(config) is None:
        return FILLED, "Synthetic labels: each image is drawn from its class's generator."
    return CANNOT, "The metadata does not say how each diagnosis was confirmed."


def _limits(result: dict[str, Any]) -> str:
    """The weakest class, subgroup and corruption, read from the result."""
    parts = []
    recalls = {c: (result["metrics"].get(f"sensitivity/{c}") or {}).get("value")
               for c in result["classes"]}
    recalls = {c: v for c, v in recalls.items() if v is not None}
    if recalls:
        worst = min(recalls, key=recalls.get)
        parts.append(f"lowest test recall: {worst} {recalls[worst]:.2f}")
    groups = [(a["attribute"], g["group"], g["metrics"]["balanced_accuracy"]["value"])
              for a in result.get("subgroups", {}).get("attributes", []) for g in a["groups"]
              if g["status"] == "ok" and g["metrics"]["balanced_accuracy"]["value"] is not None]
    if groups:
        attribute, group, value = min(groups, key=lambda g: g[2])
        parts.append(f"weakest subgroup: {attribute} = {group} (balanced accuracy {value:.2f})")
    corrupt = result.get("corruptions", {}).get("per_corruption", {})
    if corrupt:
        name = min(corrupt, key=lambda n: corrupt[n]["mean_relative_to_clean"])
        parts.append(f"most harmful corruption: {name} "
                     f"({corrupt[name]['mean_relative_to_clean']:.0%} of clean)")
    return "; ".join(parts) + "." if parts else "See the sections above."


def checklist_rows(config: TrainConfig, info: dict, manifest: pd.DataFrame,
                   result: dict[str, Any], external: dict[str, Any],
                   gradcam: bool) -> list[list[str]]:
    """[domain, item, status, this run] rows."""
    originals = manifest[~augmented_mask(manifest)]
    test = originals[originals["split"] == "test"]
    crossing = int((originals.groupby("lesion_id")["split"].nunique() > 1).sum())
    facts = dataset_facts(config)
    gt_status, gt_text = _ground_truth(test, config)
    point = result.get("operating_point")
    cal = result.get("calibration")
    extra = {k: v for k, v in config.to_dict().items() if k in ("preprocess",) and v}
    rows = [
        ["data", "image type", FILLED,
         ("Dermoscopic images" if facts else "Synthetic dermoscopy-like images")
         + f"; test images as stored (pixels): {stored_sizes(test['path'])}."],
        ["data", "source and licence", FILLED, data_source(config)],
        ["data", "image selection", FILLED,
         f"Every image of the folder that passed the reader's checks ({len(originals)} images"
         + (f", a seeded subset of {config.subset}" if config.subset else "") + "); none "
         "removed by hand."],
        ["data", "image quality and artefacts", CANNOT,
         "No quality filter: hair, rulers, ink and vignetting are left as distributed."],
        ["data", "patient characteristics", PARTLY, _demographics(test)],
        ["data", "class counts per set", FILLED, "See the Data table above."],
        ["data", "ground truth", gt_status, gt_text],
        ["data", "partition (split unit)", FILLED,
         f"Lesion-grouped, class-stratified split {list(config.split_fractions)} (seed "
         f"{config.seed}): {crossing} lesions in more than one set. Patient ids are not "
         "distributed, so one patient's different lesions may sit in different sets."],
        ["data", "data availability", FILLED if facts else PARTLY,
         (f"Public: {facts.homepage}. " if facts else "Regenerated by the command above. ")
         + "The split is saved with the run (manifest.csv)."],
        ["technique", "preprocessing", FILLED,
         f"Decode, {config.resize_policy} resize to {config.image_size} px, the backbone's "
         "own preprocess_input inside the model"
         + "".join(f"; {k} {v}" for k, v in extra.items())
         + f"; augmentation {config.augment}, imbalance {config.imbalance}."],
        ["technique", "model and training", FILLED,
         f"{config.backbone}, weights {config.weights or 'none (from scratch)'}, "
         f"{info.get('epochs_completed', '?')} epochs, batch {config.batch_size}; config.json "
         "has every setting."],
        ["technique", "model selection", FILLED,
         "Weights of the epoch with the best validation balanced accuracy; the melanoma "
         "threshold, temperature and abstention thresholds fitted on validation; the test "
         "split only produced the numbers of this card."],
        ["technique", "code and reproducibility", FILLED,
         f"Commit {info.get('git_commit') or 'unknown'}, TensorFlow {info.get('tensorflow', '?')}"
         f", seed {config.seed}. Same seed on another CPU can differ (oneDNN kernels)."],
        ["technical assessment", "metrics with CIs", FILLED,
         f"Balanced accuracy {format_ci(result['metrics']['balanced_accuracy'])} and the rest "
         f"with {result['bootstrap']['unit']}-bootstrap 95 % CIs "
         f"({result['bootstrap']['n_boot']} replicates); per-class table above."],
        ["technical assessment", "operating point", FILLED if point else CANNOT,
         (f"Melanoma rule fixed on validation (specificity {point['target_specificity']:.2f}): "
          f"test sensitivity {format_ci(result['metrics'][point['sensitivity_name']])}, "
          f"specificity {format_ci(result['metrics'][point['specificity_name']])}.") if point
         else "No validation predictions or no melanoma class."],
        ["technical assessment", "calibration", FILLED if cal else PARTLY,
         (f"Temperature {cal['temperature']:.2f} from validation; ECE "
          f"{cal['test_ece_before']:.3f} → {cal['test_ece_after']:.3f}.") if cal
         else "Not run (`evaluate --calibrate`)."],
        ["technical assessment", "subgroups", *_subgroup_status(result)],
        ["technical assessment", "robustness (corruptions)",
         FILLED if "corruptions" in result else PARTLY,
         (f"Mean balanced accuracy under 6 corruptions x 5 severities "
          f"{result['corruptions']['mean_balanced_accuracy']:.3f} (clean "
          f"{result['corruptions']['clean_balanced_accuracy']:.3f}).")
         if "corruptions" in result else "Not run (`evaluate --corruptions`)."],
        ["technical assessment", "abstention", FILLED if "selective" in result else PARTLY,
         f"AURC {format_ci(result['selective']['aurc'])}." if "selective" in result
         else "Not run."],
        ["technical assessment", "external test", FILLED if external else CANNOT,
         "; ".join(f"{r.get('dataset', n)}: {r['n_images']} images" for n, r in
                   external.items()) if external else
         "None evaluated with this run (`python -m utils external`)."],
        ["technical assessment", "explainability", FILLED if gradcam else PARTLY,
         "Grad-CAM localisation against lesion masks (section above)." if gradcam
         else "Not run (the end-to-end job `reproduce` adds Grad-CAM)."],
        ["technical assessment", "comparison with dermatologists", CANNOT,
         "No reader study."],
        ["application", "intended use", FILLED, "Research and teaching; not a medical device."],
        ["application", "target population and setting", PARTLY,
         "The population, devices and clinics of the training dataset; elsewhere unknown."
         if facts else "None: synthetic data."],
        ["application", "limitations", FILLED, _limits(result)],
        ["application", "clinical utility, prospective use", CANNOT,
         "Not evaluated: retrospective images only."],
    ]
    return rows


def _subgroup_status(result: dict[str, Any]) -> list[str]:
    section = result.get("subgroups")
    if section is None:
        return [PARTLY, "Not run."]
    if not section["attributes"]:
        return [CANNOT, section.get("note", "No metadata.")]
    names = ", ".join(a["attribute"] for a in section["attributes"])
    return [FILLED, f"By {names}; groups under {section['min_images']} images marked too small."]


def checklist_lines(config: TrainConfig, info: dict, manifest: pd.DataFrame,
                    result: dict[str, Any], external: dict[str, Any],
                    gradcam: bool) -> list[str]:
    """The checklist section of the model card."""
    rows = checklist_rows(config, info, manifest, result, external, gradcam)
    return ["## Reporting checklist (CLEAR Derm)", "",
            f"Items of the four CLEAR Derm domains ({CITATION}), each answered from this run; "
            f"\"{CANNOT}\" marks what no training run can answer.", "",
            markdown_table(rows, ["domain", "item", "status", "this run"])]



"""Subgroup performance: is the model equally good for every patient group and body site?

The test predictions are joined to the run's split manifest (which keeps the dataset's metadata)
by image_id, then split by each attribute the metadata has:

- age band (`AGE_BANDS`: <30, 30-44, 45-59, 60-74, 75+ years), sex, anatomical site (`site`:
  HAM10000's localization, ISIC 2019's anatom_site_general);
- how the diagnosis was confirmed (`dx_type`: histo, follow_up, consensus, confocal; HAM10000);
- image source, where the images come from more than one (ISIC 2019: HAM10000, BCN20000 or the
  rest of the ISIC archive, read from the lesion id; utils.data.datasets.image_source).
Missing values form their own "unknown" group.

Per group: images, lesions, images per class, and, when the group holds at least
`MIN_SUBGROUP_IMAGES` images, balanced accuracy (over the classes present in the group), macro
AUC and per-class recall, each with a lesion-bootstrap 95 % CI. Smaller groups are reported as
"too small", without numbers: a metric on a handful of images is noise.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from utils.data import datasets
from utils.scoring import metrics, predictions

MIN_SUBGROUP_IMAGES = 30  # groups with fewer test images are "too small" (no numbers)
AGE_BANDS: tuple[tuple[float, float, str], ...] = (
    (0, 30, "<30"), (30, 45, "30-44"), (45, 60, "45-59"), (60, 75, "60-74"), (75, np.inf, "75+"))
UNKNOWN = "unknown"
TOO_SMALL = "too small"
ATTRIBUTE_COLUMNS: tuple[tuple[str, str], ...] = (  # (attribute name, metadata column)
    ("age band", "age"), ("sex", "sex"), ("anatomical site", "site"),
    ("diagnosis confirmation (dx_type)", "dx_type"))
SOURCE = "image source"


def age_band(ages: pd.Series) -> pd.Series:
    """The AGE_BANDS label of each age (UNKNOWN where missing)."""
    values = pd.to_numeric(ages, errors="coerce")
    out = pd.Series(UNKNOWN, index=ages.index, dtype=object)
    for low, high, label in AGE_BANDS:
        out[(values >= low) & (values < high)] = label
    return out


def attach_metadata(frame: pd.DataFrame, manifest: pd.DataFrame) -> pd.DataFrame:
    """The predictions frame with the manifest's metadata columns (joined by image_id)."""
    extra = [c for c in ("age", "sex", "site", "dx_type") if c in manifest.columns]
    meta = manifest.drop_duplicates("image_id").set_index("image_id")[extra]
    return frame.join(meta, on="image_id")


def attributes(rows: pd.DataFrame) -> dict[str, pd.Series]:
    """{attribute: group label per row} for every attribute the metadata has (a column with at
    least one known value; the source only where the images come from several)."""
    out: dict[str, pd.Series] = {}
    for name, column in ATTRIBUTE_COLUMNS:
        if column not in rows or rows[column].isna().all():
            continue
        if column == "age":
            out[name] = age_band(rows[column])
        else:
            out[name] = rows[column].astype(object).where(rows[column].notna(), UNKNOWN).astype(str)
    sources = pd.Series([datasets.image_source(i, lesion) for i, lesion in
                         zip(rows["image_id"], rows["lesion_id"])], index=rows.index)
    if sources.nunique() > 1:
        out[SOURCE] = sources
    return out


def _group_order(name: str, labels: pd.Series) -> list[str]:
    if name == "age band":
        return [band for *_, band in AGE_BANDS if band in set(labels)] + (
            [UNKNOWN] if UNKNOWN in set(labels) else [])
    counts = labels.value_counts()
    return sorted(counts.index, key=lambda g: (g == UNKNOWN, -counts[g], g))


def group_result(rows: pd.DataFrame, classes: tuple[str, ...], min_images: int, n_boot: int,
                 seed: int) -> dict[str, Any]:
    """Sizes, and (large enough groups) balanced accuracy, macro AUC and per-class recall."""
    y_true, probs, _ = predictions.arrays_from_predictions(rows)
    counts = {c: int((y_true == k).sum()) for k, c in enumerate(classes) if (y_true == k).any()}
    out: dict[str, Any] = {"n_images": int(len(rows)),
                           "n_lesions": int(rows["lesion_id"].fillna(rows["image_id"]).nunique()),
                           "class_counts": counts}
    if len(rows) < min_images:
        return {**out, "status": TOO_SMALL}
    result = metrics.evaluate_arrays(y_true, probs, classes, metrics.bootstrap_groups(rows),
                                     n_boot, seed)
    values = {"balanced_accuracy": result["metrics"]["balanced_accuracy"],
              "macro_auc": result["metrics"]["macro_auc"]}
    values.update({f"recall/{c}": result["metrics"][f"sensitivity/{c}"] for c in counts})
    return {**out, "status": "ok", "metrics": values}


def subgroup_section(frame: pd.DataFrame, manifest: pd.DataFrame | None,
                     n_boot: int = metrics.DEFAULT_N_BOOT, seed: int = 0,
                     min_images: int = MIN_SUBGROUP_IMAGES) -> dict[str, Any]:
    """The subgroup section of metrics.json for test predictions `frame`."""
    classes = predictions.validate_predictions(frame)
    section: dict[str, Any] = {"min_images": int(min_images), "attributes": []}
    if manifest is None:
        section["note"] = "no split manifest beside the predictions: no metadata to group by"
        return section
    rows = attach_metadata(frame.reset_index(drop=True), manifest)
    found = attributes(rows)
    if not found:
        section["note"] = "the metadata has no age, sex, site, dx_type or source column"
    columns = list(frame.columns)  # the predictions' own columns (metadata joined after them)
    for name, labels in found.items():
        groups = []
        for group in _group_order(name, labels):
            result = group_result(rows.loc[labels == group, columns], classes, min_images,
                                  n_boot, seed)
            groups.append({"group": group, **result})
        section["attributes"].append({"attribute": name, "groups": groups})
    return section


def table(section: dict[str, Any]) -> pd.DataFrame:
    """subgroups.csv: one row per attribute, group and metric (too-small groups: one row, no
    value)."""
    rows = []
    for attribute in section["attributes"]:
        for group in attribute["groups"]:
            base = {"attribute": attribute["attribute"], "group": group["group"],
                    "n_images": group["n_images"], "n_lesions": group["n_lesions"],
                    "status": group["status"]}
            if group["status"] != "ok":
                rows.append({**base, "metric": "", "class": ""})
                continue
            for name, stats in group["metrics"].items():
                metric, _, code = name.partition("/")
                n_class = group["class_counts"].get(code) if code else None
                rows.append({**base, "metric": metric, "class": code, "n_class": n_class,
                             **stats})
    return pd.DataFrame(rows, columns=["attribute", "group", "n_images", "n_lesions", "status",
                                       "metric", "class", "n_class", "value", "ci_low",
                                       "ci_high"])


def plot(section: dict[str, Any], overall: dict[str, Any] | None = None,
         path: str | os.PathLike | None = None):
    """Balanced accuracy with its CI per group, one panel per attribute; too-small groups named
    in grey without a value; the dashed line is the whole test split."""
    from utils.evaluation.plots import finish_figure, new_figure

    found = section["attributes"]
    sizes = [len(a["groups"]) for a in found] or [1]
    figure, axes = new_figure(7.0, 0.32 * sum(sizes) + 1.2 * len(sizes) + 0.5, nrows=len(sizes))
    for ax, attribute in zip(axes, found):
        groups = attribute["groups"][::-1]
        for y, group in enumerate(groups):
            if group["status"] != "ok":
                ax.text(0.01, y, f"too small ({group['n_images']} images)", va="center",
                        fontsize=7, color="grey")
                continue
            stats = group["metrics"]["balanced_accuracy"]
            if stats["value"] is None:
                continue
            low = stats["ci_low"] if stats["ci_low"] is not None else stats["value"]
            high = stats["ci_high"] if stats["ci_high"] is not None else stats["value"]
            ax.errorbar(stats["value"], y, xerr=[[stats["value"] - low], [high - stats["value"]]],
                        fmt="o", color="#4C72B0", capsize=3)
        ax.set_yticks(range(len(groups)),
                      [f"{g['group']} (n={g['n_images']})" for g in groups], fontsize=7)
        if overall is not None and overall.get("value") is not None:
            ax.axvline(overall["value"], linestyle="--", color="grey")
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.6, len(groups) - 0.4)
        ax.set_title(attribute["attribute"], fontsize=9)
    if not found:
        axes[0].text(0.5, 0.5, section.get("note", "no metadata"), ha="center", va="center")
    axes[-1].set_xlabel("balanced accuracy (95 % lesion-bootstrap CI); dashed: whole test split")
    figure.tight_layout()
    return finish_figure(figure, path)

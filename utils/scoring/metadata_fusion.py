"""Image probabilities fused with a patient-metadata model (age, sex, body site).

HAM10000 and ISIC 2019 record each lesion's patient age, sex and anatomical site, and a clinician
has them at the bedside. They carry signal the pixels of a small image do not: nevi come from
younger patients, actinic keratoses and basal cell carcinomas from older ones and sun-exposed
sites (face, scalp), angiomas and dermatofibromas from particular sites.

The metadata model is a multinomial logistic regression on [age missing, age / 100,
(age / 100)^2, male, female, one indicator per body site of the training split], fitted on the
TRAINING split only, with balanced class weights. Nothing is fitted on validation or test.
HAM10000's `dx_type` (how the diagnosis was confirmed) is never a feature: it is not known before
the diagnosis and leaks the label (utils.studies.metadata_leak).

The fusion is a product of experts: both models are trained class-balanced (the image model by
balanced sampling or class weights), so each approximates the posterior under a uniform class
prior, p_img(y | x) ∝ p(x | y) and p_meta(y | m) ∝ p(m | y). If image and metadata are
conditionally independent given the class, p(y | x, m) ∝ p(x | y) p(m | y), i.e. the
renormalised product p_img · p_meta: no weight to tune. (They are not exactly independent; the
product is the standard naive-Bayes late fusion, and whether it helps is measured, in
reports/cpu_recipe_metadata.md.)

The fitted model is saved as metadata_model.json in the run folder (coefficients and feature
vocabulary, no pickle). Images whose metadata is missing get the intercept-only prediction of
their missing fields, so their fused probabilities stay close to the image model's.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from utils import fileio, paths
from utils.errors import DataError
from utils.scoring.predictions import class_columns

METADATA_FIELDS: tuple[str, ...] = ("age", "sex", "site")
MODEL_FILE = "metadata_model.json"
REGULARISATION_C = 1.0  # sklearn's default inverse L2 strength; fixed, not tuned
EPSILON = 1e-7  # floor of a probability before the product (a softmax can underflow to 0)


def _missing(values: pd.Series) -> np.ndarray:
    text = values.astype(str).str.strip().str.lower()
    return (values.isna() | text.isin(["", "nan", "unknown", "none"])).to_numpy()


def site_vocabulary(rows: pd.DataFrame) -> list[str]:
    """The body sites of `rows` (sorted, lower-case, missing and 'unknown' left out)."""
    sites = rows["site"][~_missing(rows["site"])].astype(str).str.strip().str.lower()
    return sorted(sites.unique().tolist())


def features(rows: pd.DataFrame, sites: Sequence[str]) -> np.ndarray:
    """The (n, 5 + len(sites)) feature matrix of manifest `rows`."""
    age = pd.to_numeric(rows["age"], errors="coerce").to_numpy(float)
    age_missing = ~np.isfinite(age)
    scaled = np.where(age_missing, 0.0, age) / 100.0
    sex = rows["sex"].astype(str).str.strip().str.lower().to_numpy()
    site = rows["site"].astype(str).str.strip().str.lower().to_numpy()
    columns = [age_missing.astype(float), scaled, scaled ** 2,
               (sex == "male").astype(float), (sex == "female").astype(float),
               *((site == name).astype(float) for name in sites)]
    return np.stack(columns, axis=1)


def train_digest(train_rows: pd.DataFrame) -> str:
    """Which training images a model was fitted on: their count and a digest of their ids."""
    ids = "\n".join(sorted(train_rows["image_id"].astype(str)))
    return f"{len(train_rows)} images, sha1 {hashlib.sha1(ids.encode()).hexdigest()[:16]}"


def check_columns(rows: pd.DataFrame, what: str) -> None:
    """Raise a DataError when `rows` lack a metadata column (values may be missing)."""
    absent = [f for f in METADATA_FIELDS if f not in rows.columns]
    if absent:
        raise DataError(f"{what}: no column(s) {absent}; metadata fusion needs age, sex and site "
                        "(HAM10000 and ISIC 2019 metadata have them): turn it off "
                        "(--no-metadata-fusion, config metadata_fusion=False) for this dataset")


def check_metadata(rows: pd.DataFrame, what: str) -> None:
    """Raise a DataError when `rows` lack the metadata columns, or every value of all of them
    (what a model is fitted on)."""
    check_columns(rows, what)
    if all(_missing(rows[f]).all() for f in METADATA_FIELDS):
        raise DataError(f"{what}: age, sex and site are missing on every row; metadata fusion "
                        "has nothing to learn from: turn it off (--no-metadata-fusion, config "
                        "metadata_fusion=False)")


def fit(train_rows: pd.DataFrame, classes: Sequence[str]) -> dict[str, Any]:
    """Fit the metadata model on training rows (column label_index); a JSON-ready dict."""
    from sklearn.linear_model import LogisticRegression

    check_metadata(train_rows, "training split")
    y = train_rows["label_index"].to_numpy(int)
    present = np.unique(y)
    if len(present) < 2:
        raise DataError(f"training split: only class(es) {present.tolist()}; the metadata model "
                        "needs at least two")
    sites = site_vocabulary(train_rows)
    model = LogisticRegression(C=REGULARISATION_C, class_weight="balanced", max_iter=5000)
    model.fit(features(train_rows, sites), y)
    rows_coef, rows_intercept = model.coef_, model.intercept_
    if len(model.classes_) == 2:  # sklearn's binary form: one row, the second class's logit
        rows_coef = np.vstack([np.zeros_like(rows_coef[0]), rows_coef[0]])
        rows_intercept = np.array([0.0, rows_intercept[0]])
    coef = np.zeros((len(classes), rows_coef.shape[1]))
    intercept = np.full(len(classes), -1e9)  # a class absent from training: probability ~0
    for row, label in enumerate(model.classes_):
        coef[label], intercept[label] = rows_coef[row], rows_intercept[row]
    return {"classes": list(classes), "sites": sites, "regularisation_C": REGULARISATION_C,
            "class_weight": "balanced", "fitted_on": train_digest(train_rows),
            "coef": coef.tolist(), "intercept": [float(v) for v in intercept]}


def probabilities(model: dict[str, Any], rows: pd.DataFrame) -> np.ndarray:
    """(n, K) class probabilities of the metadata model for manifest `rows` (a missing value
    counts as unknown)."""
    check_columns(rows, "rows to fuse")
    logits = (features(rows, model["sites"]) @ np.asarray(model["coef"], float).T
              + np.asarray(model["intercept"], float))
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def fuse(image_probs: np.ndarray, metadata_probs: np.ndarray) -> np.ndarray:
    """The renormalised product of two (n, K) probability arrays (see the module docstring)."""
    log = (np.log(np.clip(image_probs, EPSILON, 1.0))
           + np.log(np.clip(metadata_probs, EPSILON, 1.0)))
    log -= log.max(axis=1, keepdims=True)
    fused = np.exp(log)
    return fused / fused.sum(axis=1, keepdims=True)


def fused_frame(frame: pd.DataFrame, manifest: pd.DataFrame,
                model: dict[str, Any]) -> pd.DataFrame:
    """A predictions frame with its probabilities fused with the metadata model's (rows found
    in `manifest` by image_id)."""
    classes = list(class_columns(frame))
    if classes != list(model["classes"]):
        raise DataError(f"predictions classes {classes} differ from the metadata model's "
                        f"{model['classes']}: fit it on this run's manifest")
    by_id = manifest.drop_duplicates("image_id").set_index("image_id")
    out = frame.copy()
    out[classes] = fuse_images(frame[classes].to_numpy(float), frame["image_id"].tolist(),
                               by_id, model, "the run's manifest")
    return out


def read_metadata_csv(path: str | Path) -> pd.DataFrame:
    """A metadata CSV for new images: image_id (the file name without extension), age, sex,
    site (values may be empty), indexed by image_id."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype={"image_id": str, "sex": str, "site": str})
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise DataError(f"{path}: not a readable CSV ({error}); it needs columns image_id, "
                        "age, sex, site") from None
    missing = [c for c in ("image_id", *METADATA_FIELDS) if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: no column(s) {missing}; a metadata CSV has columns image_id, "
                        "age, sex, site (values may be empty)")
    ages = pd.to_numeric(frame["age"], errors="coerce")
    bad = frame.loc[ages.isna() & frame["age"].notna(), "image_id"]
    if len(bad):
        raise DataError(f"{path}: age is not a number for image(s) {bad.head(3).tolist()}; "
                        "write years, or leave it empty")
    repeated = frame.loc[frame["image_id"].duplicated(), "image_id"]
    if len(repeated):
        raise DataError(f"{path}: image id(s) {repeated.head(3).tolist()} appear more than "
                        "once; keep one row per image")
    return frame.assign(age=ages).set_index("image_id")


def fuse_images(probs: np.ndarray, image_ids: Sequence[str], metadata: pd.DataFrame,
                model: dict[str, Any], source: str = "metadata CSV") -> np.ndarray:
    """Image probabilities (n, K) of `image_ids` fused with the metadata model's, their rows
    found in `metadata` (indexed by image_id; read_metadata_csv)."""
    ids = pd.Index(image_ids)
    absent = ids[~ids.isin(metadata.index)]
    if len(absent):
        raise DataError(f"{source}: no row for image(s) {absent[:3].tolist()}, so their metadata "
                        "is unknown; add one per image (age, sex and site may be left empty)")
    rows = metadata.loc[ids, list(METADATA_FIELDS)].reset_index(drop=True)
    return fuse(np.asarray(probs, float), probabilities(model, rows))


def run_model(run_dir: str | Path, manifest: pd.DataFrame,
              classes: Sequence[str]) -> dict[str, Any]:
    """The run folder's metadata model: metadata_model.json when it was fitted on this
    manifest's training split before, else fitted now and saved (atomically)."""
    path = Path(run_dir) / MODEL_FILE
    train_rows = manifest[manifest["split"] == "train"]
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise DataError(f"{paths.display(path)}: unreadable ({error}); delete it to fit "
                            "the metadata model again") from None
        if saved.get("classes") == list(classes) and \
                saved.get("fitted_on") == train_digest(train_rows):
            return saved
    model = fit(train_rows, classes)
    fileio.write_json(path, model)
    return model

"""The metadata model (age, sex, site) and its fusion with image probabilities."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from utils.errors import DataError
from utils.scoring import metadata_fusion

CLASSES = ["a", "b", "c"]


def _rows(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """Class a: old patients on the face; b: young, on the back; c: any age, on the foot."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 3, n)
    age = np.where(label == 0, rng.normal(75, 5, n), np.where(label == 1, rng.normal(25, 5, n),
                                                                rng.uniform(20, 80, n)))
    site = np.array(["face", "back", "foot"])[label]
    return pd.DataFrame({"image_id": [f"I{i}" for i in range(n)], "label_index": label,
                         "age": age, "sex": rng.choice(["male", "female", np.nan], n),
                         "site": site, "split": "train"})


def test_the_metadata_model_learns_age_and_site_from_the_training_rows():
    train, held_out = _rows(300, seed=0), _rows(200, seed=1)
    model = metadata_fusion.fit(train, CLASSES)
    assert model["sites"] == ["back", "face", "foot"] and model["classes"] == CLASSES
    probs = metadata_fusion.probabilities(model, held_out)
    assert probs.shape == (200, 3) and np.allclose(probs.sum(axis=1), 1.0)
    assert (probs.argmax(axis=1) == held_out["label_index"]).mean() > 0.95
    json.dumps(model)  # saved as JSON, no pickle


def test_missing_and_unseen_metadata_still_give_probabilities():
    model = metadata_fusion.fit(_rows(), CLASSES)
    rows = pd.DataFrame({"age": [np.nan, 50.0], "sex": [np.nan, "unknown"],
                         "site": ["ear", np.nan]})  # 'ear' never seen in training
    probs = metadata_fusion.probabilities(model, rows)
    assert np.isfinite(probs).all() and np.allclose(probs.sum(axis=1), 1.0)
    nothing = pd.DataFrame({"age": [np.nan], "sex": [np.nan], "site": [np.nan]})
    unknown = metadata_fusion.probabilities(model, nothing)  # nothing known: no error
    logits = np.asarray(model["coef"])[:, 0] + np.asarray(model["intercept"])  # "age missing"
    assert np.allclose(unknown[0], np.exp(logits) / np.exp(logits).sum())


def test_a_class_absent_from_training_gets_no_probability_and_two_classes_work():
    rows = _rows()
    two = rows[rows["label_index"] != 2]
    model = metadata_fusion.fit(two, CLASSES)
    probs = metadata_fusion.probabilities(model, rows)
    assert probs[:, 2].max() < 1e-6
    young, old = rows[rows["age"] < 30].head(5), rows[rows["age"] > 70].head(5)
    assert (metadata_fusion.probabilities(model, young)[:, 1] > 0.5).all()
    assert (metadata_fusion.probabilities(model, old)[:, 0] > 0.5).all()


def test_bad_metadata_is_refused_with_what_to_do():
    rows = _rows()
    with pytest.raises(DataError, match="no column.*site.*metadata_fusion=False"):
        metadata_fusion.fit(rows.drop(columns="site"), CLASSES)
    empty = rows.assign(age=np.nan, sex=np.nan, site="unknown")
    with pytest.raises(DataError, match="missing on every row"):
        metadata_fusion.fit(empty, CLASSES)
    with pytest.raises(DataError, match="at least two"):
        metadata_fusion.fit(rows.assign(label_index=1), CLASSES)


@settings(max_examples=50, deadline=None)
@given(arrays(float, (4, 3), elements=st.floats(0.0, 1.0)),
       arrays(float, (4, 3), elements=st.floats(0.01, 1.0)))
def test_fusion_is_the_renormalised_product(image, meta):
    image = image + 1e-3
    image, meta = image / image.sum(1, keepdims=True), meta / meta.sum(1, keepdims=True)
    fused = metadata_fusion.fuse(image, meta)
    expected = image * meta / (image * meta).sum(1, keepdims=True)
    assert np.allclose(fused, expected, atol=1e-6)
    uniform = metadata_fusion.fuse(image, np.full_like(meta, 1 / 3))
    assert np.allclose(uniform, image, atol=1e-6)  # an uninformative expert changes nothing


def test_fused_frames_find_metadata_by_image_id_and_refuse_strangers():
    rows = _rows(60)
    model = metadata_fusion.fit(rows, CLASSES)
    frame = pd.DataFrame({"image_id": rows["image_id"][::-1].to_numpy(), "lesion_id": "L",
                          "label": "a", "label_index": 0, "split": "val",
                          "a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    fused = metadata_fusion.fused_frame(frame, rows, model)
    expected = metadata_fusion.probabilities(model, rows.iloc[::-1])
    assert np.allclose(fused[CLASSES].to_numpy(), expected)
    assert list(fused["image_id"]) == list(frame["image_id"])
    with pytest.raises(DataError, match="run.s manifest: no row for image"):
        metadata_fusion.fused_frame(frame.assign(image_id="X"), rows, model)
    with pytest.raises(DataError, match="differ from the metadata model"):
        metadata_fusion.fused_frame(frame.rename(columns={"c": "z"}), rows, model)


def test_the_run_model_is_saved_reused_and_refitted_for_other_training_rows(tmp_path):
    manifest = pd.concat([_rows(120), _rows(30, seed=2).assign(
        split="val", image_id=lambda f: "V" + f["image_id"])])
    first = metadata_fusion.run_model(tmp_path, manifest, CLASSES)
    saved = tmp_path / metadata_fusion.MODEL_FILE
    assert json.loads(saved.read_text()) == first
    saved.write_text(json.dumps({**first, "intercept": [5.0, 0.0, 0.0]}))
    assert metadata_fusion.run_model(tmp_path, manifest, CLASSES)["intercept"][0] == 5.0
    fewer = manifest.iloc[10:]  # other training images: fitted again
    assert metadata_fusion.run_model(tmp_path, fewer, CLASSES)["fitted_on"] != first["fitted_on"]
    saved.write_text("{broken")
    with pytest.raises(DataError, match="delete it"):
        metadata_fusion.run_model(tmp_path, manifest, CLASSES)


def test_a_run_whose_recipe_fuses_metadata_reports_that_section(tiny_run, tmp_path):
    from utils.evaluation import compare, evaluate

    run_dir = shutil.copytree(tiny_run, tmp_path / "runs" / "run")
    result = evaluate.evaluate(run_dir, n_boot=30, plots=False, selective=False,
                               subgroups=False)
    assert "metadata" not in result  # off unless the recipe or --metadata asks for it
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**config, "metadata_fusion": True,
                                                     "predict_tta": True}))
    result = evaluate.evaluate(run_dir, n_boot=30, plots=False, selective=False,
                               subgroups=False, tta=True)
    assert result["metadata"]["fuses"] == "plain" and result["tta_metadata"]["fuses"] == "tta"
    written = pd.read_csv(run_dir / "predictions_test_tta_metadata.csv")
    tta = pd.read_csv(run_dir / "predictions_test_tta.csv")
    assert list(written["image_id"]) == list(tta["image_id"])
    assert not np.allclose(written.iloc[:, 5:].to_numpy(), tta.iloc[:, 5:].to_numpy())
    assert (run_dir / metadata_fusion.MODEL_FILE).is_file()
    card = (run_dir / "model_card.md").read_text()
    assert "**its result is the TTA + metadata column**" in card
    assert "TTA predictions fused with metadata, the recipe's result" in card
    assert "fused with a metadata model (age, sex, site)" in card  # the recipe line
    assert "fitted on the training split only" in card
    row = compare.run_row(run_dir, n_boot=30)
    assert row["prediction"] == "TTA (8 views) + metadata"
    ba = result["tta_metadata"]["metrics"]["balanced_accuracy"]["value"]
    assert row["balanced_accuracy"] == pytest.approx(ba)
    csv_only = evaluate.evaluate(run_dir / "predictions_test.csv", n_boot=30, plots=False,
                                 selective=False, subgroups=False, metadata=False, card=False)
    assert "metadata" not in csv_only


def test_a_run_that_fuses_metadata_checks_it_before_training(synthetic_ham, tmp_path):
    from dataclasses import replace

    from utils.training import train
    from utils.training.config import TrainConfig
    from utils.training.data import build_manifest

    config = TrainConfig(dataset="synthetic", data_dir=str(synthetic_ham), metadata_fusion=True)
    manifest = build_manifest(config)
    blank = manifest.assign(age=np.nan, sex=np.nan, site=np.nan)
    with pytest.raises(DataError, match="missing on every row.*--no-metadata-fusion"):
        train._run_manifest(config, tmp_path, blank)
    assert not (tmp_path / "manifest.csv").exists()  # refused before anything was written
    train._run_manifest(replace(config, metadata_fusion=False), tmp_path, blank)
    assert (tmp_path / "manifest.csv").is_file()


def test_the_diagnosis_confirmation_type_is_never_a_feature():
    rows = _rows()
    model = metadata_fusion.fit(rows.assign(dx_type="histo"), CLASSES)
    leaky = rows.assign(dx_type=np.array(["histo", "follow_up", "consensus"])[
        rows["label_index"]])  # dx_type that gives the label away
    assert metadata_fusion.fit(leaky, CLASSES) == model
    assert np.array_equal(metadata_fusion.probabilities(model, leaky),
                          metadata_fusion.probabilities(model, rows))

"""utils.augmentation.preprocess_dataset (`python -m utils preprocess`): the offline copy keeps
the layout, holds exactly the pixels the input pipeline computes, crops masks with their images,
never touches the source, resumes byte-identically, refuses other settings; a run trained on it
records its preprocessing."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from utils import cli, fileio
from utils.augmentation import preprocess_dataset as offline
from utils.augmentation.preprocess import parse_preprocessing
from utils.data import readers, synthetic
from utils.errors import DataError

STEPS = "colour,hair,fov"


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """40 synthetic HAM10000 images (some with hairs and a dark field of view) and masks."""
    root = tmp_path_factory.mktemp("source") / "HAM10000"
    synthetic.generate_ham10000(root, n_images=40, seed=3, progress=False)
    return root


@pytest.fixture(scope="module")
def copy(source, tmp_path_factory):
    return offline.preprocess_dataset(source, tmp_path_factory.mktemp("copy") / "out", STEPS,
                                      workers=2, progress=False)


def test_copy_keeps_the_layout_and_metadata(source, copy):
    original, copied = readers.read_table(source), readers.read_table(copy)
    columns = ["image_id", "label", "lesion_id", "age", "sex", "site"]
    pd.testing.assert_frame_equal(original[columns], copied[columns])
    assert all(p.endswith(".png") and p.startswith(str(copy)) for p in copied["path"])
    settings = json.loads((copy / offline.SETTINGS_NAME).read_text())
    assert settings["preprocess"] == parse_preprocessing(STEPS).spec()
    log = pd.read_csv(copy / offline.LOG_NAME, dtype={"box": str}, keep_default_na=False)
    assert sorted(log["image_id"]) == sorted(original["image_id"])
    assert not (copy / offline.JOURNAL_NAME).exists()
    metadata = [p.name for p in source.glob("*.csv")]
    assert metadata and all((copy / n).read_bytes() == (source / n).read_bytes() for n in metadata)


def test_copy_holds_the_pixels_of_the_input_pipeline(source, copy):
    """Reading the copy's PNG equals preprocessing the source on the fly (pipeline.load_image's
    decode + preprocessing): exactly, so a model trained on the copy sees what predict feeds it."""
    tf = pytest.importorskip("tensorflow")
    from utils.training import pipeline

    log = pd.read_csv(copy / offline.LOG_NAME, dtype={"box": str}, keep_default_na=False)
    cropped = log[log["box"] != ""]
    assert len(cropped) > 0  # the synthetic data has dark fields of view
    spec = parse_preprocessing(STEPS).spec()
    for _, row in pd.concat([cropped.head(2), log.head(2)]).iterrows():
        online = pipeline.apply_preprocess(
            pipeline.decode_full(tf.io.read_file(str(source / row["source"]))), spec).numpy()
        stored = pipeline.decode_full(tf.io.read_file(str(copy / row["output"]))).numpy()
        np.testing.assert_array_equal(online, stored)
        assert stored.shape[:2] == (row["height"], row["width"])


def test_masks_are_cropped_with_their_images(copy):
    table = readers.read_table(copy)
    log = pd.read_csv(copy / offline.LOG_NAME, dtype={"box": str}, keep_default_na=False)
    row = log[log["box"] != ""].iloc[0]
    masks = list(copy.rglob(f"{row['image_id']}_segmentation.png"))
    assert len(masks) == 1
    import cv2

    mask = cv2.imread(str(masks[0]), cv2.IMREAD_UNCHANGED)
    image = cv2.imread(table.set_index("image_id").loc[row["image_id"], "path"])
    assert mask.shape[:2] == image.shape[:2] == (row["height"], row["width"])


def test_source_untouched_and_resume_is_byte_identical(source, copy, tmp_path):
    before = fileio.tree_digest(source)
    partial = tmp_path / "resumed"
    offline.preprocess_dataset(source, partial, STEPS, workers=1, progress=False, limit=15)
    assert (partial / offline.JOURNAL_NAME).is_file() and not (partial / offline.LOG_NAME).exists()
    offline.preprocess_dataset(source, partial, STEPS, workers=2, progress=False)
    assert fileio.tree_digest(partial) == fileio.tree_digest(copy)
    assert fileio.tree_digest(source) == before


def test_other_settings_and_overlaps_are_refused(source, copy):
    with pytest.raises(DataError, match="other settings"):
        offline.preprocess_dataset(source, copy, "colour", progress=False)
    with pytest.raises(DataError, match="overlaps the source"):
        offline.preprocess_dataset(source, source / "inside", STEPS, progress=False)
    with pytest.raises(DataError, match="itself a preprocessed copy"):
        offline.preprocess_dataset(copy, copy.parent / "again", STEPS, progress=False)
    with pytest.raises(DataError, match="no preprocessing step"):
        offline.preprocess_dataset(source, copy.parent / "none", "none", progress=False)


def test_training_on_the_copy_records_its_preprocessing(copy):
    from utils.training.config import TrainConfig
    from utils.training.data import pipeline_preprocess

    spec = parse_preprocessing(STEPS).spec()
    config = TrainConfig(dataset="synthetic", data_dir=str(copy), weights=None,
                         image_size=32).resolve(gpu_visible=False)
    assert config.preprocess == spec  # predict will apply it to raw images
    assert pipeline_preprocess(config) is None  # the copy's images are preprocessed already
    with pytest.raises(ValueError, match="second time"):
        TrainConfig(data_dir=str(copy), weights=None, preprocess="hair").resolve(False)
    raw = TrainConfig(data_dir="elsewhere", weights=None, preprocess="hair").resolve(False)
    assert pipeline_preprocess(raw) == parse_preprocessing("hair").spec()


def test_command_line(source, tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli.main(["preprocess", str(source), str(out), "--steps", "fov:mode=box",
                     "--workers", "1"]) == 0
    assert "cropped to their field of view" in capsys.readouterr().out
    assert cli.main(["preprocess", str(source), str(out), "--steps", "sharpen"]) == 1
    assert "unknown preprocessing step" in capsys.readouterr().err

"""`predict`: probabilities for a folder, skipping (and naming) files that are not images."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from utils import cli
from utils.data import datasets
from utils.errors import DataError
from utils.evaluation import predict

keras = pytest.importorskip("keras")


def tiny_model(path, num_classes: int, size: int = 16, seed: int = 0):
    """A small conv net on [0, 255] RGB input, saved as .keras (loads with safe_mode=True)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.save(path)
    return model


@pytest.fixture()
def image_folder(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, size in (("a.jpg", (40, 30)), ("b.png", (20, 20)), ("c.jpg", (64, 48))):
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
            folder / name
        )
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.jpg").write_bytes(
        b"\xff\xd8\xff\xe0" + bytes(rng.integers(0, 255, 200, dtype=np.uint8))
    )
    return folder


def test_folder_with_non_images_is_predicted_and_reported(tmp_path, image_folder, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    model = tiny_model(run_dir / "model.keras", datasets.ISIC2019.num_classes)
    (run_dir / "config.json").write_text(json.dumps({"dataset": "isic2019", "image_size": 16}))
    out = tmp_path / "out" / "predictions.csv"
    assert cli.main(["predict", str(run_dir / "model.keras"), str(image_folder), str(out)]) == 0
    captured = capsys.readouterr()
    assert "notes.txt" in captured.err and "broken.jpg" in captured.err
    frame = pd.read_csv(out)
    assert frame["image_id"].tolist() == ["a", "b", "c"]
    assert list(frame.columns) == ["image_id", "path", "predicted", *datasets.ISIC2019.classes]
    probs = frame[list(datasets.ISIC2019.classes)].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    # the probabilities are the model's on the pipeline's own preprocessing
    from utils.training import pipeline

    image = pipeline.load_image(str(image_folder / "c.jpg"), 16, "crop").numpy().astype("float32")
    np.testing.assert_allclose(
        probs[2], model.predict(image[None], verbose=0)[0], rtol=1e-4, atol=1e-6
    )
    assert not list(out.parent.glob("*.part"))


def test_single_image_tta_and_dataset_option(tmp_path, image_folder):
    model_path = tmp_path / "model.keras"
    tiny_model(model_path, datasets.HAM10000.num_classes)
    plain = predict.predict_path(model_path, image_folder / "a.jpg", dataset="ham10000")
    assert len(plain) == 1 and list(plain.columns[3:]) == list(datasets.HAM10000.classes)
    averaged = predict.predict_path(model_path, image_folder / "a.jpg", dataset="ham10000",
                                    tta_views=("identity", "flip"))
    assert not np.allclose(averaged.iloc[0, 3:].to_numpy(float), plain.iloc[0, 3:].to_numpy(float))


def test_errors_are_clear(tmp_path, image_folder):
    model_path = tmp_path / "model.keras"
    tiny_model(model_path, 5)
    with pytest.raises(ValueError, match="--dataset"):
        predict.predict_path(model_path, image_folder)
    only_text = tmp_path / "text"
    only_text.mkdir()
    (only_text / "x.txt").write_text("x")
    tiny_model(model_path, 7)
    with pytest.raises(DataError, match="none of the files"):
        predict.predict_path(model_path, only_text)
    with pytest.raises(DataError, match="no such image"):
        predict.predict_path(model_path, tmp_path / "missing")


def test_huge_headers_are_skipped_and_named_not_predicted(tmp_path, image_folder, capsys):
    """main skipped the PNG but *predicted* the 50,000 x 50,000 JPEG (a grey canvas)."""
    from hostile import HUGE, jpeg_declaring, png_declaring

    (image_folder / "huge.jpg").write_bytes(jpeg_declaring(*HUGE))
    (image_folder / "huge_png.jpg").write_bytes(png_declaring(*HUGE))
    model_path = tmp_path / "model.keras"
    tiny_model(model_path, datasets.HAM10000.num_classes)
    frame = predict.predict_path(model_path, image_folder, dataset="ham10000")
    err = capsys.readouterr().err
    assert frame["image_id"].tolist() == ["a", "b", "c"]
    assert "skipped" in err and "huge.jpg declares 50000 x 50000 pixels" in err
    assert "huge_png.jpg declares 50000 x 50000 pixels" in err


def test_predict_applies_the_runs_preprocessing(tmp_path):
    """config.json's `preprocess` is applied to raw images: predicting the raw image equals
    predicting its preprocessed copy (`python -m utils preprocess`'s PNG) without preprocessing,
    and differs from predicting the raw image without it."""
    from utils.augmentation import preprocess_dataset
    from utils.augmentation.preprocess import parse_preprocessing
    from utils.data import synthetic_drawing

    clean, _ = synthetic_drawing.lesion_image("nv", seed=1)
    hairy, _ = synthetic_drawing.draw_hairs(clean, seed=1)
    framed, _ = synthetic_drawing.add_vignette(hairy, radius_fraction=0.36)
    raw = tmp_path / "raw.jpg"
    Image.fromarray(framed).save(raw, quality=92)
    spec = parse_preprocessing("colour,hair,fov").spec()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    tiny_model(run_dir / "model.keras", datasets.HAM10000.num_classes, size=32)
    (run_dir / "config.json").write_text(json.dumps({"dataset": "ham10000", "image_size": 32,
                                                     "preprocess": spec}))
    classes = list(datasets.HAM10000.classes)
    on_raw = predict.predict_path(run_dir / "model.keras", raw)[classes].to_numpy(float)
    copy = tmp_path / "copy.png"
    preprocess_dataset.preprocess_image(raw, copy, parse_preprocessing(spec))
    on_copy = predict.predict_path(run_dir / "model.keras", copy, preprocess="none")
    np.testing.assert_array_equal(on_raw, on_copy[classes].to_numpy(float))
    unprocessed = predict.predict_path(run_dir / "model.keras", raw, preprocess="none")
    assert not np.allclose(on_raw, unprocessed[classes].to_numpy(float))


def test_a_run_whose_recipe_predicts_with_tta_predicts_with_tta(tmp_path, image_folder, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    tiny_model(run_dir / "model.keras", datasets.HAM10000.num_classes)
    config = {"dataset": "ham10000", "image_size": 16}
    (run_dir / "config.json").write_text(json.dumps({**config, "predict_tta": True}))
    model, source = str(run_dir / "model.keras"), str(image_folder / "c.jpg")
    outputs = {}
    for name, options in (("default", []), ("plain", ["--no-tta"]), ("tta", ["--tta"])):
        outputs[name] = tmp_path / f"{name}.csv"
        assert cli.main(["predict", model, source, str(outputs[name]), *options]) == 0
    assert "(8-view TTA)" in capsys.readouterr().out
    probs = {name: pd.read_csv(path)[list(datasets.HAM10000.classes)].to_numpy()
             for name, path in outputs.items()}
    expected = predict.predict_path(model, source, tta_views=predict_tta_views())
    np.testing.assert_allclose(probs["default"], probs["tta"])
    np.testing.assert_allclose(probs["tta"], expected[list(datasets.HAM10000.classes)].to_numpy(),
                               rtol=1e-5, atol=1e-6)
    assert not np.allclose(probs["plain"], probs["tta"])
    (run_dir / "config.json").write_text(json.dumps(config))  # a plain recipe: one view
    assert cli.main(["predict", model, source, str(outputs["default"])]) == 0
    np.testing.assert_allclose(pd.read_csv(outputs["default"])[
        list(datasets.HAM10000.classes)].to_numpy(), probs["plain"], rtol=1e-5, atol=1e-6)


def predict_tta_views() -> tuple[str, ...]:
    from utils.evaluation import tta

    return tuple(tta.DIHEDRAL_VIEWS)


def test_predict_fuses_a_metadata_csv_with_the_runs_metadata_model(tmp_path, image_folder,
                                                                   capsys):
    from utils.scoring import metadata_fusion

    classes = list(datasets.HAM10000.classes)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    tiny_model(run_dir / "model.keras", len(classes))
    (run_dir / "config.json").write_text(json.dumps(
        {"dataset": "ham10000", "image_size": 16, "metadata_fusion": True}))
    n = 140  # nv on young patients' backs, the other classes on old patients' faces
    label_index = np.arange(n) % len(classes)
    nv = label_index == classes.index("nv")
    pd.DataFrame({"image_id": [f"T{i}" for i in range(n)], "path": "x.jpg",
                  "label": [classes[k] for k in label_index], "label_index": label_index,
                  "lesion_id": [f"L{i}" for i in range(n)], "age": np.where(nv, 20.0, 80.0),
                  "sex": "female", "site": np.where(nv, "back", "face"),
                  "split": "train"}).to_csv(run_dir / "manifest.csv", index=False)
    model, source = str(run_dir / "model.keras"), str(image_folder)
    plain = tmp_path / "plain.csv"
    assert cli.main(["predict", model, source, str(plain)]) == 0
    assert "Pass --metadata CSV" in capsys.readouterr().out  # the recipe's result needs it
    metadata = tmp_path / "metadata.csv"
    pd.DataFrame({"image_id": ["a", "b", "c"], "age": [20, None, 80],
                  "sex": ["male", "", "female"], "site": ["back", "", "face"]}).to_csv(
        metadata, index=False)
    fused = tmp_path / "fused.csv"
    assert cli.main(["predict", model, source, str(fused), "--metadata", str(metadata)]) == 0
    assert "fused with metadata" in capsys.readouterr().out
    image_probs = pd.read_csv(plain).set_index("image_id")[classes]
    out = pd.read_csv(fused).set_index("image_id")
    fitted = json.loads((run_dir / metadata_fusion.MODEL_FILE).read_text())
    rows = metadata_fusion.read_metadata_csv(metadata).loc[list(out.index)]
    expected = metadata_fusion.fuse(image_probs.loc[out.index].to_numpy(),
                                    metadata_fusion.probabilities(fitted, rows))
    np.testing.assert_allclose(out[classes].to_numpy(), expected, rtol=1e-5, atol=1e-7)
    assert list(out["predicted"]) == [classes[k] for k in expected.argmax(axis=1)]
    assert out.loc["a", "nv"] > image_probs.loc["a", "nv"]  # young, on the back: towards nv
    pd.DataFrame({"image_id": ["a"], "age": [20], "sex": ["male"], "site": ["back"]}).to_csv(
        metadata, index=False)
    with pytest.raises(DataError, match="no row for image"):
        predict.predict_path(model, source, metadata=metadata)
    pd.DataFrame({"image_id": ["a", "b", "c"], "age": ["old", 1, 2], "sex": "", "site": ""}
                 ).to_csv(metadata, index=False)
    with pytest.raises(DataError, match="age is not a number"):
        predict.predict_path(model, source, metadata=metadata)

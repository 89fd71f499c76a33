"""Grad-CAM: heatmaps (shape, range, the closed form for a GAP head, the logit score under a
saturated softmax, localising a bright square), overlay, localisation metrics on hand-made maps
and masks, mask lookup and geometry, and the per-class localisation table."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image

from utils.data import download
from utils.errors import DataError
from utils.evaluation.gradcam import (
    energy_inside,
    grad_model,
    gradcam,
    load_resized,
    localisation_scores,
    mask_path_for,
    overlay,
    overlay_figure,
    pointing_game,
    summarise_localisation,
)
from utils.training.models import backbone_of, build_classifier, load_model, set_bn_momentum


def _images(size: int, n: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


# ---------------------------------------------------------------- metrics on hand-made maps


def test_energy_inside_is_the_share_of_the_sum_inside_the_mask():
    heatmap = np.array([[1.0, 3.0], [0.0, 4.0]])
    mask = np.array([[True, False], [False, True]])
    assert energy_inside(heatmap, mask) == pytest.approx(5.0 / 8.0)
    assert energy_inside(heatmap, np.ones((2, 2), bool)) == pytest.approx(1.0)
    assert energy_inside(heatmap, np.zeros((2, 2), bool)) == 0.0
    assert np.isnan(energy_inside(np.zeros((2, 2)), mask))  # no evidence at all: undefined


def test_pointing_game_hits_within_the_tolerance_only():
    mask = np.zeros((20, 20), bool)
    mask[5:10, 5:10] = True
    heatmap = np.zeros((20, 20))
    heatmap[7, 7] = 1.0
    assert pointing_game(heatmap, mask, tolerance=0)  # peak inside
    heatmap = np.zeros((20, 20))
    heatmap[9, 13] = 1.0  # 4 px right of the mask's last column (9)
    assert pointing_game(heatmap, mask, tolerance=4)
    assert not pointing_game(heatmap, mask, tolerance=3.9)
    heatmap = np.zeros((20, 20))
    heatmap[13, 13] = 1.0  # diagonal: sqrt(4^2 + 4^2) = 5.66 px from the corner (9, 9)
    assert not pointing_game(heatmap, mask, tolerance=5.6)
    assert pointing_game(heatmap, mask, tolerance=5.7)
    assert not pointing_game(heatmap, np.zeros((20, 20), bool), tolerance=100)
    corner = np.zeros((20, 20), bool)
    corner[0, 0] = True  # argmax of a blank map is (0, 0): still no hit
    assert not pointing_game(np.zeros((20, 20)), corner, tolerance=0)


def test_metrics_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        energy_inside(np.ones((4, 4)), np.ones((4, 5), bool))
    with pytest.raises(ValueError, match="same shape"):
        pointing_game(np.ones((4, 4)), np.ones((2, 2), bool))


def test_summary_is_per_class_in_label_index_order_plus_all():
    scores = pd.DataFrame(
        {
            "image_id": list("abcdef"),
            "label": ["mel", "bcc", "mel", "bcc", "nv", "nv"],
            "label_index": [4, 1, 4, 1, 5, 5],
            "predicted_index": [4, 1, 1, 1, 5, 2],
            "energy_inside": [0.8, 0.2, 0.6, 0.4, 1.0, np.nan],  # f: a blank map
            "pointing_hit": [True, False, False, False, True, False],
            "mask_fraction": [0.5, 0.1, 0.3, 0.1, 0.2, 0.4],
        }
    )
    summary = summarise_localisation(scores)
    assert list(summary["label"]) == ["bcc", "mel", "nv", "all"]
    assert list(summary["n_images"]) == [2, 2, 2, 6]
    assert list(summary["blank_maps"]) == [0, 0, 1, 1]
    np.testing.assert_allclose(summary["energy_inside"], [0.3, 0.7, 1.0, 0.6])
    np.testing.assert_allclose(summary["pointing_game"], [0.0, 0.5, 0.5, 2 / 6])
    np.testing.assert_allclose(summary["mask_fraction"], [0.1, 0.4, 0.3, 1.6 / 6])


def test_overlay_blends_the_colour_map_onto_the_image():
    image = np.full((6, 8, 3), 100, np.uint8)
    heatmap = np.linspace(0, 1, 12).reshape(3, 4)  # resized to the image
    blended = overlay(image, heatmap, alpha=0.5)
    assert blended.dtype == np.uint8 and blended.shape == (6, 8, 3)
    np.testing.assert_array_equal(overlay(image, heatmap, alpha=0.0), image)
    from matplotlib import colormaps

    hot_corner = np.round(np.array(colormaps["jet"](1.0)[:3]) * 255)
    np.testing.assert_allclose(overlay(image, heatmap, alpha=1.0)[-1, -1], hot_corner, atol=1)


# ---------------------------------------------------------------- masks


def _write_mask(path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8) * 255).save(path)


def test_mask_path_for_finds_real_then_synthetic_layout(tmp_path):
    synthetic = tmp_path / "HAM10000_segmentations_lesion" / "SYN_0000001_segmentation.png"
    _write_mask(synthetic, np.ones((4, 4), bool))
    assert mask_path_for("SYN_0000001", tmp_path) == synthetic
    real = tmp_path / "HAM10000_segmentations_lesion_200x150" / "SYN_0000001_segmentation.png"
    _write_mask(real, np.ones((4, 4), bool))
    assert mask_path_for("SYN_0000001", tmp_path) == real
    with pytest.raises(DataError) as error:
        mask_path_for("ISIC_0000000", tmp_path)
    assert "ISIC_0000000_segmentation.png" in str(error.value)
    assert "HAM10000_segmentations_lesion_200x150" in str(error.value)


def test_mask_path_for_finds_the_masks_download_ham10000_masks_extracts(tmp_path):
    """The folder comes from the download plan itself, so the two cannot drift apart."""
    names = ["HAM10000_images_part_1.zip", "HAM10000_images_part_2.zip", "HAM10000_metadata.csv",
             "HAM10000_segmentations_lesion_tschandl.zip"]
    listing = {"data": {"latestVersion": {"files": [
        {"dataFile": {"id": i, "filename": name}} for i, name in enumerate(names)]}}}
    plain = download.ham10000_files(listing, "http://dv", test_set=False)
    with_masks = download.ham10000_files(listing, "http://dv", test_set=False, masks=True)
    (masks,) = [remote for remote in with_masks if remote not in plain]
    path = tmp_path / masks.extract_to / "ISIC_0024306_segmentation.png"
    _write_mask(path, np.ones((4, 4), bool))
    assert mask_path_for("ISIC_0024306", tmp_path) == path
    with pytest.raises(DataError, match="download ham10000 .* --masks"):
        mask_path_for("ISIC_0024307", tmp_path)


def test_masks_follow_the_pipeline_geometry(tmp_path):
    lesion = np.zeros((150, 200), bool)
    lesion[:, :100] = True  # left half of a 200x150 mask
    path = tmp_path / "m_segmentation.png"
    _write_mask(path, lesion)
    # crop keeps the central 150x150 (columns 25..174): the lesion covers its left 75 columns
    cropped = load_resized(path, 30, "crop", mask=True)
    assert cropped.dtype == bool and cropped.shape == (30, 30)
    assert cropped[:, :15].all() and not cropped[:, 15:].any()
    squashed = load_resized(path, 30, "squash", mask=True)
    assert squashed[:, :15].all() and not squashed[:, 15:].any()
    np.testing.assert_array_equal(load_resized(path, 30, "stretch", mask=True), squashed)
    with pytest.raises(ValueError, match="resize_policy"):
        load_resized(path, 30, "zoom", mask=True)


@pytest.mark.real_data
def test_real_ham10000_masks_are_found_and_binary(ham_real):
    image_id = pd.read_csv(ham_real / "HAM10000_metadata.csv", nrows=1)["image_id"].iloc[0]
    path = mask_path_for(image_id, ham_real)
    assert path.parent.name == "HAM10000_segmentations_lesion_200x150"
    mask = load_resized(path, 64, "crop", mask=True)
    assert mask.shape == (64, 64) and 0 < mask.mean() < 1


# ---------------------------------------------------------------- heatmaps on tiny models


@pytest.fixture(scope="module")
def mobilenet() -> keras.Model:
    """A from-scratch MobileNetV2 whose BatchNorm statistics are calibrated on one batch: with
    the initial ones (mean 0, variance 1) its activations shrink to ~1e-12 through the depth, all
    classes tie at 1/3 and Grad-CAM has nothing to show."""
    keras.utils.set_random_seed(0)
    model = build_classifier("MobileNetV2", 3, image_size=64)
    set_bn_momentum(model, 0.0)  # moving statistics := this batch's statistics
    model(_images(64, n=16, seed=9), training=True)
    set_bn_momentum(model, 0.9)
    return model


def test_gradcam_equals_the_closed_form_for_a_gap_head(mobilenet):
    """MobileNetV2's Grad-CAM layer (out_relu) feeds GAP -> Dense directly and the score is the
    class logit z_c = sum_k W[k, c] mean_ij A_k(i, j) + b_c, so d z_c / d A_k(i, j) = W[k, c] / HW
    at every position: Grad-CAM is ReLU(sum_k W[k, c] A_k) (CAM), computed here without autodiff."""
    images = _images(64)
    probabilities = keras.ops.convert_to_numpy(mobilenet(images, training=False))
    classes = probabilities.argmax(axis=1)  # passed explicitly; the predicted class
    heatmaps = gradcam(mobilenet, images, class_index=classes)
    assert heatmaps.shape == (3, 64, 64)

    x = mobilenet.get_layer("preprocess_rescale")(images)
    base = backbone_of(mobilenet)
    conv = keras.Model(base.inputs, base.get_layer("out_relu").output)
    activations = keras.ops.convert_to_numpy(conv(x))
    weights = mobilenet.get_layer("predictions").get_weights()[0]  # (channels, classes)
    _, height, width, _ = activations.shape
    alphas = weights[:, classes].T / (height * width)
    cams = np.maximum(np.einsum("nhwk,nk->nhw", activations, alphas), 0)
    peaks = cams.max(axis=(1, 2), keepdims=True)
    cams = np.divide(cams, peaks, out=np.zeros_like(cams), where=peaks > 0)
    expected = tf.image.resize(cams[..., None], (64, 64), method="bilinear").numpy()[..., 0]
    assert (peaks > 0).all()  # these maps are not blank, so the comparison below is not vacuous
    np.testing.assert_allclose(heatmaps, np.clip(expected, 0, 1), atol=1e-4)
    np.testing.assert_allclose(gradcam(mobilenet, images), heatmaps)  # None = predicted class


def test_gradcam_ignores_a_saturated_softmax(mobilenet):
    """Scaling the head by 1000 and adding a bias of 1e4 to class 0 saturates the softmax (p = 1.0
    exactly in float32, so d p / d A = 0): the logit's maps are unchanged (a positive scale and the
    bias cancel), neither blank nor constant."""
    images = _images(64, n=2, seed=3)
    head = mobilenet.get_layer("predictions")
    kernel, bias = head.get_weights()
    before = gradcam(mobilenet, images, class_index=0)
    try:
        head.set_weights([kernel * 1000.0, bias + np.array([1e4, 0, 0], "float32")])
        probabilities = keras.ops.convert_to_numpy(mobilenet(images, training=False))
        assert (probabilities[:, 0] == 1.0).all()
        explainer = grad_model(mobilenet)  # shares the head's variables: no stale copy
        with tf.GradientTape() as tape:
            activations, logits = explainer(images, training=False)
            probability = tf.nn.softmax(logits)[:, 0]
        assert float(tf.reduce_max(tf.abs(tape.gradient(probability, activations)))) == 0.0
        saturated = gradcam(mobilenet, images, class_index=0, explainer=explainer)
    finally:
        head.set_weights([kernel, bias])
    np.testing.assert_allclose(saturated, before, atol=1e-4)
    np.testing.assert_allclose(saturated.max(axis=(1, 2)), 1.0, atol=1e-6)
    assert (saturated.std(axis=(1, 2)) > 0.05).all()


def _bright_square(corner: tuple[int, int] | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A dark noisy 64x64 image with a bright 16x16 square at `corner` (None: no square), and its
    mask."""
    rng = np.random.default_rng(seed)
    image = rng.normal(70, 10, (64, 64, 3))
    mask = np.zeros((64, 64), bool)
    if corner is not None:
        mask[corner[0] : corner[0] + 16, corner[1] : corner[1] + 16] = True
        image[mask] = rng.normal(230, 10, (int(mask.sum()), 3))
    return image.clip(0, 255).astype("float32"), mask


def test_gradcam_localises_a_bright_square_under_a_saturated_softmax():
    """A VGG16 whose class-0 evidence is the bright square: the head reads the block5 channels the
    square raises (probed at three other positions and noise seeds), scaled so that p = 1.0 exactly.
    The probability's gradient vanishes, yet the logit's Grad-CAM (block3_conv3, 16x16 grid)
    peaks on the square at four new positions and holds more than its share of the energy."""
    keras.utils.set_random_seed(0)
    model = build_classifier("VGG16", 3, image_size=64)
    explainer = grad_model(model)  # block5_conv3: 4x4 cells of 16 px
    probe = []
    for seed, corner in enumerate([(0, 0), (48, 48), (16, 32)]):
        image, _ = _bright_square(corner, seed)
        plain, _ = _bright_square(None, seed)
        cell = (corner[0] // 16, corner[1] // 16)
        raised = explainer(np.stack([image, plain]), training=False)[0].numpy()[:, cell[0], cell[1]]
        probe.append(raised[0] - raised[1])
    head = model.get_layer("predictions")
    kernel = np.zeros_like(head.get_weights()[0])
    kernel[:, 0] = 1000.0 * np.mean(probe, axis=0)
    head.set_weights([kernel, np.array([0.0, -100.0, -100.0], "float32")])

    corners = [(0, 48), (48, 0), (24, 24), (32, 8)]
    images, masks = map(np.stack, zip(*(_bright_square(c, 7) for c in corners), strict=True))
    assert (keras.ops.convert_to_numpy(model(images, training=False))[:, 0] == 1.0).all()
    with tf.GradientTape() as tape:
        activations, logits = explainer(images, training=False)
        probability = tf.nn.softmax(logits)[:, 0]
    assert float(tf.reduce_max(tf.abs(tape.gradient(probability, activations)))) == 0.0
    heatmaps = gradcam(model, images, class_index=0, layer_name="block3_conv3")
    for heat, mask in zip(heatmaps, masks, strict=True):
        assert heat.std() > 0.1
        assert pointing_game(heat, mask, tolerance=0)
        assert energy_inside(heat, mask) > 1.15 * mask.mean()


def test_gradcam_on_vgg16_shapes_range_and_class_choice():
    model = build_classifier("VGG16", 4, image_size=32)
    images = _images(32, n=2, seed=1)
    activations, logits = grad_model(model)(images, training=False)
    assert tuple(activations.shape) == (2, 2, 2, 512)  # block5_conv3 at 32 px
    predictions = tf.nn.softmax(logits)  # the head's pre-activation output
    np.testing.assert_allclose(predictions, model(images, training=False), rtol=1e-5, atol=1e-7)

    predicted = gradcam(model, images)
    assert predicted.shape == (2, 32, 32)
    assert predicted.min() >= 0 and predicted.max() <= 1
    assert all(np.isclose(heat.max(), 1.0) or heat.max() == 0 for heat in predicted)
    argmax = np.asarray(predictions).argmax(axis=1)
    np.testing.assert_allclose(gradcam(model, images, class_index=argmax), predicted)
    single = gradcam(model, images[0], class_index=1)
    assert single.shape == (32, 32)
    with pytest.raises(ValueError, match="class_index"):
        gradcam(model, images, class_index=4)
    with pytest.raises(ValueError, match="model input"):
        gradcam(model, _images(40, n=1))


def test_gradcam_works_on_a_reloaded_model(mobilenet, tmp_path):
    mobilenet.save(tmp_path / "model.keras")
    loaded = load_model(tmp_path / "model.keras")
    images = _images(64, n=2, seed=2)
    np.testing.assert_allclose(gradcam(loaded, images), gradcam(mobilenet, images), atol=1e-5)


def test_localisation_scores_over_a_table_with_masks(mobilenet, tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for number, (label, index) in enumerate([("bcc", 0), ("mel", 1), ("mel", 1), ("nv", 2)]):
        image_id = f"SYN_{number:07d}"
        path = tmp_path / "HAM10000_images_part_1" / f"{image_id}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (150, 200, 3), dtype=np.uint8)).save(path)
        lesion = np.zeros((150, 200), bool)
        lesion[40 : 40 + 20 * (number + 1), 60:140] = True
        _write_mask(
            tmp_path / "HAM10000_segmentations_lesion" / f"{image_id}_segmentation.png", lesion
        )
        rows.append({"image_id": image_id, "path": str(path), "label": label, "label_index": index})
    frame = pd.DataFrame(rows)

    # the true class of an untrained model may have no positive evidence (all-zero map -> NaN)
    scores = localisation_scores(mobilenet, frame, tmp_path, image_size=64, batch_size=3)
    assert list(scores["image_id"]) == list(frame["image_id"])
    assert (scores["energy_inside"].between(0, 1) | scores["energy_inside"].isna()).all()
    # the predicted class always has some: its map is non-zero
    predicted = localisation_scores(
        mobilenet, frame, tmp_path, image_size=64, batch_size=3, class_index="predicted"
    )
    assert predicted["energy_inside"].between(0, 1).all()
    assert predicted["pointing_hit"].isin([True, False]).all()
    for (
        row
    ) in predicted.itertuples():  # each score is the metric of that image's own heatmap and mask
        image = load_resized(frame.set_index("image_id").loc[row.image_id, "path"], 64, "crop")
        mask = load_resized(mask_path_for(row.image_id, tmp_path), 64, "crop", mask=True)
        heatmap = gradcam(mobilenet, image, class_index=row.predicted_index)
        assert row.mask_fraction == pytest.approx(mask.mean())
        assert row.energy_inside == pytest.approx(energy_inside(heatmap, mask), abs=1e-6)
        assert row.pointing_hit == pointing_game(heatmap, mask)
    summary = summarise_localisation(predicted)
    assert list(summary["label"]) == ["bcc", "mel", "nv", "all"]  # label_index order
    assert list(summary["n_images"]) == [1, 2, 1, 4]

    with pytest.raises(DataError, match="label_index"):
        localisation_scores(mobilenet, frame.drop(columns="label_index"), tmp_path)


def test_grad_cam_skips_and_names_images_the_gate_refuses(mobilenet, tmp_path):
    """The rest of the job goes on: refused images (and masks) are named in a warning and left
    out; load_resized refuses them with a DataError naming the file."""
    from hostile import HUGE, jpeg_declaring

    rng = np.random.default_rng(1)
    rows = []
    for number in range(3):
        image_id = f"SYN_{number:07d}"
        path = tmp_path / "HAM10000_images_part_1" / f"{image_id}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (150, 200, 3), dtype=np.uint8)).save(path)
        lesion = np.zeros((150, 200), bool)
        lesion[40:90, 60:140] = True
        _write_mask(
            tmp_path / "HAM10000_segmentations_lesion" / f"{image_id}_segmentation.png", lesion
        )
        rows.append({"image_id": image_id, "path": str(path), "label": "mel", "label_index": 1})
    Path(rows[1]["path"]).write_bytes(jpeg_declaring(*HUGE))
    (tmp_path / "HAM10000_segmentations_lesion" / "SYN_0000002_segmentation.png").write_bytes(b"")
    frame = pd.DataFrame(rows)
    with pytest.warns(UserWarning, match="Grad-CAM skips") as caught:
        scores = localisation_scores(mobilenet, frame, tmp_path, image_size=64)
    assert list(scores["image_id"]) == ["SYN_0000000"]
    text = " ".join(str(w.message) for w in caught)
    assert "SYN_0000001.jpg declares 50000 x 50000" in text
    assert "SYN_0000002_segmentation.png: empty file" in text
    with pytest.raises(DataError, match="SYN_0000001.jpg declares 50000 x 50000"):
        load_resized(rows[1]["path"], 64)


def test_overlay_figure_shows_one_image_per_class_above_its_heatmap(mobilenet, tmp_path):
    rng = np.random.default_rng(1)
    rows = []
    for number, (label, index) in enumerate([("mel", 1), ("bcc", 0), ("mel", 1), ("nv", 2)]):
        image_id = f"SYN_{number:07d}"
        path = tmp_path / "HAM10000_images_part_1" / f"{image_id}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (150, 200, 3), dtype=np.uint8)).save(path)
        if label != "nv":  # one image without a mask: drawn without an outline
            lesion = np.zeros((150, 200), bool)
            lesion[40:110, 60:140] = True
            _write_mask(
                tmp_path / "HAM10000_segmentations_lesion" / f"{image_id}_segmentation.png",
                lesion,
            )
        rows.append({"image_id": image_id, "path": str(path), "label": label, "label_index": index})
    figure = overlay_figure(mobilenet, pd.DataFrame(rows), ["bcc", "mel", "nv"], 64,
                            mask_root=tmp_path)
    assert len(figure.axes) == 6  # classes bcc, mel, nv: image above, heatmap below
    tops, bottoms = figure.axes[0::2], figure.axes[1::2]  # created column by column
    assert [a.get_title().split(" ->")[0] for a in tops] == ["bcc", "mel", "nv"]
    assert [len(a.collections) > 0 for a in tops] == [True, True, False]  # mask outlines
    image = load_resized(rows[0]["path"], 64, "crop")  # the first mel row is the one shown
    expected = overlay(image, gradcam(mobilenet, image))
    np.testing.assert_array_equal(bottoms[1].images[0].get_array(), expected)
    with pytest.raises(DataError, match="no rows"):
        overlay_figure(mobilenet, pd.DataFrame(rows).iloc[:0], ["bcc", "mel", "nv"], 64)

"""utils.augmentation.published: the published augmentation and its filename collisions."""
from __future__ import annotations

import numpy as np
import pytest

from utils import fileio
from utils.augmentation import published
from utils.data import readers

# Printed sizes of the published augmented HAM10000 folders (copies only, originals excluded)
# and the images they came from: class -> (source images, copies written each, files kept).
PRINTED_FOLDERS = {"akiec": (327, 25, 5592), "bcc": (514, 18, 6005), "bkl": (1099, 7, 5363),
                   "df": (115, 62, 5179), "vasc": (142, 62, 5869)}


@pytest.mark.parametrize("label", sorted(PRINTED_FOLDERS))
def test_name_collisions_reproduce_the_printed_folder_sizes(label):
    sources, copies, printed = PRINTED_FOLDERS[label]
    assert published.PUBLISHED_COPIES["ham10000"][label] == copies
    kept = published.surviving_copies(sources, copies, np.random.default_rng(0))
    assert len(kept) == pytest.approx(printed, rel=0.02)
    assert len(kept) == pytest.approx(published.expected_folder_size(sources, copies), rel=0.02)
    assert len(set(kept)) == len(kept) and kept == sorted(kept)  # written order, source by source


def test_without_collisions_every_copy_survives():
    assert len(published.surviving_copies(10, 3, np.random.default_rng(0), collisions=False)) == 30


def test_opencv_warp_equals_keras_apply_affine_transform():
    """The same transform through Keras' own (scipy) implementation and ours."""
    legacy = pytest.importorskip("keras.src.legacy.preprocessing.image")
    rng = np.random.default_rng(1)
    rows, cols = np.mgrid[0:40, 0:56]
    smooth = 120 + 60 * np.sin(cols / 5.0) + 50 * np.cos(rows / 7.0)  # a smooth test pattern
    image = np.stack([smooth, smooth[::-1], smooth[:, ::-1]], axis=-1).astype(np.uint8)
    config = published.PublishedAugment(minmax_rescale=False)
    for _ in range(5):
        params = published.sample_transform(rng, config, 40, 56)
        params.update(flip_horizontal=False, flip_vertical=False)
        theirs = legacy.apply_affine_transform(
            image.astype(np.float32), params["theta"], params["tx"], params["ty"], 0,
            params["zx"], params["zy"], row_axis=0, col_axis=1, channel_axis=2,
            fill_mode="nearest", order=1)
        ours = published.augment_image(image, params, config).astype(np.float32)
        difference = np.abs(theirs - ours)[2:-2, 2:-2]  # borders: sub-pixel edge conventions
        assert np.median(difference) <= 1.0 and np.mean(difference) < 1.0


def test_flips_and_minmax_rescale():
    image = np.full((8, 10, 3), 100, np.uint8)
    image[0, 0] = 50
    image[7, 9] = 150
    identity = {"theta": 0.0, "tx": 0.0, "ty": 0.0, "zx": 1.0, "zy": 1.0,
                "flip_horizontal": True, "flip_vertical": True}
    out = published.augment_image(image, identity)
    assert out[0, 0].tolist() == [255] * 3 and out[7, 9].tolist() == [0] * 3  # rotated 180
    assert out[3, 3].tolist() == [127] * 3  # (100 - 50) / 100 * 255 = 127.5, truncated


def test_pool_folder_order_and_resumable_byte_identical_files(synthetic_ham, tmp_path):
    table = readers.read_ham10000(synthetic_ham)
    table = table.groupby("label").head(6)
    copies = {"akiec": 2, "bcc": 1, "bkl": 1, "df": 3, "mel": 1, "nv": 0, "vasc": 3}
    pool = published.build_pool(table, tmp_path / "a", copies, seed=3)
    for label, folder in pool.groupby("label", sort=False):
        n = int((table["label"] == label).sum())
        assert folder["folder_position"].tolist() == list(range(1, len(folder) + 1))
        assert (~folder["augmented"]).sum() == n  # every original, after the copies
        assert not folder["augmented"].iloc[len(folder) - n:].any()
        assert folder["augmented"].sum() == n * copies[label]  # 10**4 names: no collision here
    copies_rows = pool[pool["augmented"]]
    assert (copies_rows["lesion_id"].to_numpy() == table.set_index("image_id").loc[
        copies_rows["source_image_id"], "lesion_id"].to_numpy()).all()
    first = fileio.tree_digest(tmp_path / "a" / published.IMAGES_DIR)
    (tmp_path / "a" / published.IMAGES_DIR / "df").rename(tmp_path / "moved")  # "killed" run
    published.build_pool(table, tmp_path / "a", copies, seed=3)
    assert fileio.tree_digest(tmp_path / "a" / published.IMAGES_DIR) == first
    published.build_pool(table, tmp_path / "b", copies, seed=3, workers=1)
    assert fileio.tree_digest(tmp_path / "b" / published.IMAGES_DIR) == first
    with pytest.raises(Exception, match="other settings"):
        published.build_pool(table, tmp_path / "a", copies, seed=4)

"""utils.data.duplicates: near-identical images found across lesion ids, and split by them."""
from __future__ import annotations

import cv2
import numpy as np
import pandas as pd

from utils.data import duplicates, readers, splits


def _table_with_copies(synthetic_ham, tmp_path) -> pd.DataFrame:
    """Six synthetic images per class plus, under NEW lesion ids, a mirrored copy of image 0, a
    re-encoded
    brighter copy of image 1 and a rotated copy of image 2."""
    table = readers.read_ham10000(synthetic_ham).groupby("label").head(6).reset_index(drop=True)
    rows = []
    for k, change in enumerate((lambda im: cv2.flip(im, 1),
                                lambda im: cv2.convertScaleAbs(im, alpha=1.0, beta=12),
                                lambda im: cv2.rotate(im, cv2.ROTATE_90_CLOCKWISE))):
        source = table.iloc[k]
        path = tmp_path / f"copy{k}.jpg"
        cv2.imwrite(str(path), change(cv2.imread(source["path"])),
                    [cv2.IMWRITE_JPEG_QUALITY, 85])
        rows.append({**source.to_dict(), "image_id": f"copy{k}", "path": str(path),
                     "lesion_id": f"other_lesion_{k}"})
    return pd.concat([table, pd.DataFrame(rows)], ignore_index=True)


def test_near_duplicates_found_across_lesions_and_nothing_else(synthetic_ham, tmp_path):
    table = _table_with_copies(synthetic_ham, tmp_path)
    grouped, pairs = duplicates.with_duplicate_groups(table)
    found = {frozenset(p) for p in zip(pairs["image_a"], pairs["image_b"])}
    expected = {frozenset((table["image_id"][k], f"copy{k}")) for k in range(3)}
    assert expected <= found
    assert all(p & {"copy0", "copy1", "copy2"} or
               len({table.set_index("image_id").loc[i, "lesion_id"] for i in p}) == 1
               for p in found)  # any other pair is two images of one lesion
    for k in range(3):
        group = grouped.set_index("image_id")[duplicates.GROUP_COLUMN]
        assert group[f"copy{k}"] == group[table["image_id"][k]]


def test_split_by_duplicate_groups_keeps_copies_together(synthetic_ham, tmp_path):
    table = _table_with_copies(synthetic_ham, tmp_path)
    grouped, pairs = duplicates.with_duplicate_groups(table)
    by_lesion = splits.lesion_split(grouped, (0.5, 0.25, 0.25), seed=1)
    by_group = splits.lesion_split(grouped, (0.5, 0.25, 0.25), seed=1,
                                   group_by=duplicates.GROUP_COLUMN)
    assert duplicates.pairs_across_splits(by_group, pairs)["pairs_across_sets"] == 0
    assert by_group.groupby("lesion_id")["split"].nunique().max() == 1  # lesions still whole
    counts = duplicates.pairs_across_splits(by_lesion, pairs)
    assert counts["pairs_of_different_lesions"] >= 3


def test_hash_is_invariant_to_the_dihedral_group_and_distances_are_bitwise():
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 255, (60, 80)).astype(np.uint8), (0, 0), 3)
    views = duplicates.dihedral_hashes(image)
    assert duplicates.dihedral_hashes(cv2.flip(image, 0))[0] in views
    assert duplicates.hamming(np.uint64(0b1011), np.uint64(0b0001)) == 2
    other = duplicates.perceptual_hash(255 - image)
    assert duplicates.hamming(views[0], other) > duplicates.HASH_THRESHOLD

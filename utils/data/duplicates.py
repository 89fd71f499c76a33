"""Near-duplicate images beyond lesion_id: a perceptual hash and the groups it implies.

HAM10000 holds near-identical images filed under different lesion ids (the same photograph
re-submitted, or re-cropped). A lesion-grouped split cannot see them; this module finds them:

- `perceptual_hash`: the DCT hash (pHash) of an image - grayscale, resized to 32x32 (area), 2-D
  DCT (OpenCV), the 8x8 lowest frequencies without the DC term compared with their median: 63
  bits. Hashes of the 8 flips/rotations are kept too (`dihedral_hashes`), so a mirrored or
  rotated copy is found as well.
- `near_duplicate_pairs`: candidates are pairs whose Hamming distance, minimised over the 8 views
  of one of them, is at most HASH_THRESHOLD (8 of 63 bits); a candidate is a near-duplicate when
  the correlation of the two images' high-pass 64x64 thumbnails (grayscale minus its Gaussian
  blur, sigma 4; best of the 8 views) is at least MIN_CORRELATION (0.90). The hash alone is not
  enough on dermoscopy: on the real HAM10000 (200x150), 2.5e-5 of random pairs of different
  lesions lie within 4 bits (about 1,250 of its 50 million pairs), while the thumbnail
  correlation of 20,000 random pairs of different lesions never exceeded 0.79 (99.99th
  percentile 0.76) and 87 of the 94 candidate pairs above 0.90 are images of one lesion.
- `duplicate_groups`: connected components of lesions joined by near-duplicate pairs, usable as
  the split unit (`utils.data.splits.lesion_split(..., group_by="duplicate_group")`).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import cv2
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from utils.errors import DataError

HASH_SIZE = 8  # the hash keeps HASH_SIZE x HASH_SIZE low frequencies (less the DC term)
DCT_SIZE = 32  # images are resized to DCT_SIZE x DCT_SIZE before the DCT
HASH_THRESHOLD = 8  # candidates: max Hamming distance (of 63 bits) over the 8 views
THUMBNAIL_SIZE = 64  # side of the high-pass thumbnail that confirms a candidate
BLUR_SIGMA = 4.0  # the Gaussian blur subtracted from the thumbnail (removes vignetting)
MIN_CORRELATION = 0.90  # a confirmed near-duplicate: thumbnail correlation at least this
N_VIEWS = 8  # the dihedral group: 4 rotations x optional mirror
GROUP_COLUMN = "duplicate_group"


def _bits(gray: np.ndarray) -> np.uint64:
    small = cv2.resize(gray, (DCT_SIZE, DCT_SIZE), interpolation=cv2.INTER_AREA)
    coefficients = cv2.dct(small.astype(np.float32))[:HASH_SIZE, :HASH_SIZE].flatten()[1:]
    bits = (coefficients > np.median(coefficients)).astype(np.uint64)
    return np.uint64(np.bitwise_or.reduce(bits << np.arange(bits.size, dtype=np.uint64)))


def perceptual_hash(image: np.ndarray) -> np.uint64:
    """The 63-bit DCT hash of a uint8 RGB (or grayscale) image."""
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return _bits(gray)


def dihedral_hashes(image: np.ndarray) -> np.ndarray:
    """Hashes of the 8 flips/rotations of an image (view 0 = the image itself)."""
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    views = []
    for mirrored in (gray, cv2.flip(gray, 1)):
        for turns in range(4):
            views.append(_bits(np.ascontiguousarray(np.rot90(mirrored, turns))))
    return np.array(views, dtype=np.uint64)


def thumbnail(gray: np.ndarray) -> np.ndarray:
    """The zero-mean, unit-norm high-pass thumbnail that confirms a candidate pair."""
    small = cv2.resize(gray, (THUMBNAIL_SIZE, THUMBNAIL_SIZE),
                       interpolation=cv2.INTER_AREA).astype(np.float32)
    detail = small - cv2.GaussianBlur(small, (0, 0), BLUR_SIGMA)
    detail -= detail.mean()
    return detail / max(float(np.linalg.norm(detail)), 1e-6)


def _views(image: np.ndarray) -> list[np.ndarray]:
    """The 8 flips/rotations of a 2-D array, in dihedral_hashes' order."""
    return [np.rot90(mirrored, turns) for mirrored in (image, image[:, ::-1])
            for turns in range(4)]


def _read_gray(path: str) -> np.ndarray:
    image = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise DataError(f"{path}: cannot read this image; run `python -m utils check` on its "
                        "folder")
    return image


def fingerprint_files(paths: Sequence[str], workers: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """((n, 8) dihedral hashes, (n, 64, 64) thumbnails) of image files (threads: OpenCV
    releases the GIL)."""
    def one(path: str) -> tuple[np.ndarray, np.ndarray]:
        gray = _read_gray(path)
        return dihedral_hashes(gray), thumbnail(gray)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as executor:
        rows = list(tqdm(executor.map(one, paths), total=len(paths), desc="fingerprints",
                         unit="img", disable=len(paths) < 1000, mininterval=2.0))
    if not rows:
        return (np.zeros((0, N_VIEWS), dtype=np.uint64),
                np.zeros((0, THUMBNAIL_SIZE, THUMBNAIL_SIZE), dtype=np.float32))
    return np.stack([h for h, _ in rows]), np.stack([t for _, t in rows])


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise Hamming distance of uint64 hashes (broadcasting)."""
    return np.bitwise_count(np.bitwise_xor(a, b)).astype(np.int64)


def candidate_pairs(hashes: np.ndarray, threshold: int = HASH_THRESHOLD,
                    block: int = 128) -> pd.DataFrame:
    """Pairs (a < b, row positions) whose hash distance, minimised over the views of a, is at
    most `threshold`; columns a, b, distance."""
    if hashes.ndim != 2 or hashes.shape[1] != N_VIEWS:
        raise ValueError(f"hashes must be (n, {N_VIEWS}) dihedral hashes, got {hashes.shape}")
    canonical = hashes[:, 0]
    found = []
    for start in range(0, len(hashes), block):
        views = hashes[start:start + block]  # (m, 8)
        distance = hamming(views[:, :, None], canonical[None, None, :]).min(axis=1)  # (m, n)
        rows, cols = np.nonzero(distance <= threshold)
        keep = rows + start < cols
        rows, cols = rows[keep], cols[keep]
        found.append(np.stack([rows + start, cols, distance[rows, cols]], axis=1))
    pairs = np.concatenate(found) if found else np.zeros((0, 3), dtype=np.int64)
    return pd.DataFrame(pairs, columns=["a", "b", "distance"]).astype(np.int64)


def near_duplicate_pairs(hashes: np.ndarray, thumbnails: np.ndarray,
                         threshold: int = HASH_THRESHOLD,
                         min_correlation: float = MIN_CORRELATION) -> pd.DataFrame:
    """Confirmed near-duplicate pairs: hash candidates whose best-view thumbnail correlation is
    at least `min_correlation`; columns a, b, distance, correlation."""
    pairs = candidate_pairs(hashes, threshold)
    correlation = np.array([max(float((thumbnails[a] * view).sum())
                                for view in _views(thumbnails[b]))
                            for a, b in zip(pairs["a"], pairs["b"])], dtype=float)
    pairs = pairs.assign(correlation=correlation if len(pairs) else np.zeros(0))
    return pairs[pairs["correlation"] >= min_correlation].reset_index(drop=True)


def duplicate_groups(table: pd.DataFrame, pairs: pd.DataFrame) -> pd.Series:
    """Group id per row: lesions joined (transitively) by near-duplicate pairs share a group,
    named after the smallest lesion id in it."""
    lesions = table["lesion_id"].astype(str).to_numpy()
    parent: dict[str, str] = {lesion: lesion for lesion in lesions}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(pairs["a"], pairs["b"]):
        root_a, root_b = find(lesions[a]), find(lesions[b])
        if root_a != root_b:
            parent[max(root_a, root_b)] = min(root_a, root_b)
    return pd.Series([find(lesion) for lesion in lesions], index=table.index, name=GROUP_COLUMN)


def with_duplicate_groups(table: pd.DataFrame, workers: int = 2
                          ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the table with a duplicate_group column, the near-duplicate pairs with image ids)."""
    hashes, thumbnails = fingerprint_files(table["path"].astype(str).tolist(), workers)
    pairs = near_duplicate_pairs(hashes, thumbnails)
    out = table.copy()
    out[GROUP_COLUMN] = duplicate_groups(table, pairs)
    named = pairs.assign(image_a=table["image_id"].to_numpy()[pairs["a"]],
                         image_b=table["image_id"].to_numpy()[pairs["b"]],
                         lesion_a=table["lesion_id"].to_numpy()[pairs["a"]],
                         lesion_b=table["lesion_id"].to_numpy()[pairs["b"]])
    return out, named


def pairs_across_splits(manifest: pd.DataFrame, pairs: pd.DataFrame) -> dict[str, int]:
    """How many near-duplicate pairs join two different lesions, and how many of those sit in
    two different sets of a split manifest (row positions as in `pairs`)."""
    split = manifest["split"].to_numpy()
    lesions = manifest["lesion_id"].astype(str).to_numpy()
    a, b = pairs["a"].to_numpy(), pairs["b"].to_numpy()
    other_lesion = lesions[a] != lesions[b]
    crossing = other_lesion & (split[a] != split[b])
    return {"pairs": int(len(pairs)), "pairs_of_different_lesions": int(other_lesion.sum()),
            "pairs_across_sets": int(crossing.sum()),
            "images_with_a_duplicate_in_another_set": int(len(set(a[crossing]) | set(b[crossing])))}

"""utils.training.pipeline: decode/resize policies, value ranges, seeded shuffles, on-disk cache,
balanced
sampling, class weights."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

tf = pytest.importorskip("tensorflow")

from utils.training import pipeline  # noqa: E402

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def _stripes(width: int, height: int) -> np.ndarray:
    """Three vertical stripes (red | green | blue) across the width."""
    image = np.zeros((height, width, 3), np.uint8)
    third = width // 3
    image[:, :third] = RED
    image[:, third:2 * third] = GREEN
    image[:, 2 * third:] = BLUE
    return image


def _write(path: Path, array: np.ndarray, **kwargs) -> str:
    Image.fromarray(array).save(path, **kwargs)
    return str(path)


def _frame(files: list[str], labels: list[int]) -> pd.DataFrame:
    return pd.DataFrame({"image_id": [Path(f).stem for f in files], "path": files,
                         "label_index": labels})


@pytest.fixture(scope="module")
def mixed_images(tmp_path_factory) -> pd.DataFrame:
    """JPEG 200x150 (HAM size), JPEG 600x450 (original size), PNG 120x300 (portrait, RGBA),
    grayscale JPEG 50x40 (upscaled)."""
    folder = tmp_path_factory.mktemp("mixed")
    files = [
        _write(folder / "a.jpg", _stripes(200, 150), quality=95),
        _write(folder / "b.jpg", _stripes(600, 450), quality=95),
        _write(
            folder / "c.png", np.dstack([_stripes(120, 300), np.full((300, 120), 255, np.uint8)])
        ),
        _write(folder / "d.jpg", np.full((40, 50), 128, np.uint8), quality=95),
    ]
    return _frame(files, [0, 1, 2, 1])


@pytest.mark.parametrize("policy", ["crop", "pad", "squash"])
def test_shapes_dtypes_and_ranges_for_every_policy(mixed_images, policy):
    dataset = pipeline.make_dataset(mixed_images, 64, batch_size=3, training=False,
                                    num_classes=3, resize_policy=policy)
    batches = list(dataset.as_numpy_iterator())
    assert [b[0].shape for b in batches] == [(3, 64, 64, 3), (1, 64, 64, 3)]
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    assert images.dtype == np.float32 and labels.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 255.0 and images.max() > 200.0
    np.testing.assert_array_equal(labels.argmax(1), [0, 1, 2, 1])
    np.testing.assert_array_equal(labels.sum(1), 1.0)
    # the grayscale image becomes 3 equal channels
    np.testing.assert_allclose(images[3, ..., 0], images[3, ..., 2], atol=1)


def test_resize_policies_keep_or_drop_aspect(tmp_path):
    """A 300x100 red|green|blue image: crop keeps only the green centre; pad keeps all three
    stripes between black bands; squash keeps all three stripes filling the square."""
    frame = _frame([_write(tmp_path / "wide.png", _stripes(300, 100))], [0])

    def image(policy: str) -> np.ndarray:
        dataset = pipeline.make_dataset(frame, 60, 1, False, 1, resize_policy=policy)
        return next(dataset.as_numpy_iterator())[0][0]

    crop, pad, squash = image("crop"), image("pad"), image("squash")
    assert (crop[..., 1] > 200).all() and (crop[..., 0] < 50).all()
    assert pad[:15].max() == 0 and pad[-15:].max() == 0  # 20-px stripe of image, black above/below
    assert pad[30, 2, 0] > 200 and pad[30, 30, 1] > 200 and pad[30, -3, 2] > 200
    assert squash[0, 2, 0] > 200 and squash[-1, -3, 2] > 200 and squash[0, 30, 1] > 200


def test_large_jpeg_decoded_at_reduced_scale_matches_full_decode():
    """The ratio decode of a 600x450 JPEG to 64 px is close to a full-size decode + resize."""
    array = _stripes(600, 450)
    data = tf.io.encode_jpeg(array, quality=95)
    small = pipeline.decode_image(data, 64)
    assert small.shape[:2] == (-(-450 // 4), 600 // 4)  # shorter side 450 >= 4*64 -> ratio 4
    full = tf.io.decode_jpeg(data, channels=3)
    a = pipeline.resize_image(small, 64, "crop").numpy().astype(int)
    b = pipeline.resize_image(full, 64, "crop").numpy().astype(int)
    assert np.abs(a - b).mean() < 3


def _order(dataset) -> list[int]:
    return [int(i) for batch in dataset.as_numpy_iterator() for i in batch[0][:, 0, 0, 0]]


def test_seeded_shuffle_is_deterministic_and_reshuffles_each_epoch(tmp_path):
    files = [_write(tmp_path / f"{i}.png", np.full((8, 8, 3), i * 8, np.uint8)) for i in range(24)]
    frame = _frame(files, [0] * 24)
    one = pipeline.make_dataset(frame, 8, 6, True, 1, seed=3, resize_policy="squash")
    two = pipeline.make_dataset(frame, 8, 6, True, 1, seed=3, resize_policy="squash")
    other = pipeline.make_dataset(frame, 8, 6, True, 1, seed=4, resize_policy="squash")
    first, second = _order(one), _order(one)
    assert first == _order(two) and second == _order(two)
    assert first != second and sorted(first) == sorted(second) == [i * 8 for i in range(24)]
    assert _order(other) != first
    evaluation = pipeline.make_dataset(frame, 8, 6, False, 1, resize_policy="squash")
    assert _order(evaluation) == [i * 8 for i in range(24)]


def test_disk_cache_round_trip(tmp_path, mixed_images):
    frame = mixed_images.copy()
    copies = []
    for path in frame["path"]:
        target = tmp_path / Path(path).name
        target.write_bytes(Path(path).read_bytes())
        copies.append(str(target))
    frame["path"] = copies
    cache_dir = tmp_path / "cache"
    plain = next(pipeline.make_dataset(frame, 32, 4, False, 3).as_numpy_iterator())[0]
    cached = next(pipeline.make_dataset(frame, 32, 4, False, 3, cache_dir=cache_dir)
                  .as_numpy_iterator())[0]
    np.testing.assert_array_equal(plain, cached)
    assert any(cache_dir.iterdir())
    for path in copies:  # the sources are gone: a second pass must read the cache
        Path(path).unlink()
    again = next(pipeline.make_dataset(frame, 32, 4, False, 3, cache_dir=cache_dir)
                 .as_numpy_iterator())[0]
    np.testing.assert_array_equal(plain, again)
    # another size is another cache key
    assert pipeline.cache_path(frame, 32, "crop", cache_dir) != pipeline.cache_path(
        frame, 48, "crop", cache_dir)


def test_balanced_sampling_draws_classes_equally(tmp_path):
    files = [_write(tmp_path / f"{i}.png", np.zeros((8, 8, 3), np.uint8)) for i in range(50)]
    labels = [0] * 45 + [2] * 5  # class 1 absent
    dataset = pipeline.make_dataset(_frame(files, labels), 8, 20, True, 3, seed=1, balanced=True)
    drawn = np.concatenate([b[1].argmax(1) for b in dataset.take(20).as_numpy_iterator()])
    share = (drawn == 2).mean()
    assert len(drawn) == 400 and 0.4 < share < 0.6 and not (drawn == 1).any()


def test_online_augment_only_when_training(tmp_path):
    frame = _frame([_write(tmp_path / "x.png", np.full((8, 8, 3), 10, np.uint8))], [0])
    invert = lambda image: 255 - image  # noqa: E731  (a uint8 -> uint8 callable)
    train = next(pipeline.make_dataset(frame, 8, 1, True, 1, augment=invert).as_numpy_iterator())
    evaluation = next(pipeline.make_dataset(frame, 8, 1, False, 1, augment=invert)
                      .as_numpy_iterator())
    assert train[0].min() == 245 and evaluation[0].max() == 10


def test_class_weights_are_balanced():
    weights = pipeline.class_weights([0, 0, 0, 1, 3, 3], num_classes=4)
    assert weights == {0: 6 / 9, 1: 2.0, 2: 1.0, 3: 1.0}
    counts = np.bincount([0, 0, 0, 1, 3, 3])
    assert np.allclose([counts[c] * weights[c] for c in (0, 1, 3)], 2.0)  # equal total weight


def test_bad_input_errors(mixed_images):
    with pytest.raises(ValueError, match="empty"):
        pipeline.make_dataset(mixed_images.iloc[:0], 32, 2, False, 3)
    with pytest.raises(ValueError, match="outside 0..1"):
        pipeline.make_dataset(mixed_images, 32, 2, False, 2)
    with pytest.raises(ValueError, match="resize_policy"):
        pipeline.make_dataset(mixed_images, 32, 2, False, 3, resize_policy="stretch")


def test_online_augment_with_element_seeds_is_reproducible(tmp_path):
    """The online augmentation callable gets a per-element seed: two pipelines with one seed agree
    image for image although the map runs in parallel; the next epoch differs."""
    from utils.augmentation import transforms as augment

    files = [_write(tmp_path / f"{i}.png", _stripes(30 + i, 24)) for i in range(6)]
    frame = _frame(files, [0] * 6)

    def epochs(seed: int) -> list[np.ndarray]:
        dataset = pipeline.make_dataset(frame, 24, 6, True, 1, seed=seed,
                                        augment=augment.online_augment_fn(seed=seed))
        return [next(dataset.as_numpy_iterator())[0] for _ in range(2)]

    first, again = epochs(5), epochs(5)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], first[1])


def test_the_gate_refuses_bad_files_before_tf_decodes_them(tmp_path):
    """main: TF's decoder decoded a 50,000 x 50,000 JPEG header as a grey canvas (training on
    it) and stopped mid-epoch on a truncated file; now one DataError lists every bad file."""
    from hostile import HUGE, jpeg_declaring

    from utils.errors import DataError

    good = [_write(tmp_path / f"{i}.jpg", _stripes(30, 20)) for i in range(3)]
    (tmp_path / "huge.jpg").write_bytes(jpeg_declaring(*HUGE))
    data = Path(good[0]).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.jpg").write_text("not an image")
    files = good + [str(tmp_path / n) for n in ("huge.jpg", "cut.jpg", "text.jpg")]
    frame = _frame(files, [0, 1, 0, 1, 0, 1])
    with pytest.raises(DataError, match="3 problem") as error:
        pipeline.make_dataset(frame, 16, 2, True, 2)
    message = str(error.value)
    assert "huge.jpg declares 50000 x 50000" in message
    assert "cut.jpg is truncated" in message and "text.jpg is not a readable image" in message
    batch = next(pipeline.make_dataset(_frame(good, [0, 1, 0]), 16, 3, False, 2)
                 .as_numpy_iterator())
    assert batch[0].shape == (3, 16, 16, 3)

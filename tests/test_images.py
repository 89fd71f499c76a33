"""utils.data.images, the one image gate: huge headers, non-images, empty and truncated files are
refused with a Problem naming the file, without decoding; the formats users have decode to
uint8 RGB (`check` on a folder holding such files: tests/test_check.py)."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hostile import HUGE, jpeg_declaring, pattern, png_declaring, write_user_formats
from PIL import Image

from utils.data import images
from utils.errors import DataError


def test_inspect_image_zero_byte_truncated_unreadable(tmp_path):
    good = tmp_path / "good.jpg"
    Image.new("RGB", (64, 48), (150, 90, 60)).save(good, format="JPEG")
    data = good.read_bytes()
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.jpg").write_bytes(b"this is not an image")
    assert images.inspect_image(str(good)) == ((64, 48), None)
    kinds = {name: images.inspect_image(str(tmp_path / name))[1]
             for name in ("empty.jpg", "cut.jpg", "text.jpg")}
    assert kinds["empty.jpg"].kind == "empty_image" and "0 bytes" in kinds["empty.jpg"].message
    assert kinds["cut.jpg"].kind == "corrupt_image" and "truncated" in kinds["cut.jpg"].message
    assert kinds["text.jpg"].kind == "unreadable_image"
    assert all(str(tmp_path / name) in str(problem) for name, problem in kinds.items())


@pytest.mark.parametrize("name, data", [
    ("huge.png", png_declaring(*HUGE)),
    ("huge.jpg", jpeg_declaring(*HUGE)),
    ("huge_png_named.jpg", png_declaring(*HUGE)),
])
def test_huge_headers_are_refused_without_decoding(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    tracemalloc.start()
    with pytest.raises(DataError) as error:
        images.probe(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 5_000_000  # header reads only: a decode would need 7.5 GB
    problem = error.value.problem
    assert problem.kind == "too_large" and problem.where == str(path)
    assert "50000 x 50000" in problem.message and f"{images.MAX_PIXELS:,}" in problem.message
    assert images.inspect_image(path) == (None, problem)  # check's decode never starts
    with pytest.raises(DataError, match=name):
        images.read_rgb(path)


def test_the_cap_is_one_constant(tmp_path):
    side = int(images.MAX_PIXELS ** 0.5)
    (tmp_path / "at.png").write_bytes(png_declaring(side, side))
    (tmp_path / "over.png").write_bytes(png_declaring(side + 1, side + 1))
    # at the cap the header passes (the gate reads headers only); its data is only 8x8, which
    # the full decode of `check` finds; one pixel row more is refused before anything is read
    assert images.check_file(tmp_path / "at.png")[0].size == (side, side)
    assert images.inspect_image(tmp_path / "at.png")[1].kind == "corrupt_image"
    assert images.check_file(tmp_path / "over.png")[1].kind == "too_large"


def test_truncated_files_of_each_format_are_refused(tmp_path):
    for name, fmt in (("a.jpg", "JPEG"), ("b.png", "PNG"), ("c.gif", "GIF"), ("d.bmp", "BMP"),
                      ("e.webp", "WEBP")):
        Image.fromarray(pattern((64, 48))).save(tmp_path / name, format=fmt)
        data = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) * 2 // 3])
        header, problem = images.check_file(tmp_path / name)
        assert header is None and problem.kind == "corrupt_image", (name, problem)
        assert name in str(problem)


def test_trailing_bytes_after_the_end_marker_are_accepted(tmp_path):
    path = tmp_path / "camera.jpg"
    Image.fromarray(pattern()).save(path)
    path.write_bytes(path.read_bytes() + b"\x00" * 5000 + b"extra vendor data")
    assert images.probe(path).size == (40, 30)
    assert images.read_rgb(path).shape == (30, 40, 3)


def test_unsupported_and_missing_files_are_named(tmp_path):
    Image.fromarray(pattern()).save(tmp_path / "scan.tif")
    assert images.check_file(tmp_path / "scan.tif")[1].kind == "unsupported_image"
    assert "convert it to PNG or JPEG" in images.check_file(tmp_path / "scan.tif")[1].message
    missing = images.check_file(tmp_path / "gone.jpg")[1]
    assert missing.kind == "missing_image" and "gone.jpg" in str(missing)
    assert images.check_file(tmp_path)[1].kind == "unreadable_image"


def test_user_formats_decode_to_uint8_rgb(tmp_path):
    expected = write_user_formats(tmp_path)
    for name, pixel in expected.items():
        header = images.probe(tmp_path / name)
        assert header.size == (40, 30), name
        rgb = images.read_rgb(tmp_path / name)
        assert rgb.shape == (30, 40, 3) and rgb.dtype == np.uint8, name
        np.testing.assert_allclose(rgb[5, 5], pixel, atol=6, err_msg=name)
    assert images.probe(tmp_path / "png_named.jpg").format == "PNG"  # content, not extension


def test_user_formats_decode_alike_in_the_training_pipeline(tmp_path):
    """TensorFlow's decoder (training, predict, Grad-CAM) reads the same files to the same
    colours as the gate's decoder (balance, check)."""
    tf = pytest.importorskip("tensorflow")
    from utils.training import pipeline

    expected = write_user_formats(tmp_path)
    for name, pixel in expected.items():
        decoded = pipeline.decode_image(tf.io.read_file(str(tmp_path / name)), 16).numpy()
        assert decoded.shape == (30, 40, 3), name
        np.testing.assert_allclose(decoded[5, 5], pixel, atol=6, err_msg=name)


def test_screen_keeps_order_and_lists_every_refused_file(tmp_path):
    Image.fromarray(pattern()).save(tmp_path / "ok.jpg")
    (tmp_path / "huge.jpg").write_bytes(jpeg_declaring(*HUGE))
    (tmp_path / "empty.png").write_bytes(b"")
    paths = [tmp_path / "ok.jpg", tmp_path / "huge.jpg", tmp_path / "empty.png"]
    headers, problems = images.screen(paths, workers=2, progress=False)
    assert headers[0].size == (40, 30) and headers[1:] == [None, None]
    assert [p.kind for p in problems] == ["too_large", "empty_image"]
    with pytest.raises(DataError, match="2 problem") as error:
        images.require_images(paths, "my images")
    assert "huge.jpg" in str(error.value) and "empty.png" in str(error.value)


@pytest.mark.real_data
def test_gate_accepts_every_real_ham10000_image(ham_real):
    from utils.data import readers

    paths = readers.read_ham10000(ham_real)["path"].tolist()
    headers, problems = images.screen(paths, progress=False)
    assert problems == []
    assert {header.size for header in headers} == {(200, 150)}


def test_read_rgb_fast_equals_read_rgb_on_every_user_format(tmp_path):
    """The balancer's OpenCV fast path decodes exactly what the gate's Pillow path decodes: RGB
    JPEGs by OpenCV, everything else (CMYK, grey, PNG, ...) by read_rgb itself."""
    write_user_formats(tmp_path)
    for path in sorted(tmp_path.iterdir()):
        np.testing.assert_array_equal(images.read_rgb_fast(path), images.read_rgb(path),
                                      err_msg=path.name)


def test_read_rgb_fast_ignores_exif_orientation_like_pillow(tmp_path):
    rgb = pattern()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": Pillow's decode does not apply it
    path = tmp_path / "rotated.jpg"
    Image.fromarray(rgb).save(path, exif=exif)
    fast = images.read_rgb_fast(path)
    assert fast.shape == rgb.shape
    np.testing.assert_array_equal(fast, images.read_rgb(path))


def test_read_rgb_fast_refuses_a_bad_file_like_read_rgb(tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DataError, match="broken.jpg"):
        images.read_rgb_fast(path)


def test_read_rgb_fast_equals_read_rgb_on_real_images():
    from utils import paths

    shared = paths.shared_data_dir()
    if shared is None:
        pytest.skip("../shared/data is absent (a fresh clone): real-image decode check skipped")
    files = sorted((shared / "HAM10000").rglob("*.jpg"))[::400] + sorted(
        (shared / "HAM10000_originals_sample").rglob("*.jpg"))[:10]
    assert files
    for path in files:
        np.testing.assert_array_equal(images.read_rgb_fast(path), images.read_rgb(path),
                                      err_msg=path.name)

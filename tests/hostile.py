"""Hostile and unusual image files for the tests: headers declaring huge images (a few hundred
bytes each, never decoded), truncated files, and the formats users have (RGBA, 16-bit, grey,
CMYK, palette, PNG under a .jpg name, upper-case extensions, BMP, GIF, WebP)."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

HUGE = (50_000, 50_000)  # 2.5 gigapixels: 7.5 GB to decode


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height (valid CRC) followed by a tiny 8x8 image's data."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 60, 30)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def jpeg_declaring(width: int, height: int) -> bytes:
    """A JPEG whose frame header (SOF0) declares width x height, the rest a tiny 8x8 JPEG."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 60, 30)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    position = 2
    while data[position + 1] != 0xC0:
        position += 2 + struct.unpack(">H", data[position + 2:position + 4])[0]
    data[position + 5:position + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def pattern(size: tuple[int, int] = (40, 30), seed: int = 0) -> np.ndarray:
    """An RGB test image (height x width x 3): a flat red left half, noise on the right."""
    width, height = size
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    image[:, : width // 2] = (200, 30, 30)
    return image


def write_user_formats(folder: Path) -> dict[str, np.ndarray]:
    """{file name: expected uint8 RGB of pixel (5, 5)} for every format a user may have."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = pattern()
    image = Image.fromarray(rgb)
    red = np.array([200, 30, 30])
    grey = np.array(image.convert("L"))[5, 5]
    image.save(folder / "upper.JPG")
    image.convert("CMYK").save(folder / "cmyk.jpg")
    image.convert("L").save(folder / "grey.jpg")
    image.convert("RGBA").save(folder / "rgba.png")
    image.convert("P").save(folder / "palette.png")
    image.convert("LA").save(folder / "grey_alpha.png")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(folder / "grey16.png")
    cv2.imwrite(str(folder / "rgb16.png"), rgb[..., ::-1].astype(np.uint16) * 257)
    image.save(folder / "png_named.jpg", format="PNG")
    image.save(folder / "image.bmp")
    image.convert("P").save(folder / "image.gif")
    image.save(folder / "image.webp", lossless=True)
    return {
        "upper.JPG": red, "cmyk.jpg": red, "grey.jpg": np.array([grey] * 3),
        "rgba.png": red, "palette.png": np.array(image.convert("P").convert("RGB"))[5, 5],
        "grey_alpha.png": np.array([np.array(image.convert("L"))[5, 5]] * 3),
        "grey16.png": np.array([200, 200, 200]), "rgb16.png": red, "png_named.jpg": red,
        "image.bmp": red,
        "image.gif": np.array(image.convert("P").convert("RGB"))[5, 5], "image.webp": red,
    }

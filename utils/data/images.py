"""The image gate: every image file the project reads passes here first.

`probe(path)` reads only the file's header and refuses, with a `Problem` naming the file:

* missing and zero-byte files;
* files that are not images whatever their extension (the format comes from the first bytes,
  so a PNG saved under a .jpg name is read as the PNG it is);
* images declaring more than MAX_PIXELS pixels: the size is parsed from the header bytes
  *before* any decoder sees the file (a 50,000 x 50,000 header would need 7.5 GB to decode;
  Pillow raises DecompressionBombError on it and TensorFlow's decoder only warns and returns a
  grey canvas);
* truncated files (a JPEG without its end-of-image marker, a PNG without IEND, a GIF without its
  trailer, a BMP or WebP shorter than its header says); a file whose tail looks wrong is decoded
  once to tell trailing bytes from truncation.

`check`, the tf.data pipeline, `predict`, `balance` and Grad-CAM all screen their files with it.
`read_rgb(path)` decodes what a user has (RGB, RGBA, grey, 16-bit, CMYK, palette; JPEG, PNG,
BMP, GIF, WebP under any extension, upper case included) to uint8 RGB. `inspect_image(path)` is
the gate plus a full decode (what `python -m utils check` runs on every image). Files are only
read.
"""
from __future__ import annotations

import io
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from utils.data import validation
from utils.data.validation import Problem
from utils.errors import DataError

# The one pixel cap of the project: width x height above it is refused before decoding.
# 50 megapixels: a 150 MB RGB decode; HAM10000 originals are 600x450, ISIC archive images a few
# megapixels. Kept below Pillow's own bomb limit (~89.5 Mpx) so Pillow never warns.
MAX_PIXELS = 50_000_000
# Formats that both TensorFlow's decode_image (the training pipeline) and Pillow read.
SUPPORTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "BMP", "WEBP")
HEAD_BYTES = 65536  # bytes read from the start of a file to find its size
TAIL_BYTES = 64  # bytes read from the end of a file to find its end marker
FIX = "re-download or restore the file, or remove its row"

_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # JPEG frame headers
_STANDALONE_MARKERS = frozenset(range(0xD0, 0xD8)) | {0x01}  # JPEG markers without a length


@dataclass(frozen=True)
class ImageHeader:
    """What the header of an image file says."""

    path: str
    format: str  # from the first bytes (SUPPORTED_FORMATS), not from the extension
    width: int
    height: int

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


class ImageFileError(DataError):
    """An image file the gate refuses; `.problem` is the Problem naming the file."""

    def __init__(self, problem: Problem):
        super().__init__(str(problem))
        self.problem = problem


def _refuse(kind: str, path: str, message: str) -> ImageFileError:
    return ImageFileError(Problem(kind, path, message))


def sniff_format(head: bytes) -> str | None:
    """The image format of a file from its first bytes (None: not an image we read)."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head.startswith(b"BM") and len(head) >= 26:
        return "BMP"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    return None


def _available(data: bytes, handle: BinaryIO, end: int) -> bytes:
    """`data` (the file's first bytes) extended from `handle` to hold at least `end` bytes where
    the file has them."""
    while end > len(data):
        handle.seek(len(data))
        more = handle.read(max(HEAD_BYTES, end - len(data)))
        if not more:
            break
        data += more
    return data


def _jpeg_size(head: bytes, handle: BinaryIO) -> tuple[int, int] | None:
    """(width, height) from the first JPEG frame header (SOFn)."""
    frame = _jpeg_frame(head, handle)
    return None if frame is None else frame[:2]


def _jpeg_frame(head: bytes, handle: BinaryIO) -> tuple[int, int, int] | None:
    """(width, height, colour components) from the first JPEG frame header (SOFn), walking the
    marker segments of `head` (the file's first bytes), reading further from `handle` only when
    they run past it."""
    data, position = head, 2
    while True:
        data = _available(data, handle, position + 9)  # a marker, its length, a frame header
        if position + 9 > len(data) or data[position] != 0xFF:
            return None  # the file ends, or segments do not follow each other
        code = data[position + 1]
        if code == 0xFF:  # fill byte
            position += 1
            continue
        if code in _STANDALONE_MARKERS:
            position += 2
            continue
        if code in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            return None
        (length,) = struct.unpack_from(">H", data, position + 2)
        if length < 2:
            return None
        if code in _SOF_MARKERS:
            height, width, components = struct.unpack_from(">HHB", data, position + 5)
            return width, height, components
        position += 2 + length


def _gif_size(head: bytes, handle: BinaryIO) -> tuple[int, int] | None:
    """The logical screen of a GIF grown to hold its first frame (decoders draw the frame where
    its descriptor puts it, so a tiny screen may hide a huge frame)."""
    data = _available(head, handle, 13)
    if len(data) < 13:
        return None
    width, height = struct.unpack_from("<HH", data, 6)
    position = 13 + (3 * 2 ** ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    while True:
        data = _available(data, handle, position + 10)
        if position >= len(data):
            return None
        block = data[position]
        if block == 0x2C and position + 9 < len(data):  # image descriptor
            left, top, frame_width, frame_height = struct.unpack_from("<HHHH", data, position + 1)
            return max(width, left + frame_width), max(height, top + frame_height)
        if block != 0x21 or position + 2 >= len(data):  # only extensions may come first
            return None
        position += 2
        while True:  # the extension's sub-blocks, ended by an empty one
            data = _available(data, handle, position + 1)
            if position >= len(data):
                return None
            size = data[position]
            position += 1 + size
            if size == 0:
                break


def _riff_webp_size(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8 " and len(head) >= 30:
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(head) >= 25:
        b0, b1, b2, b3 = head[21:25]
        return 1 + (b0 | (b1 & 0x3F) << 8), 1 + ((b1 >> 6) | b2 << 2 | (b3 & 0x0F) << 10)
    if chunk == b"VP8X" and len(head) >= 30:
        return (1 + int.from_bytes(head[24:27], "little"),
                1 + int.from_bytes(head[27:30], "little"))
    return None


def declared_size(head: bytes, image_format: str, handle: BinaryIO) -> tuple[int, int] | None:
    """(width, height) as the header declares it, read without decoding (None: no header)."""
    if image_format == "PNG":
        if head[12:16] != b"IHDR" or len(head) < 24:
            return None
        return struct.unpack(">II", head[16:24])
    if image_format == "GIF":
        return _gif_size(head, handle)
    if image_format == "BMP":
        (dib,) = struct.unpack("<I", head[14:18])
        if dib == 12:
            return struct.unpack("<HH", head[18:22])
        width, height = struct.unpack("<ii", head[18:26])
        return abs(width), abs(height)
    if image_format == "WEBP":
        return _riff_webp_size(head)
    if image_format == "JPEG":
        return _jpeg_size(head, handle)
    return None


def _looks_complete(handle: BinaryIO, image_format: str, head: bytes, file_size: int) -> bool:
    """Whether the file ends the way a whole file of its format ends (cheap: reads the tail)."""
    handle.seek(max(0, file_size - TAIL_BYTES))
    tail = handle.read()
    if image_format == "JPEG":
        return b"\xff\xd9" in tail  # EOI; a few padding bytes after it are common
    if image_format == "PNG":
        return b"IEND" in tail
    if image_format == "GIF":
        return tail.rstrip(b"\x00").endswith(b"\x3b")
    if image_format == "BMP":
        (declared,) = struct.unpack("<I", head[2:6])
        return declared <= file_size
    if image_format == "WEBP":
        (riff,) = struct.unpack("<I", head[4:8])
        return riff + 8 <= file_size
    return True


def _open(path: str, size: tuple[int, int] | None) -> Image.Image:
    """Pillow's image of a file the gate accepted; it must see the size the header declared
    (the pixel cap relies on it): ValueError otherwise."""
    image = Image.open(path)
    if size is not None and image.size != tuple(size):
        image.close()
        raise ValueError(f"its header declares {size[0]} x {size[1]} pixels but it decodes as "
                         f"{image.size[0]} x {image.size[1]}")
    return image


def _full_decode(path: str, size: tuple[int, int] | None = None) -> None:
    """Decode the whole image (JPEGs at reduced DCT scale: every byte is still parsed)."""
    with _open(path, size) as image:
        if image.format in ("JPEG", "MPO"):
            image.draft("RGB", (max(1, image.size[0] // 8), max(1, image.size[1] // 8)))
        image.load()


def probe(path: str | os.PathLike) -> ImageHeader:
    """The header of an image file, read without decoding its pixels; raises ImageFileError
    (a DataError whose `.problem` names the file) when the gate refuses the file."""
    path = str(path)
    name = os.path.basename(path)
    try:
        file_size = os.path.getsize(path)
        if file_size == 0:
            raise _refuse("empty_image", path, f"empty file (0 bytes); {FIX}")
        with open(path, "rb") as handle:
            head = handle.read(HEAD_BYTES)
            image_format = sniff_format(head)
            if image_format is None:
                raise _refuse("unreadable_image", path,
                              f"{name} is not a readable image (its first bytes are not those "
                              f"of a {', '.join(SUPPORTED_FORMATS)} file, whatever its "
                              f"extension); {FIX}")
            if image_format not in SUPPORTED_FORMATS:
                raise _refuse("unsupported_image", path,
                              f"{name} is a {image_format} image; convert it to PNG or JPEG "
                              f"(supported: {', '.join(SUPPORTED_FORMATS)})")
            size = declared_size(head, image_format, handle)
            if size is None or min(size) <= 0:
                raise _refuse("corrupt_image", path,
                              f"{name} is truncated or corrupt (no valid {image_format} "
                              f"header); {FIX}")
            width, height = size
            if width * height > MAX_PIXELS:
                raise _refuse("too_large", path,
                              f"{name} declares {width} x {height} pixels, over the limit of "
                              f"{MAX_PIXELS:,} (utils.data.images.MAX_PIXELS); not decoded. "
                              "Resize it or remove its row")
            complete = _looks_complete(handle, image_format, head, file_size)
        if not complete:
            _full_decode(path, size)  # trailing bytes after the end marker, or truncated?
    except ImageFileError:
        raise
    except FileNotFoundError:
        raise _refuse("missing_image", path, f"{name} does not exist; {FIX}") from None
    except IsADirectoryError:
        raise _refuse("unreadable_image", path, f"{name} is a folder, not an image") from None
    except Image.DecompressionBombError as error:  # Pillow's own limit, if set lower
        raise _refuse("too_large", path, f"{name} is over the pixel limit ({error}); resize it "
                      "or remove its row") from None
    except UnidentifiedImageError:
        raise _refuse("unreadable_image", path,
                      f"{name} is not a readable image; {FIX}") from None
    except (OSError, SyntaxError, ValueError, struct.error, EOFError) as error:
        raise _refuse("corrupt_image", path,
                      f"{name} is truncated or corrupt ({error}); {FIX}") from None
    return ImageHeader(path, image_format, int(width), int(height))


def check_file(path: str | os.PathLike) -> tuple[ImageHeader | None, Problem | None]:
    """probe() as a pair: (header, None) for a file the gate accepts, else (None, problem)."""
    try:
        return probe(path), None
    except ImageFileError as error:
        return None, error.problem


def _parallel(function, paths: Sequence[str | os.PathLike], workers: int | None,
              progress: bool, desc: str) -> list:
    from tqdm.auto import tqdm

    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        iterator = pool.map(function, [str(p) for p in paths], chunksize=64)
        return list(tqdm(iterator, total=len(paths), desc=desc, unit="img",
                         disable=not progress or len(paths) < 1000, mininterval=1.0))


def screen(paths: Sequence[str | os.PathLike], workers: int | None = None,
           progress: bool = True) -> tuple[list[ImageHeader | None], list[Problem]]:
    """The gate over many files (threads): headers (None where refused) in input order, and
    one Problem per refused file."""
    results = _parallel(check_file, paths, workers, progress, "checking image headers")
    return [header for header, _ in results], [p for _, p in results if p is not None]


def require_images(paths: Sequence[str | os.PathLike], what: str, hint: str = "",
                   workers: int | None = None) -> None:
    """Raise one DataError listing every file of `paths` the gate refuses (nothing if none)."""
    _, problems = screen(paths, workers)
    validation.raise_problems(problems, what, hint)


def to_rgb(image: Image.Image) -> np.ndarray:
    """A Pillow image as uint8 HxWx3 RGB: 16-bit and 32-bit grey scaled down to 8 bits (not
    clipped), alpha dropped, palette / grey / CMYK converted."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(image, dtype=np.int64)
        values = values >> 8 if values.max(initial=0) > 255 else values
        grey = np.clip(values, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if image.mode == "F":
        grey = np.clip(np.asarray(image), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file (through the gate) to uint8 HxWx3 RGB; raises ImageFileError (a
    DataError) naming the file when it is refused or cannot be decoded."""
    header = probe(path)
    name = os.path.basename(str(path))
    try:
        with _open(str(path), header.size) as image:
            image.load()
            return to_rgb(image)
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise _refuse("corrupt_image", str(path),
                      f"{name} is truncated or corrupt ({error}); {FIX}") from None


def read_rgb_fast(path: str | os.PathLike) -> np.ndarray:
    """read_rgb for a file the gate has already accepted, decoding 3-component JPEGs with
    OpenCV: the same libjpeg-turbo pixels as Pillow's (tests/test_images.py), EXIF orientation
    ignored like Pillow, and the GIL released while decoding, so threads scale (the balancer).
    Anything else (PNG, grey or CMYK JPEG, a size that differs from the header) goes through
    read_rgb, which raises the gate's DataError for a bad file."""
    import cv2

    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError:
        return read_rgb(path)
    if sniff_format(data[:HEAD_BYTES]) == "JPEG":
        frame = _jpeg_frame(data, io.BytesIO())
        if frame is not None and frame[2] == 3:
            bgr = cv2.imdecode(np.frombuffer(data, np.uint8),
                               cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
            if bgr is not None and bgr.shape[:2] == (frame[1], frame[0]):
                return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return read_rgb(path)


def inspect_image(path: str | os.PathLike) -> tuple[tuple[int, int] | None, Problem | None]:
    """(width, height) after the gate and a full decode, or the Problem (what `check` runs)."""
    header, problem = check_file(path)
    if problem is not None:
        return None, problem
    try:
        _full_decode(str(path), header.size)
    except FileNotFoundError:
        return None, Problem("missing_image", str(path), "file disappeared during the check")
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        name = os.path.basename(str(path))
        return None, Problem("corrupt_image", str(path),
                             f"{name} is truncated or corrupt ({error}); {FIX}")
    return header.size, None


def inspect_images(
    paths: Sequence[str | os.PathLike], workers: int | None = None, progress: bool = True
) -> tuple[list[tuple[int, int] | None], list[Problem]]:
    """inspect_image over many files (threads): sizes (None where bad) in order, problems."""
    results = _parallel(inspect_image, paths, workers, progress, "decoding images")
    return [size for size, _ in results], [p for _, p in results if p is not None]

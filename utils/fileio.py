"""Atomic file writes and small file helpers shared by every module that writes outputs.

A file is first written next to its destination under a temporary name, flushed, then renamed
over the destination, so a killed process never leaves a half-written output behind.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pandas as pd


@contextmanager
def atomic_path(destination: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `destination`; rename it over `destination` on success."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{destination.name}.", suffix=".part", dir=destination.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp creates 0600; give normal permissions
        os.replace(tmp_path, destination)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def replace_with_bytes(destination: str | os.PathLike, data: bytes | memoryview) -> None:
    """Write `data` to `.<name>.part` beside `destination`, then rename it over `destination`:
    atomic like atomic_path, without its per-call mkdir, mkstemp and chmod, for loops writing
    thousands of small files. The caller has made the folder and is the only writer of
    `destination`; a killed run leaves a `.part` file for it to delete."""
    folder, name = os.path.split(os.fspath(destination))
    part = os.path.join(folder, f".{name}.part")
    with open(part, "wb") as handle:
        handle.write(data)
    os.replace(part, destination)


def _umask() -> int:
    """The process umask (read without changing it for longer than the call)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(destination: str | os.PathLike, data: bytes) -> Path:
    """Write bytes atomically."""
    with atomic_path(destination) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    return Path(destination)


def write_text(destination: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text atomically."""
    return write_bytes(destination, text.encode("utf-8"))


def write_json(destination: str | os.PathLike, obj: Any) -> Path:
    """Write JSON (indented, sorted keys, trailing newline) atomically."""
    return write_text(destination, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_csv(destination: str | os.PathLike, frame: pd.DataFrame) -> Path:
    """Write a DataFrame as CSV (no index) atomically."""
    return write_text(destination, frame.to_csv(index=False, lineterminator="\n"))


def md5sum(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """MD5 hex digest of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tree_digest(folder: str | os.PathLike) -> dict[str, str]:
    """{relative path: md5} of every file under `folder` (to prove a folder was not modified)."""
    folder = Path(folder)
    return {
        str(path.relative_to(folder)): md5sum(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def replace_block(path: str | os.PathLike, name: str, text: str) -> Path:
    """Replace what stands between the markers `<!-- name:start -->` and `<!-- name:end -->`
    of a text file (e.g. a generated section of the README) with `text`, atomically."""
    path = Path(path)
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    content = path.read_text(encoding="utf-8")
    if start not in content or end not in content:
        from utils.errors import DataError

        raise DataError(f"{path} has no {start} ... {end} block; add the two markers where the "
                        "generated text should go")
    head, rest = content.split(start, 1)
    _, tail = rest.split(end, 1)
    return write_text(path, f"{head}{start}\n{text.strip()}\n{end}{tail}")

"""Generic download machinery: resumable HTTP, checksums, safe zip extraction, receipts.

`fetch(remote, dest)` streams one `RemoteFile` into `<name>.part` beside its destination (resumed
with an HTTP Range request after an interruption), verifies it (the published checksum, and the
size where known), then renames it into place. `extract_zip` extracts an archive only after every
member has been checked to land inside the target folder. `install` does both and records what
was verified in `<dest>/.download/receipts.json`; `is_complete` reads that record, so a second
run makes no request at all. Nothing here knows a dataset: `utils.data.download` holds the plans.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import stat
import sys
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

from tqdm import tqdm

from utils import fileio, paths
from utils.errors import DataError, UserError

STATE_DIR = ".download"  # inside the destination: receipts (and the plans' caches)
CHUNK_BYTES = 1 << 20
USER_AGENT = "skin-lesion-utils/0.1 (python urllib)"


class DownloadError(UserError, RuntimeError):
    """A download failed; the message names the URL and what to do."""


class OfflineError(DownloadError):
    """The server could not be reached (no network, DNS failure, refused connection)."""

    def __init__(self, url: str, reason: object, advice: str = "") -> None:
        super().__init__(f"could not reach {url} ({reason})" + (f". {advice}" if advice else ""))
        self.url = url
        self.reason = reason


class ChecksumError(DownloadError):
    """A downloaded file does not match its published checksum or size."""


class DiskSpaceError(DownloadError):
    """Not enough free disk space for the download and its extraction."""


class _Interrupted(Exception):
    """A transfer stopped early; the `.part` file is kept and can be resumed."""


@dataclass(frozen=True)
class RemoteFile:
    """One file to download."""

    name: str  # file name written into the destination folder
    url: str
    checksum: tuple[str, str] | None = None  # (hashlib algorithm, hex digest), where published
    size: int | None = None  # expected bytes, where known
    extract_to: str | None = None  # zip archives: folder (relative to dest) to extract into


# ----------------------------------------------------------------------------- HTTP


def _request(url: str, method: str = "GET", offset: int = 0) -> urllib.request.Request:
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.Request(url, headers=headers, method=method)


def _open(request: urllib.request.Request, timeout: float) -> http.client.HTTPResponse:
    """urlopen that turns connection failures into OfflineError and 5xx into _Interrupted."""
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code >= 500:
            raise _Interrupted(f"HTTP {error.code} {error.reason}") from None
        raise
    except urllib.error.URLError as error:
        raise OfflineError(request.full_url, error.reason) from None
    except (ConnectionError, TimeoutError) as error:
        raise OfflineError(request.full_url, error) from None


def fetch_json(url: str, timeout: float = 60.0) -> dict[str, Any]:
    """GET a JSON document."""
    try:
        with _open(_request(url), timeout) as response:
            document = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as error:
        raise DownloadError(f"{url} answered HTTP {error.code} {error.reason}") from None
    except _Interrupted as error:
        raise DownloadError(f"{url} failed: {error}; try again later") from None
    except ValueError as error:
        raise DownloadError(f"{url} did not return JSON ({error})") from None
    if document.get("status", "OK") != "OK":
        raise DownloadError(f"{url} answered status {document.get('status')}: {document}")
    return document


def remote_size(url: str, timeout: float = 60.0) -> int | None:
    """Content-Length from a HEAD request; None where the server does not say."""
    try:
        with _open(_request(url, method="HEAD"), timeout) as response:
            length = response.headers.get("Content-Length")
    except (urllib.error.HTTPError, _Interrupted):
        return None
    return int(length) if length and length.isdigit() else None


# ----------------------------------------------------------------------------- one file


def fetch(
    remote: RemoteFile,
    dest: Path,
    *,
    retries: int = 3,
    retry_wait: float = 2.0,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download `remote` into `dest` (resuming `<name>.part`), verify it, rename it into place."""
    final = dest / remote.name
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        try:
            verify(final, remote)
            return final
        except ChecksumError as error:
            print(f"warning: {error}; downloading it again", file=sys.stderr)
    part = dest / f"{remote.name}.part"
    for attempt in range(retries + 1):
        try:
            _transfer(remote, part, timeout, progress)
            break
        except (_Interrupted, OfflineError) as error:
            if attempt == retries:
                if isinstance(error, OfflineError):
                    raise
                raise DownloadError(
                    f"downloading {remote.url} failed after {retries + 1} attempts ({error}); "
                    f"the partial file {paths.display(part)} is kept: rerun to resume"
                ) from None
            time.sleep(retry_wait * (attempt + 1))
    try:
        verify(part, remote)
    except ChecksumError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, final)
    return final


def _transfer(remote: RemoteFile, part: Path, timeout: float, progress: bool) -> None:
    """One attempt: append to `part` from its current size (Range), or restart from zero."""
    offset = part.stat().st_size if part.exists() else 0
    if remote.size is not None and offset > remote.size:
        part.unlink()
        offset = 0
    if remote.size is not None and offset == remote.size:
        return  # a previous run received everything; verification decides
    try:
        response = _open(_request(remote.url, offset=offset), timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # nothing left to send: verification decides
            return
        raise DownloadError(f"{remote.url} answered HTTP {error.code} {error.reason}") from None
    with response:
        offset, total = _resume_point(response, offset, part)
        _stream(response, part, offset, total, remote.name, progress)


def _resume_point(
    response: http.client.HTTPResponse, offset: int, part: Path
) -> tuple[int, int | None]:
    """Where the body starts and the full size; a server that ignored Range restarts cleanly."""
    length = response.headers.get("Content-Length")
    length = int(length) if length and length.isdigit() else None
    if offset and response.status == 206:
        match = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", ""))
        if match is None or int(match.group(1)) != offset:
            part.unlink(missing_ok=True)
            raise _Interrupted(f"bad Content-Range {response.headers.get('Content-Range')!r}")
        total = match.group(3)
        return offset, int(total) if total != "*" else (offset + length if length else None)
    if offset:
        part.unlink(missing_ok=True)  # HTTP 200: the server ignored Range, start over
    return 0, length


def _stream(
    response: http.client.HTTPResponse, part: Path, offset: int, total: int | None, label: str,
    progress: bool,
) -> None:
    received = offset
    with open(part, "ab" if offset else "wb") as handle, tqdm(
        total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
        desc=label, disable=not progress, leave=False,
    ) as bar:
        try:
            for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                handle.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        except (http.client.HTTPException, OSError) as error:
            raise _Interrupted(f"{type(error).__name__} after {received} bytes") from None
    if total is not None and received < total:
        raise _Interrupted(f"connection closed after {received} of {total} bytes")


def verify(path: Path, remote: RemoteFile) -> str:
    """Check size and checksum; returns what was verified ("md5", "size" or "none")."""
    size = path.stat().st_size
    if remote.size is not None and size != remote.size:
        raise ChecksumError(
            f"{remote.name} from {remote.url} has {size} bytes, expected {remote.size}; "
            "the download was incomplete or the upstream file changed"
        )
    if remote.checksum is None:
        return "size" if remote.size is not None else "none"
    algorithm, expected = remote.checksum
    actual = _digest(path, algorithm)
    if actual != expected:
        raise ChecksumError(
            f"{algorithm} mismatch for {remote.name} downloaded from {remote.url}: expected "
            f"{expected}, got {actual}. The corrupt download was deleted; rerun to download it "
            "again. If it fails again, the upstream file changed: download it by hand (see "
            "data/README.md) and report it."
        )
    return algorithm


def _digest(path: Path, algorithm: str) -> str:
    if algorithm == "md5":
        return fileio.md5sum(path)
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- extraction


def _member_path(
    info: zipfile.ZipInfo, archive: Path, strip: str | None
) -> PurePosixPath | None:
    """Relative path of a member inside the target; DataError for anything that could escape."""
    name = info.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    mode = info.external_attr >> 16
    problem = None
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        problem = "an absolute path"
    elif ".." in parts:
        problem = "a '..' component"
    elif stat.S_ISLNK(mode):
        problem = "a symbolic link"
    if problem:
        raise DataError(
            f"{archive}: member {info.filename!r} is {problem} and could write outside the "
            "target folder; nothing was extracted. Delete the archive and download it again."
        )
    if parts and parts[0] == "__MACOSX":
        return None
    if strip and parts[0] == strip:
        parts = parts[1:]
    return PurePosixPath(*parts) if parts else None


def _single_root(names: Iterable[str]) -> str | None:
    """The one top-level folder every member lives in, if there is one."""
    kept = [n.replace("\\", "/") for n in names if not n.startswith("__MACOSX")]
    roots = {PurePosixPath(n).parts[0] for n in kept if PurePosixPath(n).parts}
    inside = all(len(PurePosixPath(n).parts) > 1 or n.endswith("/") for n in kept)
    return roots.pop() if len(roots) == 1 and inside else None


def extract_zip(archive: Path, target: Path, progress: bool = True) -> int:
    """Extract `archive` into `target` (a single top folder is dropped); returns the file count.

    Every member is checked before anything is written; existing files of the right size are
    kept, so an interrupted extraction resumes.
    """
    try:
        with zipfile.ZipFile(archive) as handle:
            infos = handle.infolist()
            strip = _single_root([info.filename for info in infos])
            planned = [(info, _member_path(info, archive, strip)) for info in infos]
            root = target.resolve()
            for info, relative in planned:
                if relative is not None and not (root / relative).resolve().is_relative_to(root):
                    raise DataError(
                        f"{archive}: member {info.filename!r} resolves outside {target}"
                    )
            files = [(info, rel) for info, rel in planned if rel is not None and not info.is_dir()]
            missing = [
                (info, rel) for info, rel in files if not _same_size(target / rel, info.file_size)
            ]
            check_disk_space(target, sum(info.file_size for info, _ in missing), "extraction")
            for info, relative in tqdm(missing, desc=f"extract {archive.name}", unit="file",
                                       disable=not progress, leave=False):
                _extract_member(handle, info, target / relative)
    except zipfile.BadZipFile as error:
        raise DataError(
            f"{archive} is not a valid zip archive ({error}); delete it and rerun the download"
        ) from None
    return len(files)


def _same_size(path: Path, size: int) -> bool:
    return path.is_file() and path.stat().st_size == size


def _extract_member(handle: zipfile.ZipFile, info: zipfile.ZipInfo, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = destination.with_name(f".{destination.name}.part")
    with handle.open(info) as source, open(tmp, "wb") as out:
        shutil.copyfileobj(source, out, CHUNK_BYTES)
    os.replace(tmp, destination)


# ----------------------------------------------------------------------------- disk, receipts


def human_size(n_bytes: float) -> str:
    """1536 -> '1.5 KB'."""
    if n_bytes < 1024:
        return f"{int(n_bytes)} B"
    for unit in ("KB", "MB", "GB"):
        n_bytes /= 1024
        if n_bytes < 1024 or unit == "GB":
            break
    return f"{n_bytes:.1f} {unit}"


def check_disk_space(folder: Path, need: int, what: str = "download") -> None:
    """DiskSpaceError when the file system holding `folder` has less than `need` bytes free."""
    existing = folder
    while not existing.exists():
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if need > free:
        raise DiskSpaceError(
            f"not enough free disk space in {existing} for the {what}: need {human_size(need)}, "
            f"free {human_size(free)}. Free up space or choose another destination folder."
        )


def _receipts_path(dest: Path) -> Path:
    return dest / STATE_DIR / "receipts.json"


def load_receipts(dest: Path) -> dict[str, dict]:
    path = _receipts_path(dest)
    return json.loads(path.read_text()) if path.exists() else {}


def _receipt(remote: RemoteFile, path: Path, verified: str) -> dict[str, Any]:
    info = path.stat()
    return {
        "url": remote.url, "checksum": list(remote.checksum) if remote.checksum else None,
        "size": info.st_size, "mtime_ns": info.st_mtime_ns, "verified": verified,
    }


def is_complete(remote: RemoteFile, dest: Path, receipts: dict[str, dict]) -> bool:
    """True when a receipt shows `remote` downloaded, verified and (if a zip) extracted."""
    entry = receipts.get(remote.name)
    if entry is None:
        return False
    if remote.checksum and entry.get("checksum") != list(remote.checksum):
        return False
    if remote.size is not None and entry.get("size") != remote.size:
        return False
    path = dest / remote.name
    present = entry.get("archive_deleted") or (
        path.is_file() and path.stat().st_size == entry["size"]
        and path.stat().st_mtime_ns == entry["mtime_ns"]
    )
    if not present:
        return False
    if remote.extract_to is None:
        return True
    folder = dest / remote.extract_to
    return (
        entry.get("extracted_to") == remote.extract_to and folder.is_dir()
        and sum(1 for p in folder.rglob("*") if p.is_file()) >= entry.get("members", 0)
    )


# ----------------------------------------------------------------------------- install


def bytes_needed(pending: list[RemoteFile], dest: Path) -> int:
    """Bytes still to download plus (approximately) the extracted size of the archives."""
    need = 0
    for remote in pending:
        if remote.size is None:
            continue
        part = dest / f"{remote.name}.part"
        final = dest / remote.name
        if not final.exists():
            need += max(remote.size - (part.stat().st_size if part.exists() else 0), 0)
        if remote.extract_to:  # images compress little: the archive size estimates its content
            need += remote.size
    return need


def install(
    remote: RemoteFile, dest: Path, receipts: dict[str, dict], delete_archives: bool, **options: Any
) -> None:
    """Fetch, verify, extract one file and record its receipt."""
    dest.mkdir(parents=True, exist_ok=True)
    path = fetch(remote, dest, **options)
    entry = _receipt(remote, path, _verified_kind(remote))
    if remote.extract_to:
        entry["members"] = extract_zip(path, dest / remote.extract_to, options["progress"])
        entry["extracted_to"] = remote.extract_to
        if delete_archives:
            path.unlink()
            entry["archive_deleted"] = True
    receipts[remote.name] = entry
    fileio.write_json(_receipts_path(dest), receipts)
    print(f"  {remote.name}: verified ({entry['verified']})")


def _verified_kind(remote: RemoteFile) -> str:
    if remote.checksum:
        return remote.checksum[0]
    return "size" if remote.size is not None else "none"

"""Download the public datasets: resumable, verified, extracted safely into the official layout.

`python -m utils download <dataset> [dest]` for ham10000 (Harvard Dataverse), isic2018_test and
isic2019 (ISIC challenge bucket) and dermamnist (Zenodo). Each file is streamed into `<name>.part`
beside its destination (resumed with an HTTP Range request after an interruption), verified
(the MD5 published by Dataverse or MedMNIST; the ISIC bucket publishes none, so there the size
announced by the server is checked), then renamed into place. Zip archives are extracted only
after every member has been checked to land inside the target folder. What was verified is
recorded in `<dest>/.download/receipts.json`, so a second run makes no request at all.
"""
from __future__ import annotations

import argparse
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
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any, Iterable
from urllib.parse import urlsplit

from tqdm import tqdm

from utils import fileio, paths
from utils.datasets import (
    DATAVERSE_SERVER, DERMAMNIST, HAM10000, HAM10000_DOI, ISIC2018_TASK3, ISIC2019, DatasetInfo,
)
from utils.errors import DataError

DATAVERSE_ENV_VAR = "SKIN_DATAVERSE_SERVER"  # overrides the Dataverse server (mirrors, tests)
STATE_DIR = ".download"  # inside the destination: receipts and the cached Dataverse file list
CHUNK_BYTES = 1 << 20
USER_AGENT = "skin-lesion-utils/0.1 (python urllib)"
DERMAMNIST_SIZES = (28, 64, 128, 224)

# dataset key -> (facts, default folder under data/raw)
DOWNLOADS: dict[str, tuple[DatasetInfo, str]] = {
    "ham10000": (HAM10000, "HAM10000"),
    "isic2018_test": (ISIC2018_TASK3, "ISIC2018_Task3_Test"),
    "isic2019": (ISIC2019, "ISIC_2019"),
    "dermamnist": (DERMAMNIST, "DermaMNIST"),
}
ALIASES = {"isic2018": "isic2018_test", "isic2018_task3_test": "isic2018_test", "ham": "ham10000"}


def dataset_name(name: str) -> str:
    """A DOWNLOADS key from a name or alias ('isic2018' -> 'isic2018_test')."""
    key = name.lower().replace("-", "_")
    return ALIASES.get(key, key)


class DownloadError(RuntimeError):
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


# ----------------------------------------------------------------------------- plans


def dermamnist_files(size: int = 28, mirror: str | None = None) -> list[RemoteFile]:
    """The DermaMNIST .npz for one image size, with the MD5 MedMNIST publishes."""
    if size not in DERMAMNIST_SIZES:
        raise ValueError(f"DermaMNIST size must be one of {DERMAMNIST_SIZES}, got {size}")
    name = "dermamnist.npz" if size == 28 else f"dermamnist_{size}.npz"
    url = _mirrored(DERMAMNIST.urls[name], mirror)
    return [RemoteFile(name, url, ("md5", DERMAMNIST.md5[name]))]


def challenge_files(info: DatasetInfo, mirror: str | None = None) -> list[RemoteFile]:
    """ISIC challenge bucket files (no published checksums): zips extract to their own name."""
    files = []
    for name, url in info.urls.items():
        checksum = ("md5", info.md5[name]) if name in info.md5 else None
        extract_to = name.removesuffix(".zip") if name.endswith(".zip") else None
        files.append(RemoteFile(name, _mirrored(url, mirror), checksum, extract_to=extract_to))
    return files


def _mirrored(url: str, mirror: str | None) -> str:
    """`url` served from `mirror` (same path and query) instead of the official host."""
    if not mirror:
        return url
    parts = urlsplit(url)
    return mirror.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")


def dataverse_server(server: str | None = None) -> str:
    """The Dataverse server: the argument, else $SKIN_DATAVERSE_SERVER, else Harvard's."""
    return (server or os.environ.get(DATAVERSE_ENV_VAR) or DATAVERSE_SERVER).rstrip("/")


def dataverse_listing_url(server: str) -> str:
    return HAM10000.urls["dataset_json"].replace(DATAVERSE_SERVER, server, 1)


# (canonical local name, extract folder, required) of the HAM10000 files we want.
_HAM_BASE = (
    ("HAM10000_images_part_1.zip", "HAM10000_images_part_1", True),
    ("HAM10000_images_part_2.zip", "HAM10000_images_part_2", True),
    ("HAM10000_metadata.csv", None, True),
)
# The official test set goes into its own ISIC 2018 layout under dest, so that dest itself
# holds one dataset layout only (readers auto-detect it).
HAM_TEST_FOLDER = "ISIC2018_Task3_Test"
_HAM_TEST = (
    ("ISIC2018_Task3_Test_Images.zip", f"{HAM_TEST_FOLDER}/ISIC2018_Task3_Test_Input", False),
    (f"{HAM_TEST_FOLDER}/ISIC2018_Task3_Test_GroundTruth.csv", None, False),
)
_HAM_MASKS = (
    ("HAM10000_segmentations_lesion_tschandl.zip", "HAM10000_segmentations_lesion_tschandl", True),
)
_ORIGINAL_SUFFIX = {"text/csv": ".csv", "text/tab-separated-values": ".tsv"}


def _norm(name: str) -> str:
    """Name without extension, case or punctuation: 'HAM10000_images_part1.zip' ~ '..._part_1'."""
    return re.sub(r"[^a-z0-9]", "", PurePosixPath(name).stem.lower())


def ham10000_files(
    listing: dict[str, Any], server: str, test_set: bool = True, masks: bool = False
) -> list[RemoteFile]:
    """Resolve the wanted HAM10000 files from a Dataverse dataset JSON (native API)."""
    try:
        entries = [item["dataFile"] for item in listing["data"]["latestVersion"]["files"]]
    except (KeyError, TypeError) as error:
        raise DownloadError(
            f"unexpected Dataverse answer for {HAM10000_DOI} (missing {error}); expected "
            "data.latestVersion.files[].dataFile"
        ) from None
    by_name = {_norm(entry["filename"]): entry for entry in entries}
    wanted = _HAM_BASE + (_HAM_TEST if test_set else ()) + (_HAM_MASKS if masks else ())
    template = HAM10000.urls["datafile"].replace(DATAVERSE_SERVER, server, 1)
    files = []
    for name, extract_to, required in wanted:
        entry = by_name.get(_norm(name))
        if entry is None:
            if required:
                listed = ", ".join(sorted(e["filename"] for e in entries))
                raise DownloadError(f"{HAM10000_DOI} does not list {name}; it lists: {listed}")
            print(f"note: {HAM10000_DOI} does not list {name}; skipped", file=sys.stderr)
            continue
        files.append(_dataverse_file(entry, name, extract_to, template))
    return files


def _dataverse_file(entry: dict, name: str, extract_to: str | None, template: str) -> RemoteFile:
    """One dataFile entry; ingested tables are fetched in their original format (CSV)."""
    url = template.format(file_id=entry["id"])
    size = entry.get("filesize")
    original_format = entry.get("originalFileFormat")
    if original_format:  # Dataverse ingested it as .tab; the checksum is of the original upload
        url += "?format=original"
        size = entry.get("originalFileSize")
        suffix = _ORIGINAL_SUFFIX.get(original_format, PurePosixPath(entry["filename"]).suffix)
        name = str(PurePosixPath(name).with_suffix(suffix))
    checksum = entry.get("checksum")
    if checksum is None and "md5" in entry:
        checksum = {"type": "MD5", "value": entry["md5"]}
    return RemoteFile(
        name=name,
        url=url,
        checksum=(
            (checksum["type"].lower().replace("-", ""), checksum["value"].lower())
            if checksum else None
        ),
        size=int(size) if size is not None else None,
        extract_to=extract_to,
    )


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


def _human(n_bytes: float) -> str:
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
            f"not enough free disk space in {existing} for the {what}: need {_human(need)}, "
            f"free {_human(free)}. Free up space or choose another destination folder."
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


# ----------------------------------------------------------------------------- datasets


def manual_steps(dataset: str, dest: Path) -> str:
    """Where to download the files by hand and where to put them (see data/README.md)."""
    where = paths.display(dest)
    steps = {
        "ham10000": (
            f"open {HAM10000.homepage} and download HAM10000_images_part_1.zip, "
            "HAM10000_images_part_2.zip and HAM10000_metadata (Original File Format: CSV); "
            f"unzip the archives into {where}/HAM10000_images_part_1/ and "
            f"{where}/HAM10000_images_part_2/ (the .jpg files directly inside) and save the "
            f"metadata as {where}/HAM10000_metadata.csv. Optional, same page: unzip "
            f"ISIC2018_Task3_Test_Images.zip into {where}/{HAM_TEST_FOLDER}/"
            "ISIC2018_Task3_Test_Input/ and save ISIC2018_Task3_Test_GroundTruth (CSV) as "
            f"{where}/{HAM_TEST_FOLDER}/ISIC2018_Task3_Test_GroundTruth.csv"
        ),
        "isic2018_test": (
            f"download {' and '.join(ISIC2018_TASK3.urls.values())} (or via "
            f"{ISIC2018_TASK3.homepage}) and unzip them into {where}/ISIC2018_Task3_Test_Input/ "
            f"and {where}/ISIC2018_Task3_Test_GroundTruth/"
        ),
        "isic2019": (
            f"download {', '.join(ISIC2019.urls.values())} (or via {ISIC2019.homepage}); unzip "
            f"the images into {where}/ISIC_2019_Training_Input/ and put both CSV files in {where}/"
        ),
        "dermamnist": (
            f"download the .npz of the size you want from https://zenodo.org/records/10519652 "
            f"(e.g. dermamnist_64.npz) into {where}/"
        ),
    }[dataset]
    return (
        f"Manual steps: {steps}. Then check the folder with `python -m utils check {where}` "
        "(data/README.md describes the layout)."
    )


def resolve_files(
    dataset: str, dest: Path, *, server: str | None = None, mirror: str | None = None,
    size: int = 28, test_set: bool = True, masks: bool = False, refresh: bool = False,
    timeout: float = 60.0,
) -> list[RemoteFile]:
    """The files of a dataset; for HAM10000 from the Dataverse file list (cached in dest)."""
    if dataset == "dermamnist":
        return dermamnist_files(size, mirror)
    if dataset in ("isic2018_test", "isic2019"):
        return challenge_files(DOWNLOADS[dataset][0], mirror)
    if dataset != "ham10000":
        raise ValueError(f"unknown dataset {dataset!r}; downloadable: {', '.join(DOWNLOADS)}")
    server = dataverse_server(server)
    cache = dest / STATE_DIR / "dataverse_files.json"
    if cache.exists() and not refresh:
        listing = json.loads(cache.read_text())
    else:
        listing = fetch_json(dataverse_listing_url(server), timeout)
        fileio.write_json(cache, listing)
    return ham10000_files(listing, server, test_set=test_set, masks=masks)


def download(
    dataset: str, dest: str | os.PathLike | None = None, *, server: str | None = None,
    mirror: str | None = None, size: int = 28, test_set: bool = True, masks: bool = False,
    refresh: bool = False, delete_archives: bool = False, retries: int = 3,
    retry_wait: float = 2.0, timeout: float = 60.0, progress: bool = True,
) -> Path:
    """Download, verify and extract one dataset into `dest` (default data/raw/<folder>)."""
    dataset = dataset_name(dataset)
    if dataset not in DOWNLOADS:
        raise ValueError(f"unknown dataset {dataset!r}; downloadable: {', '.join(DOWNLOADS)}")
    dest = Path(dest).resolve() if dest else paths.raw_dir(DOWNLOADS[dataset][1])
    try:
        files = resolve_files(dataset, dest, server=server, mirror=mirror, size=size,
                              test_set=test_set, masks=masks, refresh=refresh, timeout=timeout)
        receipts = load_receipts(dest)
        pending = [f for f in files if not is_complete(f, dest, receipts)]
        if not pending:
            print(f"{dataset}: all {len(files)} files verified in {paths.display(dest)}")
            return dest
        pending = [f if f.size is not None else replace(f, size=remote_size(f.url, timeout))
                   for f in pending]
        check_disk_space(dest, _bytes_needed(pending, dest), "download and extraction")
        for remote in pending:
            _install(remote, dest, receipts, delete_archives, retries=retries,
                     retry_wait=retry_wait, timeout=timeout, progress=progress)
    except OfflineError as error:
        advice = f"Are you offline? {manual_steps(dataset, dest)}"
        raise OfflineError(error.url, error.reason, advice) from None
    except DownloadError as error:
        if isinstance(error, (OfflineError, ChecksumError, DiskSpaceError)):
            raise
        raise DownloadError(f"{error}. {manual_steps(dataset, dest)}") from None
    print(f"{dataset}: {len(files)} files verified in {paths.display(dest)}")
    return dest


def _bytes_needed(pending: list[RemoteFile], dest: Path) -> int:
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


def _install(
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


# ----------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", type=dataset_name, choices=sorted(DOWNLOADS),
                        help="dataset to download")
    parser.add_argument(
        "dest", nargs="?", default=None,
        help="destination folder (default: data/raw/<HAM10000|ISIC_2019|ISIC2018_Task3_Test|"
             "DermaMNIST>, or under $SKIN_DATA_DIR)",
    )
    parser.add_argument("--size", type=int, choices=DERMAMNIST_SIZES, default=28,
                        help="dermamnist: image size of the .npz (default 28)")
    parser.add_argument("--masks", action="store_true",
                        help="ham10000: also the lesion segmentation masks (Tschandl)")
    parser.add_argument("--no-test-set", dest="test_set", action="store_false",
                        help="ham10000: skip the ISIC 2018 Task 3 test images and ground truth")
    parser.add_argument("--server", default=None,
                        help=f"ham10000: Dataverse server (default ${DATAVERSE_ENV_VAR} or "
                             f"{DATAVERSE_SERVER})")
    parser.add_argument("--mirror", default=None,
                        help="isic*/dermamnist: base URL serving the official paths")
    parser.add_argument("--refresh", action="store_true",
                        help="ham10000: fetch the Dataverse file list again (not the cached)")
    parser.add_argument("--delete-archives", action="store_true",
                        help="delete each zip after verified extraction")
    parser.add_argument("--retries", type=int, default=3, help="resume attempts per file")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bars")


def run(args: argparse.Namespace) -> int:
    try:
        download(
            args.dataset, args.dest, server=args.server, mirror=args.mirror, size=args.size,
            test_set=args.test_set, masks=args.masks, refresh=args.refresh,
            delete_archives=args.delete_archives, retries=args.retries, progress=args.progress,
        )
    except (DownloadError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0

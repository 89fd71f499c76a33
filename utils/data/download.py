"""Download the public datasets: the plan of each (which files, from where, verified how), then
`utils.data.transport` fetches, verifies and extracts them into the official layout.

`python -m utils download <dataset> [dest]` for ham10000 (Harvard Dataverse), isic2018_test and
isic2019 (ISIC challenge bucket) and dermamnist (Zenodo). Each file is verified with the MD5
published by Dataverse or MedMNIST; the ISIC bucket publishes none, so there the size announced by
the server is checked. Zip archives extract into the folder names of `utils.data.datasets`. What
was verified is recorded in `<dest>/.download/receipts.json`, so a second run makes no request at
all. Offline, every error ends with the manual steps (where to download, where to put the files).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from utils import fileio, paths
from utils.arguments import non_negative_int
from utils.arguments import url as url_argument
from utils.data.datasets import (
    DATAVERSE_SERVER,
    DERMAMNIST,
    HAM10000,
    HAM10000_DOI,
    HAM_IMAGE_PARTS,
    HAM_MASKS_TSCHANDL,
    HAM_METADATA_CSV,
    ISIC2018_TASK3,
    ISIC2018_TASK3_TEST_GROUND_TRUTH,
    ISIC2018_TASK3_TEST_INPUT,
    ISIC2019,
    ISIC2019_INPUT,
    DatasetInfo,
)
from utils.data.transport import (
    STATE_DIR,
    ChecksumError,
    DiskSpaceError,
    DownloadError,
    OfflineError,
    RemoteFile,
    bytes_needed,
    check_disk_space,
    fetch_json,
    install,
    is_complete,
    load_receipts,
    remote_size,
)
from utils.errors import DataError

DATAVERSE_ENV_VAR = "SKIN_DATAVERSE_SERVER"  # overrides the Dataverse server (mirrors, tests)
DERMAMNIST_SIZES = (28, 64, 128, 224)
# The official test set goes into its own ISIC 2018 layout under the HAM10000 folder, so that a
# folder holds one dataset layout only (readers auto-detect it).
HAM_TEST_FOLDER = "ISIC2018_Task3_Test"

# dataset key -> (facts, default folder under data/raw)
DOWNLOADS: dict[str, tuple[DatasetInfo, str]] = {
    "ham10000": (HAM10000, "HAM10000"),
    "isic2018_test": (ISIC2018_TASK3, HAM_TEST_FOLDER),
    "isic2019": (ISIC2019, "ISIC_2019"),
    "dermamnist": (DERMAMNIST, "DermaMNIST"),
}
ALIASES = {"isic2018": "isic2018_test", "isic2018_task3_test": "isic2018_test", "ham": "ham10000"}


def dataset_name(name: str) -> str:
    """A DOWNLOADS key from a name or alias ('isic2018' -> 'isic2018_test')."""
    key = name.lower().replace("-", "_")
    return ALIASES.get(key, key)


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
    (f"{HAM_IMAGE_PARTS[0]}.zip", HAM_IMAGE_PARTS[0], True),
    (f"{HAM_IMAGE_PARTS[1]}.zip", HAM_IMAGE_PARTS[1], True),
    (HAM_METADATA_CSV, None, True),
)
_HAM_TEST_IMAGES_ZIP = "ISIC2018_Task3_Test_Images.zip"  # Dataverse's name for the test images
_HAM_TEST = (
    (_HAM_TEST_IMAGES_ZIP, f"{HAM_TEST_FOLDER}/{ISIC2018_TASK3_TEST_INPUT}", False),
    (f"{HAM_TEST_FOLDER}/{ISIC2018_TASK3_TEST_GROUND_TRUTH}", None, False),
)
_HAM_MASKS = ((f"{HAM_MASKS_TSCHANDL}.zip", HAM_MASKS_TSCHANDL, True),)

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


# ----------------------------------------------------------------------------- datasets


def manual_steps(dataset: str, dest: Path) -> str:
    """Where to download the files by hand and where to put them (see data/README.md)."""
    where = paths.display(dest)
    ham_test = f"{where}/{HAM_TEST_FOLDER}"
    steps = {
        "ham10000": (
            f"open {HAM10000.homepage} and download {HAM_IMAGE_PARTS[0]}.zip, "
            f"{HAM_IMAGE_PARTS[1]}.zip and {_stem(HAM_METADATA_CSV)} (Original File Format: CSV); "
            f"unzip the archives into {where}/{HAM_IMAGE_PARTS[0]}/ and "
            f"{where}/{HAM_IMAGE_PARTS[1]}/ (the .jpg files directly inside) and save the "
            f"metadata as {where}/{HAM_METADATA_CSV}. Optional, same page: unzip "
            f"{_HAM_TEST_IMAGES_ZIP} into {ham_test}/{ISIC2018_TASK3_TEST_INPUT}/ and save "
            f"{_stem(ISIC2018_TASK3_TEST_GROUND_TRUTH)} (CSV) as "
            f"{ham_test}/{ISIC2018_TASK3_TEST_GROUND_TRUTH}"
        ),
        "isic2018_test": (
            f"download {' and '.join(ISIC2018_TASK3.urls.values())} (or via "
            f"{ISIC2018_TASK3.homepage}) and unzip them into {where}/{ISIC2018_TASK3_TEST_INPUT}/ "
            f"and {where}/{_stem(ISIC2018_TASK3_TEST_GROUND_TRUTH)}/"
        ),
        "isic2019": (
            f"download {', '.join(ISIC2019.urls.values())} (or via {ISIC2019.homepage}); unzip "
            f"the images into {where}/{ISIC2019_INPUT}/ and put both CSV files in {where}/"
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


def _stem(name: str) -> str:
    return PurePosixPath(name).stem


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
        check_disk_space(dest, bytes_needed(pending, dest), "download and extraction")
        for remote in pending:
            install(remote, dest, receipts, delete_archives, retries=retries,
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
    parser.add_argument("--server", default=None, type=url_argument,
                        help=f"ham10000: Dataverse server (default ${DATAVERSE_ENV_VAR} or "
                             f"{DATAVERSE_SERVER})")
    parser.add_argument("--mirror", default=None, type=url_argument,
                        help="isic*/dermamnist: base URL serving the official paths")
    parser.add_argument("--refresh", action="store_true",
                        help="ham10000: fetch the Dataverse file list again (not the cached)")
    parser.add_argument("--delete-archives", action="store_true",
                        help="delete each zip after verified extraction")
    parser.add_argument("--retries", type=non_negative_int, default=3,
                        help="resume attempts per file")
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

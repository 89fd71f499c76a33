"""utils.download against a local HTTP server (127.0.0.1, ephemeral port): never the internet."""
from __future__ import annotations

import hashlib
import io
import json
import random
import re
import shutil
import socket
import stat
import threading
import zipfile
from collections import namedtuple
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from utils import cli, download, readers
from utils.datasets import DERMAMNIST, HAM10000_DOI
from utils.errors import DataError

LISTING_PATH = f"/api/datasets/:persistentId/?persistentId={HAM10000_DOI}"


class ServerState:
    """What the fake server serves and what it saw."""

    def __init__(self) -> None:
        self.routes: dict[str, bytes] = {}  # request path (with query) -> body
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.truncate_once: set[str] = set()  # paths whose next GET stops halfway
        self.ignore_range: set[str] = set()  # paths that answer 200 to a Range request

    def gets(self) -> list[str]:
        return [path for method, path, _ in self.requests if method == "GET"]


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.0 (one request per connection) with `Range: bytes=N-` support."""

    def log_message(self, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self._respond(send_body=False)

    def do_GET(self) -> None:
        self._respond(send_body=True)

    def _respond(self, send_body: bool) -> None:
        state: ServerState = self.server.state  # type: ignore[attr-defined]
        range_header = self.headers.get("Range")
        state.requests.append((self.command, self.path, range_header))
        body = state.routes.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        if range_header and self.path not in state.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", range_header).group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if not send_body:
            return
        if self.path in state.truncate_once:
            state.truncate_once.discard(self.path)
            payload = payload[: len(payload) // 2]  # then the connection closes
        self.wfile.write(payload)


@pytest.fixture
def server():
    """A bounded local server; yields (base_url, state); shut down afterwards."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.state = ServerState()  # type: ignore[attr-defined]
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}"
        yield base, httpd.state  # type: ignore[attr-defined]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as handle:
        for name, data in members.items():
            handle.writestr(name, data)
    return buffer.getvalue()


def _jpeg(seed: int) -> bytes:
    return b"\xff\xd8" + random.Random(seed).randbytes(2000) + b"\xff\xd9"


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


CSV = (
    b"lesion_id,image_id,dx,dx_type,age,sex,localization\n"
    b"HAM_0000118,ISIC_0024306,nv,histo,80.0,male,scalp\n"
)
GT_CSV = b"image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\nISIC_0034524,0.0,1.0,0.0,0.0,0.0,0.0,0.0\n"


def publish_ham(state: ServerState) -> dict[str, bytes]:
    """Serve a fake HAM10000 Dataverse dataset; returns the expected files by local path."""
    part1 = _zip({"ISIC_0024306.jpg": _jpeg(1), "ISIC_0024307.jpg": _jpeg(2)})  # flat
    part2 = _zip({"HAM10000_images_part_2/ISIC_0029306.jpg": _jpeg(3)})  # one top folder
    test_zip = _zip({"ISIC2018_Task3_Test_Images/ISIC_0034524.jpg": _jpeg(4)})
    masks = _zip({"HAM10000_segmentations_lesion_tschandl/ISIC_0024306_segmentation.png": b"png"})
    served = {1: part1, 2: part2, 4: test_zip, 6: masks, 7: b"decoy"}
    for file_id, body in served.items():
        state.routes[f"/api/access/datafile/{file_id}"] = body
    # Ingested tables: the .tab is the archival copy; ?format=original returns the upload.
    for file_id, original in ((3, CSV), (5, GT_CSV)):
        state.routes[f"/api/access/datafile/{file_id}"] = original.replace(b",", b"\t")
        state.routes[f"/api/access/datafile/{file_id}?format=original"] = original

    def tabular(file_id: int, filename: str, original: bytes) -> dict:
        return {"id": file_id, "filename": filename, "filesize": len(original) + 3,
                "originalFileFormat": "text/csv", "originalFileSize": len(original),
                "checksum": {"type": "MD5", "value": _md5(original)}}

    files = [
        {"id": 1, "filename": "HAM10000_images_part_1.zip", "filesize": len(part1),
         "md5": _md5(part1)},
        {"id": 2, "filename": "HAM10000_images_part_2.zip", "filesize": len(part2),
         "checksum": {"type": "MD5", "value": _md5(part2)}},
        tabular(3, "HAM10000_metadata.tab", CSV),
        {"id": 4, "filename": "ISIC2018_Task3_Test_Images.zip", "filesize": len(test_zip),
         "md5": _md5(test_zip)},
        tabular(5, "ISIC2018_Task3_Test_GroundTruth.tab", GT_CSV),
        {"id": 6, "filename": "HAM10000_segmentations_lesion_tschandl.zip", "filesize": len(masks),
         "md5": _md5(masks)},
        {"id": 7, "filename": "ISIC2018_Task3_Test_NatureMedicine_AI_Interaction_Benefit.tab",
         "filesize": 5, "md5": _md5(b"decoy")},
    ]
    listing = {"status": "OK", "data": {"latestVersion": {"files": [
        {"label": f["filename"], "dataFile": f} for f in files]}}}
    state.routes[LISTING_PATH] = json.dumps(listing).encode()
    return {
        "HAM10000_images_part_1/ISIC_0024306.jpg": _jpeg(1),
        "HAM10000_images_part_1/ISIC_0024307.jpg": _jpeg(2),
        "HAM10000_images_part_2/ISIC_0029306.jpg": _jpeg(3),
        "HAM10000_metadata.csv": CSV,
        "ISIC2018_Task3_Test/ISIC2018_Task3_Test_Input/ISIC_0034524.jpg": _jpeg(4),
        "ISIC2018_Task3_Test/ISIC2018_Task3_Test_GroundTruth.csv": GT_CSV,
    }


def test_ham10000_resolves_files_from_dataverse_json_and_builds_the_layout(
    server, tmp_path, capsys
):
    base, state = server
    expected = publish_ham(state)
    dest = tmp_path / "HAM10000"
    code = cli.main(["download", "ham10000", str(dest), "--server", base, "--no-progress"])
    assert code == 0, capsys.readouterr().err
    for relative, data in expected.items():
        assert (dest / relative).read_bytes() == data, relative
    assert not list(dest.rglob("*.part"))
    gets = state.gets()
    assert LISTING_PATH in gets
    # tables come in their original CSV form, never the ingested .tab; extras are not fetched
    assert "/api/access/datafile/3?format=original" in gets
    assert "/api/access/datafile/3" not in gets and "/api/access/datafile/5" not in gets
    assert "/api/access/datafile/6" not in gets and "/api/access/datafile/7" not in gets
    receipts = download.load_receipts(dest)
    assert receipts["HAM10000_metadata.csv"]["verified"] == "md5"
    assert receipts["HAM10000_images_part_1.zip"]["members"] == 2
    # one layout per folder: the readers recognise both without ambiguity
    assert readers.detect_layout(dest) == "ham10000"
    assert readers.detect_layout(dest / "ISIC2018_Task3_Test") == "isic2018_task3_test"


def test_second_run_makes_no_request_and_masks_fetch_only_the_masks(server, tmp_path):
    base, state = server
    publish_ham(state)
    dest = tmp_path / "HAM10000"
    download.download("ham10000", dest, server=base, delete_archives=True, progress=False)
    assert not list(dest.glob("*.zip")) and (dest / "HAM10000_images_part_1").is_dir()
    state.requests.clear()
    download.download("ham10000", dest, server=base, progress=False)
    assert state.requests == []
    download.download("ham10000", dest, server=base, masks=True, progress=False)
    assert state.gets() == ["/api/access/datafile/6"]
    assert (dest / "HAM10000_segmentations_lesion_tschandl/ISIC_0024306_segmentation.png").exists()


def test_truncated_transfer_resumes_with_range_on_the_next_run(server, tmp_path):
    base, state = server
    payload = random.Random(0).randbytes(300_000)
    state.routes["/files/big.bin"] = payload
    state.truncate_once.add("/files/big.bin")
    remote = download.RemoteFile(
        "big.bin", f"{base}/files/big.bin", ("md5", _md5(payload)), len(payload)
    )
    with pytest.raises(download.DownloadError, match="rerun to resume"):
        download.fetch(remote, tmp_path, retries=0, timeout=5, progress=False)
    part = tmp_path / "big.bin.part"
    assert part.stat().st_size == len(payload) // 2
    assert not (tmp_path / "big.bin").exists()
    download.fetch(remote, tmp_path, retries=0, timeout=5, progress=False)
    assert (tmp_path / "big.bin").read_bytes() == payload
    assert not part.exists()
    assert state.requests[-1] == ("GET", "/files/big.bin", f"bytes={len(payload) // 2}-")


def test_truncated_transfer_is_retried_within_one_run(server, tmp_path):
    base, state = server
    payload = random.Random(1).randbytes(100_000)
    state.routes["/files/a.bin"] = payload
    state.truncate_once.add("/files/a.bin")
    remote = download.RemoteFile("a.bin", f"{base}/files/a.bin", ("md5", _md5(payload)))
    download.fetch(remote, tmp_path, retries=2, retry_wait=0, timeout=5, progress=False)
    assert (tmp_path / "a.bin").read_bytes() == payload
    assert [r for _, _, r in state.requests] == [None, f"bytes={len(payload) // 2}-"]


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    base, state = server
    payload = random.Random(2).randbytes(50_000)
    state.routes["/files/b.bin"] = payload
    state.ignore_range.add("/files/b.bin")
    (tmp_path / "b.bin.part").write_bytes(b"stale bytes from an older attempt")
    remote = download.RemoteFile(
        "b.bin", f"{base}/files/b.bin", ("md5", _md5(payload)), len(payload)
    )
    download.fetch(remote, tmp_path, retries=0, timeout=5, progress=False)
    assert (tmp_path / "b.bin").read_bytes() == payload
    assert state.requests[-1][2] is not None  # a Range was asked for and ignored


def test_wrong_checksum_is_a_clear_error_and_leaves_no_file(server, tmp_path):
    """DermaMNIST through a mirror: the served bytes do not match MedMNIST's published MD5."""
    base, state = server
    served = b"not the real dermamnist_64.npz"
    state.routes["/records/10519652/files/dermamnist_64.npz?download=1"] = served
    dest = tmp_path / "DermaMNIST"
    with pytest.raises(download.ChecksumError) as raised:
        download.download("dermamnist", dest, mirror=base, size=64, retries=0, progress=False)
    message = str(raised.value)
    assert DERMAMNIST.md5["dermamnist_64.npz"] in message and _md5(served) in message
    assert f"{base}/records/10519652/files/dermamnist_64.npz" in message
    assert not (dest / "dermamnist_64.npz").exists()
    assert not (dest / "dermamnist_64.npz.part").exists()


def _symlink_zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as handle:
        handle.writestr("ok.txt", b"fine")
        link = zipfile.ZipInfo("link")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        handle.writestr(link, "../../outside")


@pytest.mark.parametrize(
    "member", ["../evil.txt", "/tmp/evil.txt", "a/../../evil.txt", "C:/evil.txt", None]
)
def test_zip_slip_members_are_refused_before_anything_is_written(tmp_path, member):
    archive = tmp_path / "bad.zip"
    if member is None:
        _symlink_zip(archive)
    else:
        archive.write_bytes(_zip({"ok.txt": b"fine", member: b"evil"}))
    target = tmp_path / "out" / "target"
    with pytest.raises(DataError, match="outside") as raised:
        download.extract_zip(archive, target, progress=False)
    assert repr(member or "link") in str(raised.value)
    assert not target.exists() or not any(target.rglob("*"))
    assert not (tmp_path / "out" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()


def _publish_isic2019(state: ServerState) -> bytes:
    archive = _zip({"ISIC_2019_Training_Input/ISIC_0000000.jpg": _jpeg(5),
                    "ISIC_2019_Training_Input/LICENSE.txt": b"CC BY-NC"})
    state.routes["/2019/ISIC_2019_Training_Input.zip"] = archive
    state.routes["/2019/ISIC_2019_Training_GroundTruth.csv"] = b"image,MEL\nISIC_0000000,1.0\n"
    state.routes["/2019/ISIC_2019_Training_Metadata.csv"] = b"image,age_approx\nISIC_0000000,55\n"
    return archive


def test_isic2019_verifies_sizes_and_extracts_the_official_layout(server, tmp_path):
    base, state = server
    _publish_isic2019(state)
    dest = tmp_path / "ISIC_2019"
    download.download("isic2019", dest, mirror=base, progress=False)
    assert (dest / "ISIC_2019_Training_Input/ISIC_0000000.jpg").read_bytes() == _jpeg(5)
    assert (dest / "ISIC_2019_Training_GroundTruth.csv").exists()
    receipts = download.load_receipts(dest)
    assert {entry["verified"] for entry in receipts.values()} == {"size"}


def test_insufficient_disk_space_is_a_clear_error_before_any_transfer(
    server, tmp_path, monkeypatch
):
    base, state = server
    archive = _publish_isic2019(state)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    dest = tmp_path / "ISIC_2019"
    with pytest.raises(download.DiskSpaceError, match=r"need .*free 1000 B") as raised:
        download.download("isic2019", dest, mirror=base, progress=False)
    assert str(tmp_path) in str(raised.value)
    assert len(archive) > 1000
    assert state.gets() == []  # only HEAD requests for the sizes
    assert not dest.exists()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_offline_error_names_the_url_and_the_manual_steps(tmp_path):
    base = f"http://127.0.0.1:{_closed_port()}"
    dest = tmp_path / "HAM10000"
    with pytest.raises(download.OfflineError) as raised:
        download.download("ham10000", dest, server=base, retry_wait=0, timeout=2, progress=False)
    message = str(raised.value)
    assert base + LISTING_PATH in message
    assert "Manual steps" in message and HAM10000_DOI in message
    assert f"{dest}/HAM10000_images_part_1/" in message
    assert f"{dest}/HAM10000_metadata.csv" in message
    assert not dest.exists()


def test_offline_cli_exits_1_with_the_url_and_manual_steps(tmp_path, capsys):
    base = f"http://127.0.0.1:{_closed_port()}"
    dest = tmp_path / "ISIC_2019"
    code = cli.main(["download", "isic2019", str(dest), "--mirror", base, "--retries", "0",
                     "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"{base}/2019/ISIC_2019_Training_Input.zip" in err
    assert "Manual steps" in err and f"{dest}/ISIC_2019_Training_Input/" in err


def test_dataverse_listing_variants():
    """Names differing in punctuation still match; a missing required file names what is listed."""
    listing = {"data": {"latestVersion": {"files": [
        {"dataFile": {"id": 9, "filename": "HAM10000_images_part1.zip", "filesize": 3,
                      "md5": "AB"}},
        {"dataFile": {"id": 8, "filename": "HAM10000_images_part_2.zip", "filesize": 4,
                      "checksum": {"type": "SHA-256", "value": "cd"}}},
        {"dataFile": {"id": 7, "filename": "HAM10000_metadata.tab",
                      "originalFileFormat": "text/csv",
                      "originalFileSize": 5, "filesize": 6, "md5": "ef"}},
    ]}}}
    files = {f.name: f for f in download.ham10000_files(listing, "http://dv", test_set=True)}
    assert set(files) == {
        "HAM10000_images_part_1.zip", "HAM10000_images_part_2.zip", "HAM10000_metadata.csv"
    }
    assert files["HAM10000_images_part_1.zip"].url == "http://dv/api/access/datafile/9"
    assert files["HAM10000_images_part_1.zip"].checksum == ("md5", "ab")
    assert files["HAM10000_images_part_2.zip"].checksum == ("sha256", "cd")
    assert files["HAM10000_metadata.csv"].url.endswith("/7?format=original")
    assert files["HAM10000_metadata.csv"].size == 5
    with pytest.raises(download.DownloadError, match="lists: HAM10000_images_part1.zip"):
        download.ham10000_files(listing, "http://dv", masks=True)


def test_dermamnist_plan_uses_the_published_facts():
    (remote,) = download.dermamnist_files(224)
    assert remote.name == "dermamnist_224.npz"
    assert remote.url == "https://zenodo.org/records/10519652/files/dermamnist_224.npz?download=1"
    assert remote.checksum == ("md5", "8974907d8e169bef5f5b96bc506ae45d")
    assert download.dermamnist_files(28)[0].name == "dermamnist.npz"
    with pytest.raises(ValueError, match="28, 64, 128, 224"):
        download.dermamnist_files(32)

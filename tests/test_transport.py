"""utils.data.transport against a local HTTP server (tests/fake_http.py): resume with Range,
retries, servers that ignore Range, zip-slip refusal, disk space, receipts."""
from __future__ import annotations

import random
import stat
import zipfile
from pathlib import Path

import pytest
from fake_http import jpeg_bytes, md5, serve, zip_bytes

from utils.data import transport
from utils.errors import DataError


@pytest.fixture
def server():
    """A local HTTP server; yields (base_url, state)."""
    with serve() as served:
        yield served


def test_truncated_transfer_resumes_with_range_on_the_next_run(server, tmp_path):
    base, state = server
    payload = random.Random(0).randbytes(300_000)
    state.routes["/files/big.bin"] = payload
    state.truncate_once.add("/files/big.bin")
    remote = transport.RemoteFile(
        "big.bin", f"{base}/files/big.bin", ("md5", md5(payload)), len(payload)
    )
    with pytest.raises(transport.DownloadError, match="rerun to resume"):
        transport.fetch(remote, tmp_path, retries=0, timeout=5, progress=False)
    part = tmp_path / "big.bin.part"
    assert part.stat().st_size == len(payload) // 2
    assert not (tmp_path / "big.bin").exists()
    transport.fetch(remote, tmp_path, retries=0, timeout=5, progress=False)
    assert (tmp_path / "big.bin").read_bytes() == payload
    assert not part.exists()
    assert state.requests[-1] == ("GET", "/files/big.bin", f"bytes={len(payload) // 2}-")


def test_truncated_transfer_is_retried_within_one_run(server, tmp_path):
    base, state = server
    payload = random.Random(1).randbytes(100_000)
    state.routes["/files/a.bin"] = payload
    state.truncate_once.add("/files/a.bin")
    remote = transport.RemoteFile("a.bin", f"{base}/files/a.bin", ("md5", md5(payload)))
    transport.fetch(remote, tmp_path, retries=2, retry_wait=0, timeout=5, progress=False)
    assert (tmp_path / "a.bin").read_bytes() == payload
    assert [r for _, _, r in state.requests] == [None, f"bytes={len(payload) // 2}-"]


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    base, state = server
    payload = random.Random(2).randbytes(50_000)
    state.routes["/files/b.bin"] = payload
    state.ignore_range.add("/files/b.bin")
    (tmp_path / "b.bin.part").write_bytes(b"stale bytes from an older attempt")
    remote = transport.RemoteFile(
        "b.bin", f"{base}/files/b.bin", ("md5", md5(payload)), len(payload)
    )
    transport.fetch(remote, tmp_path, retries=0, timeout=5, progress=False)
    assert (tmp_path / "b.bin").read_bytes() == payload
    assert state.requests[-1][2] is not None  # a Range was asked for and ignored


def test_install_extracts_records_a_receipt_and_is_complete_afterwards(server, tmp_path):
    base, state = server
    archive = zip_bytes({"top/x.jpg": jpeg_bytes(0), "top/sub/y.jpg": jpeg_bytes(1)})
    state.routes["/a.zip"] = archive
    remote = transport.RemoteFile("a.zip", f"{base}/a.zip", ("md5", md5(archive)),
                                  extract_to="images")
    receipts: dict[str, dict] = {}
    assert not transport.is_complete(remote, tmp_path, receipts)
    transport.install(remote, tmp_path, receipts, delete_archives=False, retries=0,
                      retry_wait=0, timeout=5, progress=False)
    # the single top folder is dropped: members land directly in extract_to
    assert (tmp_path / "images/x.jpg").read_bytes() == jpeg_bytes(0)
    assert (tmp_path / "images/sub/y.jpg").read_bytes() == jpeg_bytes(1)
    saved = transport.load_receipts(tmp_path)
    assert saved["a.zip"]["verified"] == "md5" and saved["a.zip"]["members"] == 2
    assert transport.is_complete(remote, tmp_path, saved)
    (tmp_path / "images/x.jpg").unlink()
    assert not transport.is_complete(remote, tmp_path, saved)


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
        archive.write_bytes(zip_bytes({"ok.txt": b"fine", member: b"evil"}))
    target = tmp_path / "out" / "target"
    with pytest.raises(DataError, match="outside") as raised:
        transport.extract_zip(archive, target, progress=False)
    assert repr(member or "link") in str(raised.value)
    assert not target.exists() or not any(target.rglob("*"))
    assert not (tmp_path / "out" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()


def test_a_corrupt_archive_names_the_fix(tmp_path):
    archive = tmp_path / "broken.zip"
    archive.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="delete it and rerun the download"):
        transport.extract_zip(archive, tmp_path / "out", progress=False)


@pytest.mark.parametrize(
    "n_bytes, text", [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KB"), (5 * 1024**2, "5.0 MB"),
                      (3 * 1024**4, "3072.0 GB")]
)
def test_human_size(n_bytes, text):
    assert transport.human_size(n_bytes) == text

"""utils.data.download: the dataset plans end to end against a local HTTP server
(tests/fake_http.py, 127.0.0.1): never the internet. utils.data.transport has its own tests."""
from __future__ import annotations

import json
import shutil
import socket
from collections import namedtuple

import pytest
from fake_http import ServerState, jpeg_bytes, md5, serve, zip_bytes

from utils import cli
from utils.data import download, readers, transport
from utils.data.datasets import DERMAMNIST, HAM10000_DOI

LISTING_PATH = f"/api/datasets/:persistentId/?persistentId={HAM10000_DOI}"


@pytest.fixture
def server():
    """A local HTTP server (tests/fake_http.py); yields (base_url, state)."""
    with serve() as served:
        yield served


CSV = (
    b"lesion_id,image_id,dx,dx_type,age,sex,localization\n"
    b"HAM_0000118,ISIC_0024306,nv,histo,80.0,male,scalp\n"
)
GT_CSV = b"image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\nISIC_0034524,0.0,1.0,0.0,0.0,0.0,0.0,0.0\n"


def publish_ham(state: ServerState) -> dict[str, bytes]:
    """Serve a fake HAM10000 Dataverse dataset; returns the expected files by local path."""
    flat = {"ISIC_0024306.jpg": jpeg_bytes(1), "ISIC_0024307.jpg": jpeg_bytes(2)}
    part1 = zip_bytes(flat)  # members at the top level
    part2 = zip_bytes({"HAM10000_images_part_2/ISIC_0029306.jpg": jpeg_bytes(3)})  # one top folder
    test_zip = zip_bytes({"ISIC2018_Task3_Test_Images/ISIC_0034524.jpg": jpeg_bytes(4)})
    masks = zip_bytes(
        {"HAM10000_segmentations_lesion_tschandl/ISIC_0024306_segmentation.png": b"png"}
    )
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
                "checksum": {"type": "MD5", "value": md5(original)}}

    files = [
        {"id": 1, "filename": "HAM10000_images_part_1.zip", "filesize": len(part1),
         "md5": md5(part1)},
        {"id": 2, "filename": "HAM10000_images_part_2.zip", "filesize": len(part2),
         "checksum": {"type": "MD5", "value": md5(part2)}},
        tabular(3, "HAM10000_metadata.tab", CSV),
        {"id": 4, "filename": "ISIC2018_Task3_Test_Images.zip", "filesize": len(test_zip),
         "md5": md5(test_zip)},
        tabular(5, "ISIC2018_Task3_Test_GroundTruth.tab", GT_CSV),
        {"id": 6, "filename": "HAM10000_segmentations_lesion_tschandl.zip", "filesize": len(masks),
         "md5": md5(masks)},
        {"id": 7, "filename": "ISIC2018_Task3_Test_NatureMedicine_AI_Interaction_Benefit.tab",
         "filesize": 5, "md5": md5(b"decoy")},
    ]
    listing = {"status": "OK", "data": {"latestVersion": {"files": [
        {"label": f["filename"], "dataFile": f} for f in files]}}}
    state.routes[LISTING_PATH] = json.dumps(listing).encode()
    return {
        "HAM10000_images_part_1/ISIC_0024306.jpg": jpeg_bytes(1),
        "HAM10000_images_part_1/ISIC_0024307.jpg": jpeg_bytes(2),
        "HAM10000_images_part_2/ISIC_0029306.jpg": jpeg_bytes(3),
        "HAM10000_metadata.csv": CSV,
        "ISIC2018_Task3_Test/ISIC2018_Task3_Test_Input/ISIC_0034524.jpg": jpeg_bytes(4),
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
    receipts = transport.load_receipts(dest)
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


def test_wrong_checksum_is_a_clear_error_and_leaves_no_file(server, tmp_path):
    """DermaMNIST through a mirror: the served bytes do not match MedMNIST's published MD5."""
    base, state = server
    served = b"not the real dermamnist_64.npz"
    state.routes["/records/10519652/files/dermamnist_64.npz?download=1"] = served
    dest = tmp_path / "DermaMNIST"
    with pytest.raises(transport.ChecksumError) as raised:
        download.download("dermamnist", dest, mirror=base, size=64, retries=0, progress=False)
    message = str(raised.value)
    assert DERMAMNIST.md5["dermamnist_64.npz"] in message and md5(served) in message
    assert f"{base}/records/10519652/files/dermamnist_64.npz" in message
    assert not (dest / "dermamnist_64.npz").exists()
    assert not (dest / "dermamnist_64.npz.part").exists()


def _publish_isic2019(state: ServerState) -> bytes:
    archive = zip_bytes({"ISIC_2019_Training_Input/ISIC_0000000.jpg": jpeg_bytes(5),
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
    assert (dest / "ISIC_2019_Training_Input/ISIC_0000000.jpg").read_bytes() == jpeg_bytes(5)
    assert (dest / "ISIC_2019_Training_GroundTruth.csv").exists()
    receipts = transport.load_receipts(dest)
    assert {entry["verified"] for entry in receipts.values()} == {"size"}


def test_insufficient_disk_space_is_a_clear_error_before_any_transfer(
    server, tmp_path, monkeypatch
):
    base, state = server
    archive = _publish_isic2019(state)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    dest = tmp_path / "ISIC_2019"
    with pytest.raises(transport.DiskSpaceError, match=r"need .*free 1000 B") as raised:
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
    with pytest.raises(transport.OfflineError) as raised:
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
    with pytest.raises(transport.DownloadError, match="lists: HAM10000_images_part1.zip"):
        download.ham10000_files(listing, "http://dv", masks=True)


def test_dermamnist_plan_uses_the_published_facts():
    (remote,) = download.dermamnist_files(224)
    assert remote.name == "dermamnist_224.npz"
    assert remote.url == "https://zenodo.org/records/10519652/files/dermamnist_224.npz?download=1"
    assert remote.checksum == ("md5", "8974907d8e169bef5f5b96bc506ae45d")
    assert download.dermamnist_files(28)[0].name == "dermamnist.npz"
    with pytest.raises(ValueError, match="28, 64, 128, 224"):
        download.dermamnist_files(32)

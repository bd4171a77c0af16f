"""Unblurred originals (:mod:`serving.originals`): none by default; with the setting, kept for a set
number of days, readable by privacy officers only, every read logged before it is served."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from serving.auth import LOCAL, Permission
from serving.originals import DAY_S, expire_originals
from serving.retention_cli import photos as photos_cli
from tests.serving.helpers import Server, server_at
from tests.serving.test_serving_blur_later import REGIONS, _is_blurred
from tests.serving.test_serving_privacy import FixedRegions, _photo, _sharpness
from vipare.detection import Detector

REASON = "police request 2026-118 about a van"


@pytest.fixture
def faces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("vipare.pipeline.PrivacyDetector.from_settings", lambda *a, **k: FixedRegions(REGIONS))


def _with_officer(server: Server) -> Server:
    server.keys["officer"] = server.keys["privacy_officer"]
    return server


@pytest.fixture
def keeping(tmp_path: Path, detector: Detector, faces: None) -> Iterator[Server]:
    with server_at(tmp_path / "data", detector, keep_originals_days=7) as running:
        yield _with_officer(running)


@pytest.fixture
def not_keeping(tmp_path: Path, detector: Detector, faces: None) -> Iterator[Server]:
    with server_at(tmp_path / "data", detector) as running:
        yield _with_officer(running)


def _original(server: Server, report_id: int, who: str = "officer", reason: str | None = REASON) -> Any:
    params = {} if reason is None else {"reason": reason}
    return server.client.get(f"/v1/reports/{report_id}/original", params=params, headers=server.headers(who))


def test_by_default_no_original_is_kept(not_keeping: Server) -> None:
    photo = _photo(21, 48.8721, 2.3721)
    report = not_keeping.upload(photo).json()
    assert not not_keeping.folder.originals()
    answer = _original(not_keeping, report["id"])
    assert answer.status_code == 410 and answer.json()["code"] == "original_not_kept"
    reads = not_keeping.client.get("/v1/originals/reads", headers=not_keeping.headers("officer")).json()
    assert reads["total"] == 0  # a refused read is not a read


def test_a_privacy_officer_reads_the_original_and_the_read_is_logged(keeping: Server) -> None:
    photo = _photo(22, 48.8722, 2.3722)
    report = keeping.upload(photo).json()
    blurred = keeping.client.get(f"/v1/reports/{report['id']}/image", headers=keeping.headers("manager"))
    assert _is_blurred(blurred.content, photo)
    answer = _original(keeping, report["id"])
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    assert _sharpness(answer.content) > 0.5 * _sharpness(photo)  # readable, as sent
    assert b"GPS" not in answer.content[:4096] and not answer.content.count(b"Exif\x00\x00")  # metadata removed
    log = keeping.client.get("/v1/originals/reads", headers=keeping.headers("admin")).json()
    assert log["total"] == 1
    assert log["items"][0]["report_id"] == report["id"]
    assert log["items"][0]["reason"] == REASON and log["items"][0]["reader"] == "test-privacy_officer (privacy_officer)"


@pytest.mark.parametrize("who", ["agent", "manager", "admin", "camera"])
def test_no_other_role_reads_an_original(keeping: Server, who: str) -> None:
    report = keeping.upload(_photo(23, 48.8723, 2.3723)).json()
    answer = _original(keeping, report["id"], who=who)
    assert answer.status_code == 403 and answer.json()["code"] == "forbidden"
    assert keeping.client.get("/v1/originals/reads", headers=keeping.headers("officer")).json()["total"] == 0


@pytest.mark.parametrize("reason", [None, "because", "x" * 1001])
def test_a_read_without_a_reason_is_refused_and_not_logged(keeping: Server, reason: str | None) -> None:
    report = keeping.upload(_photo(24, 48.8724, 2.3724)).json()
    answer = _original(keeping, report["id"], reason=reason)
    assert answer.status_code == 422 and answer.json()["code"] == "invalid_request"
    assert keeping.client.get("/v1/originals/reads", headers=keeping.headers("officer")).json()["total"] == 0


def test_an_erased_report_takes_its_original_with_it(keeping: Server) -> None:
    photo = _photo(25, 48.8725, 2.3725)
    report = keeping.upload(photo).json()
    path = keeping.folder.original_path(hashlib.sha256(photo).hexdigest(), "jpg")
    assert path.exists()
    assert keeping.client.post(f"/v1/reports/{report['id']}/erase", headers=keeping.headers("admin")).status_code == 200
    assert not path.exists()
    assert _original(keeping, report["id"]).status_code == 410


def test_originals_older_than_the_setting_are_deleted(keeping: Server) -> None:
    photo = _photo(26, 48.8726, 2.3726)
    keeping.upload(photo)
    store = keeping.folder
    path = store.original_path(hashlib.sha256(photo).hexdigest(), "jpg")
    assert expire_originals(store, 7) == 0 and path.exists()
    eight_days_ago = time.time() - 8 * DAY_S
    os.utime(path, (eight_days_ago, eight_days_ago))
    assert expire_originals(store, 7) == 1 and not path.exists()


def test_the_purge_command_deletes_every_original_once_the_setting_is_0(
    keeping: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    photo = _photo(27, 48.8727, 2.3727)
    keeping.upload(photo)
    path = keeping.folder.original_path(hashlib.sha256(photo).hexdigest(), "jpg")
    assert path.exists()
    monkeypatch.setenv("VIPARE_KEEP_ORIGINALS_DAYS", "0")
    result = CliRunner().invoke(photos_cli, ["purge", "--data-dir", str(keeping.data_dir)])
    assert result.exit_code == 0, result.output
    assert "deleted 1 unblurred originals" in result.output
    assert not path.exists()


def test_a_privacy_officer_key_is_created_on_the_server_only(keeping: Server) -> None:
    answer = keeping.client.post(
        "/v1/keys", json={"role": "privacy_officer", "name": "dpo"}, headers=keeping.headers("admin")
    )
    assert answer.status_code == 403 and "vipare keys create --role privacy_officer" in answer.json()["detail"]
    assert Permission.ORIGINAL_READ not in LOCAL.permissions  # nor by the trial mode, which has no key


def test_a_photo_with_nothing_to_blur_keeps_no_separate_original(
    keeping: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keeping.service.pipeline, "privacy", FixedRegions([]))
    photo = _photo(28, 48.8728, 2.3728)
    report = keeping.upload(photo).json()
    assert not keeping.folder.original_path(hashlib.sha256(photo).hexdigest(), "jpg").exists()
    answer = _original(keeping, report["id"])
    assert answer.status_code == 410 and "the stored photo is the original" in answer.json()["detail"]


def test_the_original_of_a_photo_sent_a_moment_ago_is_read_once_blurred(keeping: Server) -> None:
    photo = _photo(29, 48.8729, 2.3729)
    files = {"photo": ("photo.jpg", photo, "image/jpeg")}
    report = keeping.client.post("/v1/reports", files=files, headers=keeping.headers("agent")).json()
    answer = _original(keeping, report["id"])  # no settle(): the read waits for the blurring
    assert answer.status_code == 200
    assert _sharpness(answer.content) > 0.5 * _sharpness(photo)

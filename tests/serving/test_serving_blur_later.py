"""An upload is answered before its photo is blurred; nobody sees the photo before it is.

What :mod:`serving.photos.pending` and :mod:`serving.reports.blurring` promise: the photo is held
(fsynced, metadata removed, never served) from before the report's commit until its blurred copy is
stored; a reader waits for the blurred copy or makes it; a crash in between leaves a held photo that
the next start blurs before the service is ready; an erased report leaves no file, held or blurred;
and a burst beyond :data:`serving.reports.blurring.MAX_IN_FLIGHT` blurs before answering.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from serving.photos import anonymise as anonymising
from serving.reports import blurring, upload
from tests.serving.helpers import Server, plain_photo, server_at
from tests.serving.test_serving_privacy import FACE, FixedRegions, _photo, _sharpness
from vipare.detection import Detector
from vipare.errors import CorruptImageError
from vipare.privacy import Region

REGIONS = [Region("face", FACE, 0.9)]


@pytest.fixture
def faces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every pipeline built from now on finds :data:`FACE` (a restarted service's too)."""
    monkeypatch.setattr("vipare.pipeline.PrivacyDetector.from_settings", lambda *a, **k: FixedRegions(REGIONS))


@pytest.fixture
def blurred_server(tmp_path: Path, detector: Detector, faces: None) -> Iterator[Server]:
    with server_at(tmp_path / "data", detector) as running:
        yield running


@dataclass
class Gate:
    """Holds every blurring back until :attr:`opened` is set; :attr:`reached` is set when one arrives."""

    opened: threading.Event = field(default_factory=threading.Event)
    reached: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    """Blurrings wait at the gate; it opens at the end of the test whatever happened."""
    held = Gate()
    store_blurred = blurring.store_blurred

    def gated(*args: Any) -> None:
        held.reached.set()
        assert held.opened.wait(30)
        store_blurred(*args)

    monkeypatch.setattr(blurring, "store_blurred", gated)
    yield held
    held.opened.set()


def _post(server: Server, photo: bytes) -> Any:
    """An upload that, unlike ``Server.upload``, does not wait for the blurring."""
    files = {"photo": ("photo.jpg", photo, "image/jpeg")}
    return server.client.post("/v1/reports", files=files, headers=server.headers("agent"))


def _is_blurred(data: bytes, photo: bytes) -> bool:
    return _sharpness(data) < 0.05 * _sharpness(photo)


def _never_blurred(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process 'dies' after each answer: the blurring it would start never runs."""

    def lost(service: Any, *args: Any) -> None:
        service.in_flight.finish(args[-3])  # (..., dumping, sha256, ext, every_deposit)

    monkeypatch.setattr(upload, "blur_later", lost)


def test_the_answer_comes_before_the_blur_and_a_reader_waits_for_it(blurred_server: Server, gate: Gate) -> None:
    photo = _photo(11, 48.8711, 2.3711)
    sha256 = hashlib.sha256(photo).hexdigest()
    photos = blurred_server.folder
    response = _post(blurred_server, photo)
    assert response.status_code == 201, response.text
    assert gate.reached.wait(30)
    # answered, not blurred yet: held on disk, metadata removed, not in the store
    assert photos.held_path(sha256, "jpg").exists() and not photos.path(sha256, "jpg").exists()
    with Image.open(photos.held_path(sha256, "jpg")) as held:
        assert not held.getexif()
    served: list[Any] = []
    url, headers = f"/v1/reports/{response.json()['id']}/image", blurred_server.headers("agent")
    reader = threading.Thread(target=lambda: served.append(blurred_server.client.get(url, headers=headers)))
    reader.start()
    reader.join(0.5)
    assert reader.is_alive(), "the photo was served before it was blurred"
    gate.opened.set()
    reader.join(30)
    assert served[0].status_code == 200
    assert _is_blurred(served[0].content, photo)
    blurred_server.settle()
    assert not photos.held_path(sha256, "jpg").exists()


def test_a_reader_blurs_a_photo_whose_blurring_never_ran(
    blurred_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    _never_blurred(monkeypatch)
    photo = _photo(12, 48.8712, 2.3712)
    sha256 = hashlib.sha256(photo).hexdigest()
    report = _post(blurred_server, photo).json()
    photos = blurred_server.folder
    assert photos.held_path(sha256, "jpg").exists() and not photos.path(sha256, "jpg").exists()
    annotated = blurred_server.client.get(
        f"/v1/reports/{report['id']}/image/annotated", headers=blurred_server.headers("manager")
    )
    assert annotated.status_code == 200
    assert _is_blurred(photos.path(sha256, "jpg").read_bytes(), photo)
    assert not photos.held_path(sha256, "jpg").exists()


def test_a_photo_held_at_a_crash_is_blurred_before_the_next_start_is_ready(
    tmp_path: Path, detector: Detector, faces: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    photo = _photo(13, 48.8713, 2.3713)
    sha256 = hashlib.sha256(photo).hexdigest()
    with server_at(tmp_path / "data", detector) as first:
        _never_blurred(monkeypatch)
        assert _post(first, photo).status_code == 201
        assert first.folder.held_path(sha256, "jpg").exists()
    monkeypatch.undo()
    monkeypatch.setattr("vipare.pipeline.PrivacyDetector.from_settings", lambda *a, **k: FixedRegions(REGIONS))
    with server_at(tmp_path / "data", detector) as second:
        assert second.client.get("/readyz").status_code == 200
        photos = second.folder
        assert not photos.held_path(sha256, "jpg").exists()
        assert _is_blurred(photos.path(sha256, "jpg").read_bytes(), photo)


def test_erasing_a_report_whose_photo_is_held_leaves_no_file(
    blurred_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    _never_blurred(monkeypatch)
    photo = _photo(14, 48.8714, 2.3714)
    sha256 = hashlib.sha256(photo).hexdigest()
    report = _post(blurred_server, photo).json()
    erased = blurred_server.client.post(f"/v1/reports/{report['id']}/erase", headers=blurred_server.headers("admin"))
    assert erased.status_code == 200, erased.text
    photos = blurred_server.folder
    assert not photos.held_path(sha256, "jpg").exists() and not photos.path(sha256, "jpg").exists()


def test_a_blur_finishing_after_an_erasure_stores_nothing(blurred_server: Server, gate: Gate) -> None:
    photo = _photo(15, 48.8715, 2.3715)
    sha256 = hashlib.sha256(photo).hexdigest()
    report = _post(blurred_server, photo).json()
    erased = blurred_server.client.post(f"/v1/reports/{report['id']}/erase", headers=blurred_server.headers("admin"))
    assert erased.status_code == 200, erased.text
    gate.opened.set()
    blurred_server.settle()
    photos = blurred_server.folder
    assert not photos.held_path(sha256, "jpg").exists() and not photos.path(sha256, "jpg").exists()


def test_beyond_the_photos_in_flight_an_upload_blurs_before_answering(
    blurred_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(upload, "MAX_IN_FLIGHT", 0)
    photo = _photo(16, 48.8716, 2.3716)
    sha256 = hashlib.sha256(photo).hexdigest()
    assert _post(blurred_server, photo).status_code == 201
    photos = blurred_server.folder
    assert not photos.held_path(sha256, "jpg").exists()
    assert _is_blurred(photos.path(sha256, "jpg").read_bytes(), photo)


def test_a_photo_this_process_is_blurring_already_is_blurred_before_the_answer(blurred_server: Server) -> None:
    """Another client's upload of the same photo holds the claim: this one blurs its copy itself."""
    photo = _photo(17, 48.8717, 2.3717)
    sha256 = hashlib.sha256(photo).hexdigest()
    service = blurred_server.service
    assert service.in_flight.start(sha256)
    try:
        assert _post(blurred_server, photo).status_code == 201
        assert not blurred_server.folder.held_path(sha256, "jpg").exists()
        assert _is_blurred(blurred_server.folder.path(sha256, "jpg").read_bytes(), photo)
    finally:
        service.in_flight.finish(sha256)


def test_an_upload_failing_after_the_hold_leaves_no_file(
    blurred_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> None:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(upload, "_persist", broken)
    photo = _photo(18, 48.8718, 2.3718)
    sha256 = hashlib.sha256(photo).hexdigest()
    with pytest.raises(RuntimeError, match="went away"):
        _post(blurred_server, photo)
    photos = blurred_server.folder
    assert not photos.held_path(sha256, "jpg").exists() and not photos.path(sha256, "jpg").exists()
    assert not len(blurred_server.service.in_flight)


def test_a_photo_that_cannot_be_decoded_in_full_is_not_kept_unblurred(
    blurred_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    def corrupt(*args: Any, **kwargs: Any) -> bytes:
        raise CorruptImageError("the photo's data ends before its last row")

    monkeypatch.setattr(anonymising, "anonymise", corrupt)
    photo = _photo(19, 48.8719, 2.3719)
    sha256 = hashlib.sha256(photo).hexdigest()
    report = blurred_server.upload(photo).json()
    assert not blurred_server.folder.held_path(sha256, "jpg").exists()
    served = blurred_server.client.get(f"/v1/reports/{report['id']}/image", headers=blurred_server.headers("agent"))
    assert served.status_code == 404 and served.json()["code"] == "not_found"


def test_a_reader_tired_of_waiting_is_told_to_ask_again(
    blurred_server: Server, gate: Gate, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blurring, "READ_WAIT_S", 0.2)
    photo = _photo(20, 48.8720, 2.3720)
    report = _post(blurred_server, photo).json()
    try:
        served = blurred_server.client.get(f"/v1/reports/{report['id']}/image", headers=blurred_server.headers("agent"))
        assert served.status_code == 503 and served.json()["code"] == "photo_pending"
        assert served.headers["retry-after"] == "5"
    finally:
        gate.opened.set()
        blurred_server.settle()
    served = blurred_server.client.get(f"/v1/reports/{report['id']}/image", headers=blurred_server.headers("agent"))
    assert served.status_code == 200 and _is_blurred(served.content, photo)


def test_the_held_file_is_written_while_the_photo_is_analysed(
    blurred_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    photo = _photo(21, 48.8721, 2.3721)
    sha256 = hashlib.sha256(photo).hexdigest()
    held = blurred_server.service.photos.held_path(sha256, "jpg")
    analyze = upload._analyze
    seen: list[bool] = []

    def watched(*args: Any) -> Any:
        seen.append(_appears(held, within_s=10.0))
        return analyze(*args)

    monkeypatch.setattr(upload, "_analyze", watched)
    assert blurred_server.upload(photo).status_code == 201
    assert seen == [True]


def test_a_refused_photo_leaves_no_held_file_and_no_claim(blurred_server: Server) -> None:
    photo = plain_photo(22)  # no position: refused once analysed, after its hold began
    sha256 = hashlib.sha256(photo).hexdigest()
    before = blurred_server.counts()
    refused = _post(blurred_server, photo)
    assert refused.status_code == 422 and refused.json()["code"] == "location_missing"
    assert not blurred_server.service.photos.held_path(sha256, "jpg").exists()
    assert blurred_server.counts() == before
    assert not len(blurred_server.service.in_flight)


def _appears(path: Path, *, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True

"""``vipare dataset export`` and ``POST /v1/datasets/export``: reviewed photos as a YOLO dataset.

The module's store holds photos uploaded through the API (the stand-in model sees the magenta square
of a deposit photo at ``DEPOSIT_BOX``) and reviewed through ``POST /v1/reports/{id}/review``: two
photos of one incident (one kept as the model saw it, one re-classed with a bin drawn), a false alarm
of a second incident, a reviewed photo without deposit and without incident, and one deposit nobody
reviewed. Tests that change what is stored run on a server of their own.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import zipfile
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from click.testing import CliRunner, Result
from sqlalchemy.orm import Session, sessionmaker

from serving.config import ServiceSettings
from serving.dataset.layout import folder_hash, label_line
from serving.dataset.select import ExportFilter, LabelBox, Sample
from serving.dataset.splits import SplitFractions, assign_splits, group_key
from serving.dataset.write import export_folder
from serving.db import engine_from_settings, migrate, session_factory, write_session
from serving.models import Incident, Report, ReportReview
from serving.photos.store import PhotoStore
from serving.queries import Bbox
from serving.routes.datasets import HASH_HEADER
from tests.imagegen import make_photo, pattern_array
from tests.onnxgen import MAGENTA
from tests.serving.helpers import (
    CELL,
    DEPOSIT_BOX,
    DEPOSIT_CELL,
    PHOTO_SIZE,
    Server,
    deposit_photo,
    moved,
    plain_photo,
    server_at,
)
from vipare.cli import main
from vipare.detection import Detector
from vipare.size import Size

STRASBOURG = (48.5734, 7.7521)
T0 = datetime(2024, 5, 6, 10, 0, tzinfo=UTC)
NAMES = {0: "dumped_waste", 1: "overflowing_bin", 2: "bin"}
DEPOSIT_LINE = "0 0.437500 0.416667 0.125000 0.166667"
"""The stand-in model's deposit box (240, 160, 320, 240) in a 640 x 480 photo: centre (280, 200), 80 x 80 px."""
_seed = itertools.count(9000)


@dataclass
class Store:
    """The module's server and its reports by name."""

    server: Server
    ids: dict[str, int]


def upload(server: Server, photo: bytes, place: tuple[float, float], at: datetime) -> dict[str, Any]:
    response = server.upload(photo, lat=place[0], lon=place[1], accuracy_m=5, captured_at=at.isoformat())
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def review(server: Server, report_id: int, body: dict[str, Any]) -> None:
    response = server.client.post(f"/v1/reports/{report_id}/review", json=body, headers=server.headers("manager"))
    assert response.status_code == 201, response.text


@pytest.fixture(scope="module")
def store(server: Server) -> Store:
    """Five reports: a, b (one incident), c (a false alarm, its own incident), d (no deposit), e (unreviewed)."""
    s = server
    far = [moved(*STRASBOURG, north_m=2000.0 * k) for k in range(4)]
    a = upload(s, deposit_photo(next(_seed)), far[0], T0)
    b = upload(s, deposit_photo(next(_seed)), moved(*far[0], east_m=5), T0 + timedelta(hours=1))
    c = upload(s, deposit_photo(next(_seed)), far[1], T0 + timedelta(days=14))
    d = upload(s, plain_photo(next(_seed)), far[2], T0 + timedelta(days=28))
    e = upload(s, deposit_photo(next(_seed)), far[3], T0 + timedelta(days=30))
    assert a["incident"]["id"] == b["incident"]["id"] != c["incident"]["id"] and d["incident"] is None
    review(s, a["id"], {"deposit": True, "boxes": [{"detection": 0}]})
    review(s, b["id"], {"deposit": True, "boxes": [
        {"detection": 0, "label": "overflowing_bin"}, {"label": "bin", "xyxy": [0, 0, 80, 80]}]})
    review(s, c["id"], {"deposit": False, "boxes": []})
    review(s, d["id"], {"deposit": False, "boxes": [], "note": "a bare street"})
    return Store(server=s, ids={"a": a["id"], "b": b["id"], "c": c["id"], "d": d["id"], "e": e["id"]})


def export_cli(data_dir: Path, out: Path, *options: str) -> Result:
    return CliRunner().invoke(main, ["dataset", "export", str(out), "--data-dir", str(data_dir), *options])


def exported(data_dir: Path, out: Path, *options: str) -> dict[str, Any]:
    """Export with the command; the manifest."""
    result = export_cli(data_dir, out, *options)
    assert result.exit_code == 0, result.output + result.stderr
    manifest: dict[str, Any] = json.loads((out / "manifest.json").read_text())
    return manifest


def by_report(manifest: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {entry["report_id"]: entry for entry in manifest["images"]}


def export_http(server: Server, who: str = "manager", **params: Any) -> Any:
    return server.client.post("/v1/datasets/export", params=params, headers=server.headers(who))


# --------------------------------------------------------------------------------------------------
# The export, end to end


def test_the_command_writes_photos_labels_data_yaml_and_manifest(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "city"
    manifest = exported(store.server.data_dir, out)
    ids = store.ids
    entries = by_report(manifest)
    assert set(entries) == {ids["a"], ids["b"], ids["c"], ids["d"]}  # e was never reviewed
    labels = {name: (out / entries[ids[name]]["label"]).read_text() for name in "abcd"}
    assert labels["a"] == f"{DEPOSIT_LINE}\n"
    assert labels["b"] == "1 0.437500 0.416667 0.125000 0.166667\n2 0.062500 0.083333 0.125000 0.166667\n"
    assert labels["c"] == labels["d"] == ""  # a false alarm and a bare street: negatives

    photos = store.server.folder
    with store.server.service.sessions() as session:
        for name in "abcd":
            entry, report = entries[ids[name]], session.get(Report, ids[name])
            assert report is not None
            image = out / entry["image"]
            assert image.read_bytes() == photos.path(report.sha256, report.photo_ext).read_bytes()  # as stored
            assert entry["image"] == f"images/{entry['split']}/report-{report.id}.jpg"
            assert entry["label"] == f"labels/{entry['split']}/report-{report.id}.txt"
            assert entry["sha256"] == report.sha256 and entry["model_sha256"] == report.model_sha256
            assert (entry["lat"], entry["lon"]) == (round(report.lat, 7), round(report.lon, 7))
            assert datetime.fromisoformat(entry["observed_at"]) == report.observed_at
            assert entry["incident_id"] == report.incident_id
            assert entry["labels"] == "review" and entry["review_source"] == "review"
            assert entry["reviewer"] == "test-manager (manager)" and entry["reviewed_at"]
            assert (entry["width"], entry["height"]) == ((320, 240) if name == "d" else (640, 480))
    assert entries[ids["a"]]["split"] == entries[ids["b"]]["split"]  # one incident, one split
    assert entries[ids["a"]]["group"] == f"incident:{entries[ids['a']]['incident_id']}"
    assert entries[ids["d"]]["group"].startswith("cell:") and entries[ids["d"]]["group"].endswith("2024-W23")

    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["path"] == str(out.resolve())
    assert (data["train"], data["val"]) == ("images/train", "images/val") and "test" not in data
    assert data["names"] == NAMES
    assert manifest["names"] == list(NAMES.values()) and manifest["taxonomy_version"] == "1"
    assert manifest["filters"] == {"since": None, "until": None, "bbox": None, "include_unreviewed": False}
    assert manifest["splits"]["val_fraction"] == 0.2 and manifest["splits"]["test_fraction"] == 0.0
    assert sum(manifest["splits"]["images"].values()) == 4
    assert manifest["boxes"] == {"dumped_waste": 1, "overflowing_bin": 1, "bin": 1}
    assert manifest["negatives"] == 2 and manifest["labels"] == {"review": 4}
    assert manifest["dataset_hash"] == folder_hash(out)
    assert not list(tmp_path.glob(".city.*"))  # no temporary folder left


def test_unreviewed_photos_come_with_the_models_labels_when_asked(store: Store, tmp_path: Path) -> None:
    manifest = exported(store.server.data_dir, tmp_path / "all", "--include-unreviewed")
    e = by_report(manifest)[store.ids["e"]]
    assert e["labels"] == "model" and e["reviewer"] is None and e["reviewed_at"] is None and e["deposit"] is True
    assert (tmp_path / "all" / e["label"]).read_text() == f"{DEPOSIT_LINE}\n"
    assert manifest["labels"] == {"review": 4, "model": 1} and manifest["filters"]["include_unreviewed"] is True


def test_the_hash_is_the_same_for_the_same_reviews_and_changes_with_a_new_one(
    tmp_path: Path, detector: Detector
) -> None:
    with server_at(tmp_path / "data", detector) as server:
        report = upload(server, deposit_photo(next(_seed)), STRASBOURG, T0)
        review(server, report["id"], {"deposit": True, "boxes": [{"detection": 0}]})
        first = exported(server.data_dir, tmp_path / "one")["dataset_hash"]
        second = exported(server.data_dir, tmp_path / "two")["dataset_hash"]
        answer = export_http(server)
        assert answer.status_code == 200, answer.text
        assert first == second == answer.headers[HASH_HEADER]  # whatever the folder, the time or the zip

        review(server, report["id"], {"deposit": True, "boxes": [{"detection": 0, "label": "overflowing_bin"}]})
        third = exported(server.data_dir, tmp_path / "three")
        assert third["dataset_hash"] != first
        assert (tmp_path / "three" / third["images"][0]["label"]).read_text().startswith("1 ")


def test_filters_by_time_and_place(store: Store, tmp_path: Path) -> None:
    ids, data_dir = store.ids, store.server.data_dir

    def reports(*options: str) -> set[int]:
        return set(by_report(exported(data_dir, tmp_path / str(next(_seed)), *options)))

    assert reports("--until", "2024-05-06") == {ids["a"], ids["b"]}  # a bare date: the whole day
    assert reports("--since", "2024-05-10T00:00:00+02:00") == {ids["c"], ids["d"]}
    assert reports("--since", "2024-05-20", "--until", "2024-05-20T10:00:00Z") == {ids["c"]}
    a = moved(*STRASBOURG, north_m=-100), moved(*STRASBOURG, north_m=100, east_m=100)
    box = f"{a[0][1]},{a[0][0]},{a[1][1]},{a[1][0]}"
    assert reports("--bbox", box) == {ids["a"], ids["b"]}
    manifest = exported(data_dir, tmp_path / "boxed", "--bbox", box, "--since", "2024-05-01")
    assert manifest["filters"]["bbox"] == [float(v) for v in box.split(",")]
    assert manifest["filters"]["since"] == "2024-05-01T00:00:00+00:00"

    answer = export_http(store.server, bbox=box, until="2024-05-06T23:00:00Z")
    assert answer.status_code == 200, answer.text
    with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
        zipped = json.loads(archive.read("vipare-dataset/manifest.json"))
    assert set(by_report(zipped)) == {ids["a"], ids["b"]}


def test_bad_filters_are_refused(store: Store, tmp_path: Path) -> None:
    data_dir = store.server.data_dir
    result = export_cli(data_dir, tmp_path / "x", "--since", "2024-06-01", "--until", "2024-05-01")
    assert result.exit_code == 2 and "since is after until" in result.stderr
    result = export_cli(data_dir, tmp_path / "x", "--bbox", "6,49,7")
    assert result.exit_code == 2 and "four numbers" in result.stderr
    result = export_cli(data_dir, tmp_path / "x", "--since", "last week")
    assert result.exit_code == 2 and "2024-05-01" in result.stderr
    result = export_cli(data_dir, tmp_path / "x", "--val-fraction", "0.6", "--test-fraction", "0.5")
    assert result.exit_code == 2 and "val + test < 1" in result.stderr
    assert not (tmp_path / "x").exists()
    assert export_http(store.server, bbox="6,49").status_code == 422
    assert export_http(store.server, val_fraction=1.5).status_code == 422
    assert export_http(store.server, since="2024-06-01T00:00:00Z", until="2024-05-01T00:00:00Z").status_code == 422


def test_nothing_to_export_says_what_to_do(tmp_path: Path, detector: Detector) -> None:
    with server_at(tmp_path / "data", detector) as server:
        upload(server, deposit_photo(next(_seed)), STRASBOURG, T0)
        result = export_cli(server.data_dir, tmp_path / "out")
        assert result.exit_code == 1
        assert "No photo has been reviewed yet" in result.stderr
        assert "POST /v1/reports/{id}/review" in result.stderr and "/manager" in result.stderr
        assert not (tmp_path / "out").exists()
        answer = export_http(server)
        assert answer.status_code == 404 and answer.json()["code"] == "nothing_to_export"
        assert "review" in answer.json()["detail"]
        # With the model's labels there is something.
        assert export_cli(server.data_dir, tmp_path / "out", "--include-unreviewed").exit_code == 0


def test_filters_that_match_no_review_say_so(store: Store, tmp_path: Path) -> None:
    result = export_cli(store.server.data_dir, tmp_path / "out", "--since", "2030-01-01")
    assert result.exit_code == 1
    assert "None of the 4 reviewed photos matches the filters" in result.stderr


def test_an_existing_export_is_replaced_only_with_force(store: Store, tmp_path: Path) -> None:
    out = tmp_path / "city"
    out.mkdir()  # an empty folder is fine
    first = exported(store.server.data_dir, out)
    result = export_cli(store.server.data_dir, out)
    assert result.exit_code == 1 and "--force" in result.stderr
    (out / "old-file").write_text("left from before")
    second = exported(store.server.data_dir, out, "--force")
    assert second["dataset_hash"] == first["dataset_hash"] and not (out / "old-file").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["city"]


def test_an_interrupted_export_leaves_no_folder(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    photos = store.server.folder
    calls = itertools.count()

    def path(sha256: str, ext: str) -> Path:  # the third photo cannot be read
        return photos.root if next(calls) == 2 else PhotoStore.path(photos, sha256, ext)

    monkeypatch.setattr(photos, "path", path)
    out = tmp_path / "city"
    with store.server.service.sessions() as session, pytest.raises(IsADirectoryError):
        export_folder(session, photos, out)
    assert list(tmp_path.iterdir()) == []


def _lose_photo(store: Store, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Report ``name``'s photo gone from the store after the selection (purged or erased meanwhile)."""
    with store.server.service.sessions() as session:
        report = session.get(Report, store.ids[name])
        assert report is not None
        lost = report.sha256
    path = PhotoStore.path

    def gone(photos: PhotoStore, sha256: str, ext: str) -> Path:
        return photos.root / "gone" / f"{sha256}.{ext}" if sha256 == lost else path(photos, sha256, ext)

    monkeypatch.setattr(PhotoStore, "path", gone)


def test_a_photo_gone_from_the_store_is_left_out_and_said(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _lose_photo(store, monkeypatch, "a")
    result = export_cli(store.server.data_dir, tmp_path / "city")
    assert result.exit_code == 0, result.output + result.stderr
    assert f"warning: left out the photo of report {store.ids['a']}: missing from the photo store" in result.stderr
    manifest = json.loads((tmp_path / "city" / "manifest.json").read_text())
    assert set(by_report(manifest)) == {store.ids[name] for name in "bcd"}
    assert manifest["dropped_photos"] == {"missing": 1}
    answer = export_http(store.server)
    assert answer.status_code == 200, answer.text
    with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
        zipped = json.loads(archive.read("vipare-dataset/manifest.json"))
    assert zipped["dropped_photos"] == {"missing": 1} and zipped["dataset_hash"] == manifest["dataset_hash"]


def test_every_photo_gone_exports_nothing(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PhotoStore, "path", lambda photos, sha256, ext: photos.root / "gone" / f"{sha256}.{ext}")
    result = export_cli(store.server.data_dir, tmp_path / "city")
    assert result.exit_code == 1 and "The 4 matching photos are missing from the photo store" in result.stderr
    assert list(tmp_path.iterdir()) == []
    answer = export_http(store.server)
    assert answer.status_code == 404 and answer.json()["code"] == "nothing_to_export"


# --------------------------------------------------------------------------------------------------
# The route


def test_the_route_answers_a_zip_of_the_same_dataset(store: Store, tmp_path: Path) -> None:
    answer = export_http(store.server)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/zip"
    digest = answer.headers[HASH_HEADER]
    assert f'filename="vipare-dataset-{digest[:12]}.zip"' in answer.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
        assert all(name.startswith("vipare-dataset/") for name in archive.namelist())
        archive.extractall(tmp_path)
    root = tmp_path / "vipare-dataset"
    data = yaml.safe_load((root / "data.yaml").read_text())
    assert "path" not in data and data["names"] == NAMES  # Ultralytics reads the folders next to data.yaml
    assert folder_hash(root) == digest == json.loads((root / "manifest.json").read_text())["dataset_hash"]
    assert exported(store.server.data_dir, tmp_path / "cli")["dataset_hash"] == digest


@pytest.mark.parametrize(("who", "status"), [("manager", 200), ("admin", 200), ("agent", 403), ("camera", 403)])
def test_managers_and_admins_may_export(store: Store, who: str, status: int) -> None:
    answer = export_http(store.server, who)
    assert answer.status_code == status
    if status == 403:
        assert answer.json()["code"] == "forbidden" and "export the reviewed photos" in answer.json()["detail"]


def test_without_a_key_the_route_answers_401(store: Store) -> None:
    assert store.server.client.post("/v1/datasets/export").status_code == 401


# --------------------------------------------------------------------------------------------------
# Splits over many reports


def _settings(data_dir: Path) -> ServiceSettings:
    return ServiceSettings(data_dir=data_dir, intra_op_threads=1)


@pytest.fixture
def many(tmp_path: Path) -> Iterator[tuple[sessionmaker[Session], PhotoStore]]:
    """A store of 30 incidents of 1 to 6 reviewed photos each and 60 reviewed photos without incident."""
    settings = _settings(tmp_path / "data")
    engine = engine_from_settings(settings)
    migrate(engine)
    sessions, photos = session_factory(engine), PhotoStore(settings.photo_dir)
    seed = itertools.count()
    with write_session(sessions) as session:
        for k in range(30):
            lat, lon = moved(*STRASBOURG, north_m=500.0 * k)
            incident = Incident(family="waste", label="dumped_waste", status="new", lat=lat, lon=lon,
                                first_seen=T0, last_seen=T0, max_score=0.9, report_count=0)
            session.add(incident)
            session.flush()
            for _ in range(1 + k % 6):
                _report(session, photos, next(seed), moved(lat, lon, east_m=3), T0, incident.id)
        for k in range(60):  # 20 cells, each over 3 weeks... and a few photos per cell and week
            place = moved(*STRASBOURG, east_m=1000.0 * (k % 20))
            _report(session, photos, next(seed), place, T0 + timedelta(days=7 * (k % 3), hours=k), None)
    try:
        yield sessions, photos
    finally:
        engine.dispose()


_BOX = {"label": "dumped_waste", "xyxy": [240, 160, 320, 240], "detection": None}


def _report(
    session: Session,
    photos: PhotoStore,
    seed: int,
    place: tuple[float, float],
    at: datetime,
    incident_id: int | None,
    *,
    client: str = "key:1",
    review: bool = True,
    deposit: bool | None = None,
    reviewed_at: datetime | None = None,
    agent_says_deposit: bool = False,
) -> int:
    """A report of photo ``seed`` (the same seed: the same photo) straight into the store; its id.

    The model saw a deposit when it has an incident, unless the agent sent it anyway. Reviewed when
    ``review``: a deposit box when ``deposit`` (default: it has an incident), else no box.
    """
    data = f"photo {seed}".encode()  # the export copies the stored bytes; it never decodes them
    sha = hashlib.sha256(data).hexdigest()
    path = photos.path(sha, "jpg")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    model_saw = incident_id is not None and not agent_says_deposit
    report = Report(
        client_ref=client, submitted_by="test", sha256=sha, photo_ext="jpg", received_at=at, observed_at=at,
        dumping=model_saw, score=0.9 if model_saw else 0.0, lat=place[0], lon=place[1], location_source="client",
        model_sha256="m" * 64, image={"width": 640, "height": 480},
        detections=[{"label": "dumped_waste", "box": [240, 160, 320, 240]}] if model_saw else [], verdict={},
        location={}, model={}, incident_id=incident_id, agent_says_deposit=agent_says_deposit,
    )
    session.add(report)
    session.flush()
    deposit = incident_id is not None if deposit is None else deposit
    if review:
        session.add(ReportReview(report_id=report.id, reviewer="test", reviewed_at=reviewed_at or at, deposit=deposit,
                                 boxes=[_BOX] if deposit else [], source="review"))
    return report.id


def test_one_incident_and_one_cell_week_never_span_two_splits(
    many: tuple[sessionmaker[Session], PhotoStore], tmp_path: Path
) -> None:
    sessions, photos = many
    fractions = SplitFractions(val=0.2, test=0.1)
    with sessions() as session:
        summary = export_folder(session, photos, tmp_path / "out", fractions=fractions)
    entries = summary.manifest["images"]
    assert len(entries) == sum(1 + k % 6 for k in range(30)) + 60
    splits_of: dict[str, set[str]] = defaultdict(set)
    for entry in entries:
        splits_of[entry["group"]].add(entry["split"])
        if entry["incident_id"] is not None:
            splits_of[f"incident {entry['incident_id']}"].add(entry["split"])
    assert all(len(splits) == 1 for splits in splits_of.values()), splits_of
    groups = summary.manifest["splits"]["groups"]
    assert sum(groups.values()) == 30 + 60  # 20 cells x 3 weeks
    assert set(groups) == {"train", "val", "test"} and groups["train"] > groups["val"] > 0
    # A group keeps its split in a later export with more reviews.
    before = {e["group"]: e["split"] for e in entries}
    with write_session(sessions) as session:
        for k in range(10):
            _report(session, photos, 1000 + k, moved(*STRASBOURG, north_m=-3000.0 * (k + 1)), T0, None)
    with sessions() as session:
        later = export_folder(session, photos, tmp_path / "later", fractions=fractions)
    after = {e["group"]: e["split"] for e in later.manifest["images"]}
    assert len(after) == len(before) + 10
    assert all(after[group] == split for group, split in before.items())


def test_a_photo_sent_by_two_clients_is_exported_once_with_its_latest_review(
    many: tuple[sessionmaker[Session], PhotoStore], tmp_path: Path
) -> None:
    sessions, photos = many
    here = moved(*STRASBOURG, north_m=-50_000)
    with write_session(sessions) as session:
        first = _report(session, photos, 5000, here, T0, None, deposit=True, reviewed_at=T0 + timedelta(days=2))
        second = _report(session, photos, 5000, here, T0, None, client="key:2", deposit=False,
                         reviewed_at=T0 + timedelta(days=1))
    with sessions() as session:
        summary = export_folder(session, photos, tmp_path / "out", ExportFilter(bbox=_around(here)))
    [entry] = summary.manifest["images"]
    assert entry["report_id"] == first and entry["same_photo_reports"] == [second]
    assert (tmp_path / "out" / entry["label"]).read_text() == f"{DEPOSIT_LINE}\n"  # the later review's


def test_unreviewed_photos_sent_anyway_stay_out_of_the_models_labels(
    many: tuple[sessionmaker[Session], PhotoStore], tmp_path: Path
) -> None:
    sessions, photos = many
    here = moved(*STRASBOURG, north_m=-60_000)
    with write_session(sessions) as session:
        incident = Incident(family="waste", label="dumped_waste", status="new", lat=here[0], lon=here[1],
                            first_seen=T0, last_seen=T0, max_score=0.0, report_count=0, to_review=True)
        session.add(incident)
        session.flush()
        disputed = _report(session, photos, 6000, here, T0, incident.id, review=False, agent_says_deposit=True)
        seen = _report(session, photos, 6001, here, T0, incident.id, review=False)
        settled = _report(session, photos, 6002, here, T0, incident.id, agent_says_deposit=True, deposit=True)
    with sessions() as session:
        summary = export_folder(
            session, photos, tmp_path / "out", ExportFilter(bbox=_around(here), include_unreviewed=True)
        )
    labels = {e["report_id"]: e["labels"] for e in summary.manifest["images"]}
    assert labels == {seen: "model", settled: "review"} and disputed not in labels


def _around(place: tuple[float, float]) -> Bbox:
    (lat0, lon0), (lat1, lon1) = moved(*place, -50, -50), moved(*place, 50, 50)
    return Bbox(lon0, lat0, lon1, lat1)


def test_the_command_exports_from_its_data_folder(
    many: tuple[sessionmaker[Session], PhotoStore], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["dataset", "export", str(out), "--data-dir", str(tmp_path / "data"), "--test-fraction", "0.1"]
    )
    assert result.exit_code == 0, result.output + result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["images"]) == 165 and manifest["splits"]["test_fraction"] == 0.1
    assert f"dataset hash {manifest['dataset_hash']}" in result.stdout
    assert manifest["dataset_hash"] == folder_hash(out)
    assert yaml.safe_load((out / "data.yaml").read_text())["test"] == "images/test"


# --------------------------------------------------------------------------------------------------
# The pure parts


@pytest.mark.parametrize(
    ("xyxy", "line"),
    [
        ((240, 160, 320, 240), DEPOSIT_LINE),
        ((0, 0, 640, 480), "0 0.500000 0.500000 1.000000 1.000000"),
        ((-20, -10, 80, 80), "0 0.062500 0.083333 0.125000 0.166667"),  # clipped to the photo
        ((600, 400, 700, 500), "0 0.968750 0.916667 0.062500 0.166667"),
        ((100, 100, 100, 200), None),  # no width
        ((700, 100, 800, 200), None),  # outside the photo
    ],
)
def test_label_line(xyxy: tuple[float, float, float, float], line: str | None) -> None:
    assert label_line(0, xyxy, Size(640, 480)) == line


def _sample(lat: float, lon: float, at: datetime, incident_id: int | None = None) -> Sample:
    return Sample(report_id=1, sha256="0" * 64, photo_ext="jpg", size=Size(640, 480), lat=lat, lon=lon,
                  observed_at=at, incident_id=incident_id, model_sha256="m", labels="review",
                  boxes=(LabelBox("bin", (0, 0, 1, 1)),), deposit=False)


def test_group_keys_by_incident_else_place_and_week() -> None:
    monday = datetime(2024, 5, 6, 8, tzinfo=UTC)
    here = _sample(*STRASBOURG, monday)
    assert group_key(_sample(*STRASBOURG, monday, incident_id=7)) == "incident:7"
    assert group_key(_sample(*STRASBOURG, monday, incident_id=7), incident_root=3) == "incident:3"
    assert group_key(here).endswith(":2024-W19")
    assert group_key(_sample(*STRASBOURG, monday + timedelta(days=6))) == group_key(here)  # the same week
    assert group_key(_sample(*STRASBOURG, monday + timedelta(days=7))) != group_key(here)
    assert group_key(_sample(*moved(*STRASBOURG, north_m=300), monday)) != group_key(here)
    assert group_key(_sample(*moved(*STRASBOURG, east_m=300), monday)) != group_key(here)


def test_splits_come_from_the_key_and_never_leave_val_empty() -> None:
    fractions = SplitFractions(val=0.2)
    keys = [f"incident:{k}" for k in range(500)]
    splits = assign_splits(keys, fractions)
    share = sum(s == "val" for s in splits.values()) / len(keys)
    assert 0.14 < share < 0.26 and "test" not in splits.values()
    more = assign_splits([*keys, *(f"incident:{k}" for k in range(500, 600))], fractions)
    assert all(more[k] == splits[k] for k in keys)  # stable as the dataset grows
    assert assign_splits(["incident:1"], fractions) == {"incident:1": "train"}
    two = assign_splits(["incident:1", "incident:2"], fractions)
    assert sorted(two.values()) == ["train", "val"]
    three = assign_splits(["a", "b", "c"], SplitFractions(val=0.2, test=0.1))
    assert sorted(three.values()) == ["test", "train", "val"]
    assert set(assign_splits(["a", "b", "c"], SplitFractions(val=0.0)).values()) == {"train"}


@pytest.mark.parametrize(("val", "test"), [(-0.1, 0.0), (1.0, 0.0), (0.5, 0.5), (0.2, 1.0)])
def test_fractions_must_leave_some_for_train(val: float, test: float) -> None:
    with pytest.raises(ValueError, match="val \\+ test < 1"):
        SplitFractions(val=val, test=test)


def test_filters_need_aware_times() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ExportFilter(since=datetime(2024, 5, 1))


# --------------------------------------------------------------------------------------------------
# Ultralytics reads it


@pytest.mark.train
def test_ultralytics_accepts_the_folder_and_the_zip(store: Store, tmp_path: Path) -> None:
    pytest.importorskip("ultralytics")
    from training.offline import ensure_offline

    ensure_offline()
    from ultralytics.data.utils import check_det_dataset

    out = tmp_path / "city"
    exported(store.server.data_dir, out)
    data = check_det_dataset(str(out / "data.yaml"))
    assert data["nc"] == 3 and data["names"] == NAMES
    assert Path(data["train"]) == out.resolve() / "images" / "train"
    # Its dataset class reads every photo and label file as training would: boxes, classes, upright sizes.
    from ultralytics.data.dataset import YOLODataset

    read = [
        label
        for split in ("train", "val")
        if any(Path(data[split]).iterdir())
        for label in YOLODataset(img_path=data[split], data=data, augment=False, batch_size=1).labels
    ]
    assert len(read) == 4 and sum(len(label["cls"]) for label in read) == 3
    assert sorted(int(c) for label in read for c in label["cls"].ravel()) == [0, 1, 2]
    assert all(label["shape"] in {(480, 640), (240, 320)} for label in read)
    assert folder_hash(out) == json.loads((out / "manifest.json").read_text())["dataset_hash"]  # caches aside

    answer = export_http(store.server)
    with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
        archive.extractall(tmp_path / "unzipped")
    root = tmp_path / "unzipped" / "vipare-dataset"
    zipped = check_det_dataset(str(root / "data.yaml"))
    assert Path(zipped["val"]) == root.resolve() / "images" / "val"


@pytest.mark.train
def test_labels_fit_the_pixels_ultralytics_reads_from_a_rotated_photo(tmp_path: Path, detector: Detector) -> None:
    """A phone photo stored sideways with EXIF orientation 6: the label, normalised to the upright
    photo, frames the deposit in the image Ultralytics loads from the stored file."""
    pytest.importorskip("ultralytics")
    from training.offline import ensure_offline

    ensure_offline()
    from ultralytics.utils.patches import imread

    upright = pattern_array(PHOTO_SIZE)
    column, row = DEPOSIT_CELL
    upright[CELL * row : CELL * (row + 1), CELL * column : CELL * (column + 1)] = MAGENTA
    sideways = make_photo("JPEG", array=np.ascontiguousarray(np.rot90(upright, k=1)), orientation=6, quality=95)
    with server_at(tmp_path / "data", detector) as server:
        report = upload(server, sideways, STRASBOURG, T0)
        assert report["detections"][0]["box"] == list(DEPOSIT_BOX)  # boxes in upright pixels
        review(server, report["id"], {"deposit": True, "boxes": [{"detection": 0}]})
        [entry] = exported(server.data_dir, tmp_path / "out")["images"]
    image = imread(str(tmp_path / "out" / entry["image"]))  # BGR, orientation applied as in training
    assert image is not None and image.shape[:2] == (480, 640)
    line = (tmp_path / "out" / entry["label"]).read_text().split()
    assert line == DEPOSIT_LINE.split()
    cx, cy, w, h = (float(v) for v in line[1:])
    x1, y1 = round((cx - w / 2) * image.shape[1]), round((cy - h / 2) * image.shape[0])
    x2, y2 = round((cx + w / 2) * image.shape[1]), round((cy + h / 2) * image.shape[0])
    inside = image[y1 + 4 : y2 - 4, x1 + 4 : x2 - 4].reshape(-1, 3).mean(axis=0)
    assert np.allclose(inside, MAGENTA[::-1], atol=12), inside  # magenta in BGR


"""The dataset export (:mod:`serving.dataset`, ``vipare dataset export``): splits by place and time over
many reviewed reports, labels, which photos."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy.orm import Session, sessionmaker

from serving.config import ServiceSettings
from serving.dataset import (
    ExportFilter,
    LabelBox,
    Sample,
    SplitFractions,
    assign_splits,
    export_folder,
    folder_hash,
    group_key,
    label_line,
)
from serving.db import engine_from_settings, migrate, session_factory, write_session
from serving.models import Incident, Report, ReportReview
from serving.photos.store import PhotoStore
from serving.queries import Bbox
from tests.serving.helpers import moved
from vipare.cli import main
from vipare.size import Size

STRASBOURG = (48.5734, 7.7521)
T0 = datetime(2024, 5, 6, 10, 0, tzinfo=UTC)
NAMES = {0: "dumped_waste", 1: "overflowing_bin", 2: "bin"}
DEPOSIT_LINE = "0 0.437500 0.416667 0.125000 0.166667"
"""The stand-in model's deposit box (240, 160, 320, 240) in a 640 x 480 photo: centre (280, 200), 80 x 80 px."""
_seed = itertools.count(9000)


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

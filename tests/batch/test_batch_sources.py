"""Batch sources: folders, zips and globs; cameras from frames.csv or folders; times from file names."""

from __future__ import annotations

import zipfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from serving.batch.sources import Frame, SourceError, open_source
from serving.batch.times import parse_timestamp, parse_tz, time_from_name
from tests.imagegen import make_photo

PARIS = parse_tz("Europe/Paris")


def _write(root: Path, name: str, data: bytes | str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """cam-a/ and cam-b/ folders, a top-level frame, clutter, and a frames.csv that overrides one frame."""
    root = tmp_path / "src"
    photo = make_photo("JPEG", (32, 24))
    for name in ("cam-a/20240501_093000.jpg", "cam-a/20240501_094000.JPG", "cam-b/day1/x.png", "loose.jpg"):
        _write(root, name, photo)
    _write(root, "cam-a/.thumbs/hidden.jpg", photo)
    _write(root, ".trash/old.jpg", photo)
    _write(root, "cam-b/notes.txt", "not a frame")
    _write(root, "frames.csv", "file,camera_id,captured_at,lat,lon\n"
                               "cam-b/day1/x.png,truck-1,2024-05-01T10:00:00,49.1,6.2\n"
                               "./gone.jpg,cam-a,,,\n")
    return root


def _by_name(frames: list[Frame]) -> dict[str, Frame]:
    return {frame.name: frame for frame in frames}


def test_a_folder_gives_its_frames_in_name_order_with_their_cameras(folder: Path) -> None:
    source = open_source(str(folder), default_camera="cam-z", tz=PARIS)
    assert source.kind == "folder" and source.sidecar == str(folder / "frames.csv")
    names = [f.name for f in source.frames]
    assert names == sorted(names) == [
        "cam-a/20240501_093000.jpg", "cam-a/20240501_094000.JPG", "cam-b/day1/x.png", "gone.jpg", "loose.jpg"
    ]
    frames = _by_name(source.frames)
    assert frames["cam-a/20240501_093000.jpg"].camera_id == "cam-a"  # folder per camera
    assert frames["loose.jpg"].camera_id == "cam-z"  # --camera
    listed = frames["cam-b/day1/x.png"]  # frames.csv wins over the folder
    assert listed.camera_id == "truck-1"
    assert listed.captured_at == datetime(2024, 5, 1, 8, 0, tzinfo=UTC)  # 10:00 in Paris (CEST)
    assert listed.client is not None and (listed.client.lat, listed.client.lon) == (49.1, 6.2)
    assert frames["gone.jpg"].ref is None  # listed, but no such file: the job reports missing_file


def test_without_sidecar_or_default_camera_a_top_level_frame_has_no_camera(folder: Path) -> None:
    (folder / "frames.csv").unlink()
    frames = _by_name(open_source(str(folder), tz=UTC).frames)
    assert frames["loose.jpg"].camera_id is None
    assert frames["cam-b/day1/x.png"].camera_id == "cam-b"


def test_a_zip_gives_its_members_and_reads_its_own_frames_csv(folder: Path, tmp_path: Path) -> None:
    archive = tmp_path / "frames.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder).as_posix())
        zf.writestr("__MACOSX/cam-a/._20240501_093000.jpg", b"resource fork")
    source = open_source(str(archive), tz=UTC)
    assert source.kind == "zip" and source.sidecar == f"{archive}!frames.csv"
    frames = _by_name(source.frames)
    assert set(frames) == {"cam-a/20240501_093000.jpg", "cam-a/20240501_094000.JPG", "cam-b/day1/x.png",
                           "gone.jpg", "loose.jpg"}
    ref = frames["cam-a/20240501_093000.jpg"].ref
    assert ref is not None and ref.member == "cam-a/20240501_093000.jpg" and ref.path == str(archive)
    assert frames["cam-b/day1/x.png"].camera_id == "truck-1"


def test_a_glob_uses_the_frames_csv_at_its_root_for_the_frames_it_picks(folder: Path) -> None:
    source = open_source(f"{folder}/*/day1/*.png", tz=UTC)
    assert source.sidecar == str(folder / "frames.csv")
    assert [(f.name, f.camera_id) for f in source.frames] == [("cam-b/day1/x.png", "truck-1")]  # no gone.jpg


def test_a_glob_is_relative_to_its_leading_folder(folder: Path, tmp_path: Path) -> None:
    sidecar = _write(tmp_path, "elsewhere.csv", "file,camera_id\ncam-a/20240501_093000.jpg,cam-c\n")
    source = open_source(f"{folder}/cam-*/**/*.jpg", sidecar=sidecar, tz=UTC)
    assert source.kind == "glob" and source.root == str(folder)
    frames = _by_name(source.frames)
    assert set(frames) == {"cam-a/20240501_093000.jpg"}  # glob is case-sensitive; hidden folder left out
    assert frames["cam-a/20240501_093000.jpg"].camera_id == "cam-c"


def test_a_source_that_matches_nothing_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no image file matches"):
        open_source(str(tmp_path / "nothing-*.jpg"), tz=UTC)


@pytest.mark.parametrize(
    ("csv_text", "problem"),
    [
        ("name,camera_id\nx.jpg,cam-a\n", "header must name"),
        ("file,camera_id,speed\nx.jpg,cam-a,3\n", "unknown: speed"),
        ("file,camera_id\nx.jpg,cam a\n", "is not a camera id"),
        ("file,camera_id,lat,lon\nx.jpg,cam-a,49.1,\n", "both lat and lon"),
        ("file,camera_id,lat,lon\nx.jpg,cam-a,91,6\n", "out of range"),
        ("file,camera_id,lat,lon\nx.jpg,cam-a,north,6\n", "must be numbers"),
        ("file,camera_id,captured_at\nx.jpg,cam-a,yesterday\n", "line 2: captured_at"),
        ("file,camera_id\nx.jpg,cam-a\n./x.jpg,cam-b\n", "line 3: x.jpg is listed twice"),
    ],
)
def test_a_malformed_sidecar_stops_the_job_with_its_line(folder: Path, csv_text: str, problem: str) -> None:
    (folder / "frames.csv").write_text(csv_text)
    with pytest.raises(SourceError, match=problem):
        open_source(str(folder), tz=UTC)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cam12_20240501_093000.jpg", datetime(2024, 5, 1, 9, 30)),
        ("IMG_20240501_093000.jpg", datetime(2024, 5, 1, 9, 30)),
        ("20240501-093000.jpg", datetime(2024, 5, 1, 9, 30)),
        ("20240501093000.png", datetime(2024, 5, 1, 9, 30)),
        ("2024-05-01_09-30-00.jpg", datetime(2024, 5, 1, 9, 30)),
        ("2024-05-01T09:30:00.jpg", datetime(2024, 5, 1, 9, 30)),
        ("2024-05-01 09.jpg", None),  # no time of day
        ("PXL_20240501_093000123.jpg", datetime(2024, 5, 1, 9, 30, 0, 123000)),
        ("cam_20240501_093000.5.jpg", datetime(2024, 5, 1, 9, 30, 0, 500000)),
        ("cam-a/2023/notes_20240230_093000.jpg", None),  # 30 February; folders are not searched
        ("frame_00001.jpg", None),
        ("12024050109300099.jpg", None),  # digits run on at both ends
        ("20240501_0930.jpg", None),  # no seconds
    ],
)
def test_naive_times_in_file_names_are_read_in_the_given_zone(name: str, expected: datetime | None) -> None:
    found = time_from_name(name, PARIS)
    if expected is None:
        assert found is None
    else:
        assert found == expected.replace(tzinfo=PARIS).astimezone(UTC)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cam_20240501_093000Z.jpg", datetime(2024, 5, 1, 9, 30, tzinfo=UTC)),
        ("cam_2024-05-01T09:30:00+02:00.jpg", datetime(2024, 5, 1, 7, 30, tzinfo=UTC)),
        ("cam_20240501_093000-05:00.jpg", datetime(2024, 5, 1, 14, 30, tzinfo=UTC)),
        ("cam_20240501_093000+0530.jpg", datetime(2024, 5, 1, 4, 0, tzinfo=UTC)),
        ("cam_20240501_093000-0001.jpg", datetime(2024, 5, 1, 7, 30, tzinfo=UTC)),  # a sequence number
    ],
)
def test_offsets_in_file_names_win_over_the_zone(name: str, expected: datetime) -> None:
    assert time_from_name(name, PARIS) == expected


def test_zones_and_timestamps() -> None:
    assert parse_tz("UTC") is UTC
    assert parse_tz("+02:00") == timezone(timedelta(hours=2))
    with pytest.raises(ValueError, match="unknown time zone"):
        parse_tz("Mars/Olympus")
    assert parse_timestamp("2024-05-01T09:30:00Z", PARIS) == datetime(2024, 5, 1, 9, 30, tzinfo=UTC)
    assert parse_timestamp("2024-01-01 09:30:00", PARIS) == datetime(2024, 1, 1, 8, 30, tzinfo=UTC)

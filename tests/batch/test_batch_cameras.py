"""The camera registry: camera files (CSV, YAML), validation, add-or-update; error kinds as the service's codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.batch.frames import ERROR_KINDS
from serving.cameras import CameraFileError, CameraSpec, list_cameras, load_camera_file, upsert_cameras
from serving.config import ServiceSettings
from serving.db import engine_from_settings, migrate, session_factory, write_session
from serving.errors import error_status


def test_csv_and_yaml_camera_files_read_the_same(tmp_path: Path) -> None:
    csv_file = tmp_path / "cameras.csv"
    csv_file.write_text("id,lat,lon,heading_deg,description\ncam-1,49.1,6.2,180,\"rue X, bins\"\ntruck-1,,,,\n")
    yaml_file = tmp_path / "cameras.yaml"
    yaml_file.write_text(
        "cameras:\n"
        "  - {id: cam-1, lat: 49.1, lon: 6.2, heading_deg: 180, description: 'rue X, bins'}\n"
        "  - id: truck-1\n"
    )
    expected = [
        CameraSpec(id="cam-1", lat=49.1, lon=6.2, heading_deg=180, description="rue X, bins"),
        CameraSpec(id="truck-1"),
    ]
    assert load_camera_file(csv_file) == expected
    assert load_camera_file(yaml_file) == expected
    bare_list = tmp_path / "list.yml"
    bare_list.write_text("- id: cam-2\n  lat: 49.0\n  lon: 6.0\n")
    assert load_camera_file(bare_list) == [CameraSpec(id="cam-2", lat=49.0, lon=6.0)]


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("c.csv", "id,lat,colour\ncam-1,49,red\n", "unknown: colour"),
        ("c.csv", "lat,lon\n49,6\n", "id required"),
        ("c.csv", "id,lat,lon\ncam-1,49.1,\n", "line 2: .*both lat and lon"),
        ("c.csv", "id,lat,lon\ncam-1,49.1,6\ncam 2,49,6\n", "line 3: id"),
        ("c.csv", "id,lat,lon\ncam-1,0,0\n", "placeholder"),
        ("c.csv", "id,heading_deg\ncam-1,400\n", "heading_deg"),
        ("c.yaml", "cameras: {id: cam-1}\n", "list of cameras"),
        ("c.yaml", "- id: cam-1\n  lat: [1, 2\n", "not valid YAML"),
        ("c.yaml", "- id: cam-1\n  speed: 3\n", "camera #1: speed"),
        ("c.json", "[]", "is .csv or .yaml"),
    ],
)
def test_a_bad_camera_file_says_where_and_what(tmp_path: Path, name: str, text: str, problem: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(CameraFileError, match=problem):
        load_camera_file(path)


def test_upsert_adds_new_cameras_updates_changed_ones_and_leaves_the_rest(tmp_path: Path) -> None:
    engine = engine_from_settings(ServiceSettings(data_dir=tmp_path))
    try:
        migrate(engine)
        sessions = session_factory(engine)
        first = [CameraSpec(id="a", lat=49.0, lon=6.0), CameraSpec(id="b")]
        with write_session(sessions) as session:
            assert upsert_cameras(session, first) == (2, 0)
        with write_session(sessions) as session:
            changed = [CameraSpec(id="a", lat=49.0, lon=6.0), CameraSpec(id="b", description="truck"),
                       CameraSpec(id="c"), CameraSpec(id="c", heading_deg=90)]
            assert upsert_cameras(session, changed) == (1, 1)  # c is added once, with its last spec
        with sessions() as session:
            cameras = {c.id: CameraSpec.of(c) for c in list_cameras(session)}
        assert cameras == {"a": first[0], "b": CameraSpec(id="b", description="truck"),
                           "c": CameraSpec(id="c", heading_deg=90)}
    finally:
        engine.dispose()


def test_batch_error_kinds_are_the_service_error_codes() -> None:
    for error_type, kind in ERROR_KINDS.items():
        status = error_status(error_type("x"))
        assert status is not None and status[1] == kind

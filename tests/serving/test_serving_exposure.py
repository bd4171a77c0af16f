"""What the service exposes beyond its API's answers: its files on disk, the hosts and origins it
serves, the links it writes, its headers, its documentation page and its idle connections."""

from __future__ import annotations

import stat
from pathlib import Path

from serving.config import SQLITE_FILE
from tests.serving.helpers import deposit_photo, server_at
from vipare.detection import Detector

PLACE = (48.1173, -1.6778)  # Rennes: this module's places, away from the other modules'


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_data_files_are_private(tmp_path: Path, detector: Detector, stand_in_model: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)  # left readable by an older version: tightened at start
    with server_at(data, detector) as server:
        assert server.upload(deposit_photo(1, lat=PLACE[0], lon=PLACE[1])).status_code == 201
        promoted = server.client.post(
            "/v1/models", files={"model": ("colour.onnx", stand_in_model.read_bytes(), "application/octet-stream")},
            headers=server.headers("admin"),
        )
        assert promoted.status_code == 201, promoted.text
        folders = [data, *(p for p in data.rglob("*") if p.is_dir())]
        files = [p for p in data.rglob("*") if p.is_file()]
        names = {p.name for p in files}
        assert SQLITE_FILE in names and f"{SQLITE_FILE}-wal" in names
        assert any(p.suffix == ".jpg" for p in files) and any(p.suffix == ".onnx" for p in files)
        assert {str(p.relative_to(data)): oct(_mode(p)) for p in folders if _mode(p) != 0o700} == {}
        assert {str(p.relative_to(data)): oct(_mode(p)) for p in files if _mode(p) != 0o600} == {}

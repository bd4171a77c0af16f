"""A photo store serves one database: the store records its database's id, and another database is refused.

A store's sweep deletes the photos no report of its database refers to, so a second database on the
same folder or bucket (a second host set up with its own database, a move to PostgreSQL pointed at a
new, empty one) would lose the first one's photos: it is stopped before anything is swept, with
what to do.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from serving.cli import serve
from serving.config import ServiceSettings, UnsafeConfigurationError
from serving.models import Installation
from serving.photos.store import OWNER_FILE
from serving.storage import open_storage
from tests.database import store_url
from tests.imagegen import make_photo, pattern_array


def _settings(data_dir: Path, database_folder: Path) -> ServiceSettings:
    database_folder.mkdir(parents=True, exist_ok=True)
    return ServiceSettings(data_dir=data_dir, database_url=store_url(database_folder), blur_photos=False)


def _uid(settings: ServiceSettings) -> str:
    storage = open_storage(settings)
    try:
        with storage.sessions() as session:
            return session.scalars(select(Installation.uid)).one()
    finally:
        storage.close()


def test_a_photo_folder_records_its_database_and_refuses_another(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first, second = _settings(data, tmp_path / "first"), _settings(data, tmp_path / "second")
    photo = make_photo("JPEG", array=pattern_array((64, 48), "noise", seed=3))
    sha256 = hashlib.sha256(photo).hexdigest()
    storage = open_storage(first)
    try:
        storage.photos.put(photo, sha256, "jpg")
        with storage.sessions() as session:
            ours = session.scalars(select(Installation.uid)).one()
    finally:
        storage.close()
    marker = first.photo_dir / OWNER_FILE
    assert marker.read_text().strip() == ours and len(ours) == 32

    with pytest.raises(UnsafeConfigurationError, match="holds the photos of another vipare database") as refused:
        open_storage(second)
    assert ours in str(refused.value) and OWNER_FILE in str(refused.value)
    assert (first.photo_dir / sha256[:2] / f"{sha256}.jpg").exists()  # nothing swept
    assert _uid(first) == ours  # its own database opens it as before

    marker.unlink()  # the operator hands the store over, as the message says
    assert _uid(second) != ours and marker.read_text().strip() == _uid(second)


def test_vipare_serve_stops_with_what_to_do_before_starting_a_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HOST", "PORT", "WORKERS", "DATA_DIR", "LOG_LEVEL"):  # serve hands its options down in these
        monkeypatch.setenv(f"VIPARE_{name}", "unset")
        monkeypatch.delenv(f"VIPARE_{name}")
    data = tmp_path / "data"
    _uid(_settings(data, tmp_path / "first"))
    second = _settings(data, tmp_path / "second")
    env = {"VIPARE_DATA_DIR": str(data), "VIPARE_DATABASE_URL": second.resolved_database_url}
    # An address of no interface here: were the check missing, the server would fail to bind, not serve.
    result = CliRunner().invoke(serve, ["--host", "203.0.113.1", "--port", "8765"], env=env)
    assert result.exit_code == 1, result.output
    assert "holds the photos of another vipare database" in result.output
    assert "VIPARE_DATABASE_URL" in result.output and "Traceback" not in result.output

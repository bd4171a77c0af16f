"""Stored photos: GPS blanked in place (picture and other tags kept), atomic writes, orphans, annotated copies."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.ExifTags import IFD, Base

from serving.photos.metadata import clean_metadata
from serving.photos.render import render_annotated
from serving.photos.store import PhotoStore
from tests.imagegen import make_photo
from vipare.imaging import load_image

TAKEN = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "HEIF"])
def test_gps_is_blanked_in_place(fmt: str) -> None:
    photo = make_photo(fmt, (96, 64), lat=49.1193, lon=-6.1757, altitude=180.0, hpos_error=4.0, orientation=6,
                       captured_at=TAKEN, gps_time=TAKEN, pattern="noise")
    stripped = clean_metadata(photo)
    assert len(stripped) == len(photo)
    before, after = load_image(photo), load_image(stripped)
    assert before.gps is not None and after.gps is None
    assert np.array_equal(before.array, after.array)
    assert after.info.orientation == before.info.orientation
    with Image.open(io.BytesIO(stripped)) as img:
        exif = img.getexif()
        assert exif.get_ifd(IFD.GPSInfo) == {}
        assert exif.get_ifd(IFD.Exif).get(Base.DateTimeOriginal) == "2024:05:01 09:30:00"


def test_a_photo_without_gps_is_kept_as_it_is() -> None:
    photo = make_photo("JPEG", (64, 48), captured_at=TAKEN)
    assert clean_metadata(photo) is photo


def test_an_exif_block_that_cannot_be_walked_is_re_encoded(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: object) -> bool:
        raise ValueError("EXIF offset out of bounds")

    monkeypatch.setattr("serving.photos.metadata._blank_gps_ifd", broken)
    photo = make_photo("JPEG", (64, 48), lat=49.1, lon=6.2)
    stripped = clean_metadata(photo)
    assert load_image(stripped).gps is None
    assert load_image(stripped).array.shape == load_image(photo).array.shape


def test_the_store_writes_once_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = PhotoStore(tmp_path / "photos")
    photo = make_photo("JPEG", (64, 48), lat=49.1, lon=6.2)
    sha = "ab" + "1" * 62
    assert store.put(photo, sha, "jpg") is True
    assert store.put(photo, sha, "jpg") is False
    assert [p.name for p in store.files()] == [f"{sha}.jpg"]
    assert load_image(store.path(sha, "jpg")).gps is None


def fsynced(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The inodes ``os.fsync`` is called on from now on (the calls still happen)."""
    inodes: list[int] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        inodes.append(os.fstat(fd).st_ino)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return inodes


def test_a_durable_put_syncs_the_file_its_folder_and_a_new_folders_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = PhotoStore(tmp_path / "photos")
    synced = fsynced(monkeypatch)
    sha = "ab" + "1" * 62
    assert store.put(make_photo("JPEG", (64, 48)), sha, "jpg") is True
    path = store.path(sha, "jpg")
    assert synced == [path.stat().st_ino, path.parent.stat().st_ino, store.root.stat().st_ino]


def test_a_put_without_fsync_is_on_disk_once_synced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = PhotoStore(tmp_path / "photos")
    photo = make_photo("JPEG", (64, 48), lat=49.1, lon=6.2)
    sha = "cd" + "2" * 62
    synced = fsynced(monkeypatch)
    assert store.put(photo, sha, "jpg", durable=False) is True
    path = store.path(sha, "jpg")
    assert synced == [] and path.read_bytes() == clean_metadata(photo)
    assert [p.name for p in store.files()] == [f"{sha}.jpg"]  # renamed into place, no temporary file left
    store.sync(sha, "jpg")
    assert synced == [path.stat().st_ino, path.parent.stat().st_ino, store.root.stat().st_ino]
    synced.clear()
    assert store.put(photo, sha, "jpg") is False  # already there, maybe not synced yet: a durable put syncs it
    assert synced[:2] == [path.stat().st_ino, path.parent.stat().st_ino]
    with pytest.raises(FileNotFoundError):
        store.sync("ef" + "3" * 62, "jpg")


@pytest.mark.parametrize("durable", [False, True])
def test_a_file_holding_other_bytes_is_written_again(tmp_path: Path, durable: bool) -> None:
    """A power cut can leave a photo put without fsync torn under its name: the next put mends it."""
    store = PhotoStore(tmp_path / "photos")
    photo = make_photo("JPEG", (64, 48), lat=49.1, lon=6.2)
    sha = "ab" + "1" * 62
    store.put(photo, sha, "jpg", durable=False)
    path = store.path(sha, "jpg")
    for torn in (b"", clean_metadata(photo)[:100], b"x" * len(clean_metadata(photo))):
        path.write_bytes(torn)
        assert store.put(photo, sha, "jpg", durable=durable) is True
        assert path.read_bytes() == clean_metadata(photo)
    assert store.put(photo, sha, "jpg", durable=durable) is False


def test_orphans_are_found_in_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = PhotoStore(tmp_path / "photos")
    shas = [f"{i:02x}" + "0" * 62 for i in range(7)]
    for sha in shas:
        store.put(make_photo("PNG", (8, 8)), sha, "png")
    asked: list[int] = []

    def referenced(batch: Sequence[str]) -> set[str]:
        asked.append(len(batch))
        return {s for s in batch if int(s[:2], 16) % 2 == 0}  # even ones have a report

    monkeypatch.setattr("serving.photos.store._ORPHAN_BATCH", 3)
    removed = store.remove_orphans(referenced)
    assert removed == 3 and asked == [3, 3, 1]
    assert sorted(p.name[:2] for p in store.files()) == ["00", "02", "04", "06"]


@pytest.mark.parametrize(
    ("size", "orientation", "expected"),
    [
        ((2600, 1950), None, (1600, 1200)),  # decoded at 1/2 (1300 px) would come out too small
        ((4032, 3024), None, (1600, 1200)),
        ((2600, 1950), 6, (1200, 1600)),  # upright it stands
        ((1200, 900), None, (1200, 900)),  # never enlarged
    ],
)
def test_the_annotated_copy_is_max_side_on_its_long_side(
    tmp_path: Path, size: tuple[int, int], orientation: int | None, expected: tuple[int, int]
) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(make_photo("JPEG", size, orientation=orientation))
    with Image.open(io.BytesIO(render_annotated(path, [], max_side=1600))) as drawn:
        assert drawn.size == expected

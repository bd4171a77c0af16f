"""Stored photos: only what display needs kept (picture, colour profile, orientation), atomic writes, orphans,
annotated copies."""

from __future__ import annotations

import hashlib
import io
import os
import struct
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms
from PIL.ExifTags import IFD, Base
from PIL.PngImagePlugin import PngInfo

from serving.photos.metadata import clean_metadata
from serving.photos.render import render_annotated
from serving.photos.store import EXTENSIONS, PhotoStore
from tests.imagegen import exif_bytes, make_photo, pattern_array
from tests.serving.helpers import Server
from vipare.imaging import load_image

TAKEN = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)


SERIAL, LENS_SERIAL, OWNER, MAKE = "SN4815162342", "LS0815", "Jeanne Dupont", "Vipcam"
MAKER_NOTE = b"VIPCAM-NOTES owner=jdupont body=SN4815162342"
XMP_GPS = (
    '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
    '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about=""'
    ' xmlns:exif="http://ns.adobe.com/exif/1.0/" xmlns:aux="http://ns.adobe.com/exif/1.0/aux/"'
    f' exif:GPSLatitude="49,7.158N" exif:GPSLongitude="6,10.542E" aux:SerialNumber="{SERIAL}"/>'
    '</rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
).encode()
IPTC_CITY = b"Metz-Queuleu"
ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
THUMBNAIL = make_photo("JPEG", (32, 24), pattern="noise", quality=50)
# Strings that name the camera, its owner or the place; none may be left in a cleaned file.
TELLTALES = (
    SERIAL.encode(),
    LENS_SERIAL.encode(),
    OWNER.encode(),
    MAKE.encode(),
    MAKER_NOTE,
    b"GPS",
    b"ns.adobe.com",
    IPTC_CITY,
    b"Photoshop",
    THUMBNAIL[2:200],
)


def revealing_exif(orientation: int) -> bytes:
    """EXIF (TIFF, no header) with GPS, make, owner, body and lens serials, a maker note and an IFD1 thumbnail."""
    exif = Image.Exif()
    exif.load(exif_bytes(lat=49.1193, lon=6.1757, altitude=180.0, gps_time=TAKEN))
    exif[Base.Orientation] = orientation
    exif[Base.Make] = MAKE
    exif[IFD.Exif] = {
        Base.DateTimeOriginal: "2024:05:01 09:30:00",
        Base.BodySerialNumber: SERIAL,
        Base.LensSerialNumber: LENS_SERIAL,
        Base.CameraOwnerName: OWNER,
        Base.MakerNote: MAKER_NOTE,
    }
    tiff = exif.tobytes().removeprefix(b"Exif\x00\x00")
    # Pillow writes no IFD1: chain one after IFD0, holding a JPEG thumbnail, as cameras do.
    order = "<" if tiff[:2] == b"II" else ">"
    (ifd0,) = struct.unpack_from(order + "I", tiff, 4)
    (count,) = struct.unpack_from(order + "H", tiff, ifd0)
    ifd1 = len(tiff) + len(tiff) % 2
    thumbnail_at = ifd1 + 2 + 2 * 12 + 4
    ifd1_bytes = (
        struct.pack(order + "H", 2)
        + struct.pack(order + "HHII", 0x0201, 4, 1, thumbnail_at)  # JPEGInterchangeFormat
        + struct.pack(order + "HHII", 0x0202, 4, 1, len(THUMBNAIL))  # JPEGInterchangeFormatLength
        + struct.pack(order + "I", 0)
    )
    tiff = tiff.ljust(ifd1, b"\x00")
    next_at = ifd0 + 2 + 12 * count
    return tiff[:next_at] + struct.pack(order + "I", ifd1) + tiff[next_at + 4 :] + ifd1_bytes + THUMBNAIL


def revealing_photo(fmt: str, orientation: int = 6, seed: int = 0) -> bytes:
    """A photo carrying every kind of hidden metadata its format can hold, and an ICC profile.

    EXIF as :func:`revealing_exif`, an XMP packet with a GPS position and a serial number; JPEG adds
    a comment, an IPTC city (APP13) and a second picture after its end, PNG text and time chunks.
    """
    img = Image.fromarray(pattern_array((96, 64), "noise", seed=seed))
    exif = b"Exif\x00\x00" + revealing_exif(orientation)
    out = io.BytesIO()
    if fmt == "JPEG":
        img.save(out, "JPEG", exif=exif, xmp=XMP_GPS, icc_profile=ICC, comment=OWNER.encode(), quality=90)
        iptc = b"\x1c\x02\x5a" + struct.pack(">H", len(IPTC_CITY)) + IPTC_CITY
        app13 = b"Photoshop 3.0\x008BIM\x04\x04\x00\x00" + struct.pack(">I", len(iptc)) + iptc
        data = out.getvalue()
        return data[:2] + b"\xff\xed" + struct.pack(">H", len(app13) + 2) + app13 + data[2:] + THUMBNAIL
    if fmt == "PNG":
        text = PngInfo()
        text.add_itxt("XML:com.adobe.xmp", XMP_GPS.decode())
        text.add_text("Author", OWNER)
        text.add(b"tIME", struct.pack(">HBBBBB", 2024, 5, 1, 9, 30, 0))
        img.save(out, "PNG", exif=exif, icc_profile=ICC, pnginfo=text)
    elif fmt == "WEBP":
        img.save(out, "WEBP", exif=exif, xmp=XMP_GPS, icc_profile=ICC, quality=90)
    else:
        pillow_heif = pytest.importorskip("pillow_heif")
        pillow_heif.register_heif_opener()
        img.save(out, "HEIF", exif=exif, xmp=XMP_GPS, icc_profile=ICC, quality=90, thumbnails=[32])
    return out.getvalue()


def assert_only_display_metadata(data: bytes, original: bytes) -> None:
    """``data`` shows ``original``'s picture upright, with its ICC profile and no other metadata."""
    for telltale in TELLTALES:
        assert telltale not in data, telltale
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        exif = img.getexif()
        # HEIF turns the picture by its container's irot box, which stays; its EXIF goes whole
        assert dict(exif) == ({} if img.format == "HEIF" else {Base.Orientation: 6})
        assert all(exif.get_ifd(ifd) == {} for ifd in (IFD.Exif, IFD.GPSInfo, IFD.IFD1, IFD.Interop))
        assert not {"xmp", "XML:com.adobe.xmp", "comment", "photoshop", "Author"} & set(img.info)
        assert img.info.get("icc_profile") == ICC
        assert not img.info.get("thumbnails")
        if img.format == "JPEG":
            kept = [(name, body[:12]) for name, body in img.applist]  # type: ignore[attr-defined]
            assert kept == [
                ("APP0", b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01"),
                ("APP1", b"Exif\x00\x00MM\x00*\x00\x00"),
                ("APP2", b"ICC_PROFILE\x00"),
            ]
    before, after = load_image(original), load_image(data)
    assert before.array.shape == after.array.shape and after.gps is None and after.info.captured_at is None
    assert np.array_equal(before.array, after.array)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "HEIF"])
def test_only_what_display_needs_is_kept(fmt: str) -> None:
    photo = revealing_photo(fmt)
    for telltale in (SERIAL.encode(), b"GPS", b"ns.adobe.com"):  # what the test looks for is there
        assert telltale in photo
    with Image.open(io.BytesIO(photo)) as img:
        assert img.getexif().get_ifd(IFD.GPSInfo) and img.getexif().get_ifd(IFD.Exif)[Base.BodySerialNumber]
    assert_only_display_metadata(clean_metadata(photo), photo)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "HEIF"])
def test_a_cleaned_photo_is_kept_as_it_is(fmt: str) -> None:
    cleaned = clean_metadata(revealing_photo(fmt))
    assert clean_metadata(cleaned) is cleaned


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "HEIF"])
def test_a_photo_without_metadata_is_kept_as_it_is(fmt: str) -> None:
    if fmt == "HEIF":
        pytest.importorskip("pillow_heif")
    photo = make_photo(fmt, (64, 48))
    assert clean_metadata(photo) is photo


def test_a_heic_loses_its_thumbnails_with_their_alpha_and_keeps_its_other_images() -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    rng = np.random.default_rng(1)
    first = Image.fromarray(rng.integers(0, 256, (64, 96, 4), dtype=np.uint8))  # alpha: an auxiliary image
    second = Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    out = io.BytesIO()
    first.save(
        out,
        "HEIF",
        exif=b"Exif\x00\x00" + revealing_exif(1),
        xmp=XMP_GPS,
        thumbnails=[32, 48],
        save_all=True,
        append_images=[second],
    )
    photo = out.getvalue()
    cleaned = clean_metadata(photo)
    for telltale in TELLTALES:
        assert telltale not in cleaned
    with Image.open(io.BytesIO(photo)) as before, Image.open(io.BytesIO(cleaned)) as after:
        assert getattr(after, "n_frames", 1) == 2 and not after.info.get("thumbnails") and after.mode == "RGBA"
        assert np.array_equal(np.asarray(before), np.asarray(after))
        before.seek(1)
        after.seek(1)
        assert np.array_equal(np.asarray(before), np.asarray(after))


def test_a_heic_that_cannot_be_rewritten_is_re_encoded_upright_the_same_way_each_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The store compares a file's bytes with what it would write: a re-encoding must repeat."""

    def broken(_data: bytes) -> bytes:
        raise ValueError("entity groups")

    monkeypatch.setattr("serving.photos.metadata.strip_heif_items", broken)
    photo = revealing_photo("HEIF")
    cleaned = clean_metadata(photo)
    assert cleaned == clean_metadata(photo) != photo
    for telltale in TELLTALES:
        assert telltale not in cleaned
    with Image.open(io.BytesIO(cleaned)) as img:
        assert dict(img.getexif()) == {} and not img.info.get("thumbnails") and "xmp" not in img.info
        assert img.info.get("icc_profile") == ICC
    before, after = load_image(photo), load_image(cleaned)
    assert after.array.shape == before.array.shape
    assert np.abs(before.array.astype(int) - after.array).mean() < 8  # lossy, at high quality


def test_an_orientation_only_in_xmp_becomes_the_exif_tag() -> None:
    out = io.BytesIO()
    xmp = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>'
    )
    Image.fromarray(pattern_array((64, 48))).save(out, "JPEG", xmp=xmp)
    photo = out.getvalue()
    cleaned = clean_metadata(photo)
    assert b"xmpmeta" not in cleaned
    assert load_image(cleaned).info.size == load_image(photo).info.size == (48, 64)
    assert np.array_equal(load_image(cleaned).array, load_image(photo).array)


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_a_container_that_cannot_be_walked_is_re_encoded(fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: object) -> bytes:
        raise ValueError("segment out of bounds")

    monkeypatch.setattr(f"serving.photos.metadata._clean_{fmt.lower()}", broken)
    photo = revealing_photo(fmt)
    cleaned = clean_metadata(photo)
    assert cleaned != photo
    for telltale in TELLTALES:
        assert telltale not in cleaned
    with Image.open(io.BytesIO(cleaned)) as img:
        assert dict(img.getexif()) == {Base.Orientation: 6} and img.info.get("icc_profile") == ICC
    assert load_image(cleaned).array.shape == load_image(photo).array.shape


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


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "HEIF"])
def test_served_photos_carry_only_what_display_needs(server: Server, fmt: str) -> None:
    photo = revealing_photo(fmt, seed=10 + len(fmt))
    response = server.upload(photo, filename=f"photo.{fmt.lower()}")
    assert response.status_code == 201, response.text
    report = response.json()
    assert report["location"]["source"] == "exif"  # the position was read before it left the file
    served = server.client.get(report["links"]["image"], headers=server.headers("agent"))
    assert served.status_code == 200
    assert_only_display_metadata(served.content, photo)
    stored = server.folder.path(hashlib.sha256(photo).hexdigest(), EXTENSIONS[fmt]).read_bytes()
    assert stored == served.content
    annotated = server.client.get(report["links"]["annotated_image"], headers=server.headers("manager"))
    assert annotated.status_code == 200
    for telltale in TELLTALES:
        assert telltale not in annotated.content
    with Image.open(io.BytesIO(annotated.content)) as drawn:
        assert dict(drawn.getexif()) == {} and "xmp" not in drawn.info
        assert drawn.size == (report["image"]["width"], report["image"]["height"]) == (64, 96)

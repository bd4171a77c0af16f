"""Removing a photo's EXIF GPS position from its file, byte for byte.

The store keeps no position in the photos it holds (the position lives in the database, with its
source and accuracy). :func:`clean_metadata` empties the GPS block in place, so the picture and every
other tag are untouched (JPEG, WebP, HEIF and PNG, whose chunk checksum is recomputed). Only if the
EXIF cannot be walked is the picture re-encoded without GPS (lossy for JPEG, WebP and HEIF, at high
quality).
"""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image
from PIL.ExifTags import IFD

from vipare.geotag import gps_from_exif

__all__ = ["clean_metadata"]

_GPS_IFD_TAG = 0x8825
_EXIF_HEADER = b"Exif\x00\x00"
_TIFF_HEADERS = (b"II*\x00", b"MM\x00*")
# Bytes per value of each TIFF field type (EXIF 2.32 and BigTIFF's 8-byte types).
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}


def clean_metadata(data: bytes) -> bytes:
    """The photo with its EXIF GPS block emptied; ``data`` itself when it has none.

    The GPS directory's entries and the values they point to are overwritten with zeros and its
    entry count set to 0, in place: the file keeps its length, its picture and its other tags. For
    a JPEG every EXIF segment is treated (a multi-picture file has one per picture).

    Args:
        data: a photo vipare accepted (JPEG, PNG, WebP or HEIF).

    Returns:
        The file's bytes without a GPS position.
    """
    with Image.open(io.BytesIO(data)) as img:
        raw = img.info.get("exif")
        has_gps = bool(img.getexif().get_ifd(IFD.GPSInfo))
        fmt = img.format
    if not has_gps:
        return data
    buf = bytearray(data)
    try:
        blocks = _tiff_blocks(buf, raw if isinstance(raw, bytes) else b"", jpeg=fmt in ("JPEG", "MPO"))
        patched = [_blank_gps_ifd(buf, start, end) for start, end in blocks]
        if fmt == "PNG":
            _fix_png_checksums(buf)
        if any(patched) and not _has_gps(bytes(buf)):
            return bytes(buf)
    except (ValueError, struct.error):
        pass  # an EXIF block that cannot be walked: re-encode below
    return _reencode_without_gps(data)


def _tiff_blocks(buf: bytearray, raw_exif: bytes, *, jpeg: bool) -> list[tuple[int, int]]:
    """(start, end) of each EXIF TIFF structure in the file."""
    blocks: dict[int, int] = {}  # start -> end
    data = bytes(buf)
    tiff = raw_exif[len(_EXIF_HEADER) :] if raw_exif.startswith(_EXIF_HEADER) else raw_exif
    if tiff[:4] in _TIFF_HEADERS:
        start = _find_near_copy(data, tiff)
        if start >= 0:
            blocks[start] = start + len(tiff)
    if jpeg:  # APP1 "Exif" segments: FF E1, 2-byte length, "Exif\0\0", TIFF
        marker = b"\xff\xe1"
        at = data.find(marker)
        while at >= 0:
            if buf[at + 4 : at + 10] == _EXIF_HEADER and bytes(buf[at + 10 : at + 14]) in _TIFF_HEADERS:
                (length,) = struct.unpack_from(">H", buf, at + 2)
                blocks[at + 10] = min(len(buf), at + 2 + length)
            at = data.find(marker, at + 2)
    return sorted(blocks.items())


def _find_near_copy(data: bytes, block: bytes, max_differences: int = 8) -> int:
    """Where ``block`` is in ``data``, allowing a few changed bytes; -1 when absent.

    pillow-heif hands back the EXIF with the orientation tag reset (it moved it into the container),
    so the copy in the file may differ from what Pillow reports by that one value.
    """
    exact = data.find(block)
    if exact >= 0:
        return exact
    at = data.find(block[:8])
    while at >= 0:
        candidate = data[at : at + len(block)]
        if len(candidate) == len(block):
            differences = sum(a != b for a, b in zip(candidate, block, strict=True))
            if differences <= max_differences:
                return at
        at = data.find(block[:8], at + 1)
    return -1


def _blank_gps_ifd(buf: bytearray, start: int, end: int) -> bool:
    """Zero the GPS directory of the TIFF structure ``buf[start:end]``; True when there was one."""
    order = "<" if buf[start : start + 2] == b"II" else ">"

    def field(offset: int, fmt: str) -> int:
        if offset < 0 or start + offset + struct.calcsize(fmt) > end:
            raise ValueError("EXIF offset out of bounds")
        value: int = struct.unpack_from(order + fmt, buf, start + offset)[0]
        return value

    def zero(offset: int, size: int) -> None:
        if offset < 0 or start + offset + size > end:
            raise ValueError("EXIF offset out of bounds")
        buf[start + offset : start + offset + size] = bytes(size)

    ifd0 = field(4, "I")
    gps = None
    for i in range(field(ifd0, "H")):
        if field(ifd0 + 2 + 12 * i, "H") == _GPS_IFD_TAG:
            gps = field(ifd0 + 2 + 12 * i + 8, "I")
    if gps is None:
        return False
    count = field(gps, "H")
    for j in range(count):
        entry = gps + 2 + 12 * j
        size = _TYPE_SIZES.get(field(entry + 2, "H"), 1) * field(entry + 4, "I")
        if size > 4:  # the value lives elsewhere; the entry holds its offset
            zero(field(entry + 8, "I"), size)
    zero(gps, 2 + 12 * count + 4)  # count 0, no entries, no next directory
    return True


def _fix_png_checksums(buf: bytearray) -> None:
    """Recompute the CRC of every eXIf chunk (its data changed)."""
    at = 8
    while at + 12 <= len(buf):
        length, kind = struct.unpack_from(">I4s", buf, at)
        end = at + 8 + length
        if end + 4 > len(buf):
            raise ValueError("truncated PNG chunk")
        if kind == b"eXIf":
            struct.pack_into(">I", buf, end, zlib.crc32(buf[at + 4 : end]))
        at = end + 4


def _has_gps(data: bytes) -> bool:
    with Image.open(io.BytesIO(data)) as img:
        exif = img.getexif()
        return bool(exif.get_ifd(IFD.GPSInfo)) or gps_from_exif(exif) is not None


def _reencode_without_gps(data: bytes) -> bytes:
    """Fallback: decode and save again, same format, EXIF without GPS (lossy except for PNG)."""
    with Image.open(io.BytesIO(data)) as img:
        fmt = "JPEG" if img.format == "MPO" else img.format or "JPEG"
        exif = img.getexif()
        exif.pop(_GPS_IFD_TAG, None)
        options: dict[str, object] = {"exif": exif.tobytes()}
        if img.info.get("icc_profile"):
            options["icc_profile"] = img.info["icc_profile"]
        if fmt != "PNG":
            options["quality"] = 95
        picture = img.convert("RGB") if fmt == "JPEG" and img.mode not in ("RGB", "L", "CMYK") else img
        out = io.BytesIO()
        picture.save(out, fmt, **options)
    return out.getvalue()

"""EXIF fields read from an opened Pillow image: the orientation and the capture time.

A damaged or missing field reads as absent (orientation 1, no capture time): the pixels are kept
and the metadata dropped. The GPS fix is read by :func:`vipare.geotag.gps_from_exif`. Callers parse
untrusted files, so they hold :func:`vipare.intake.quiet_pillow` around these calls.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from PIL import ExifTags, Image

from vipare.intake import DECODE_ERRORS

__all__ = ["captured_at", "orientation", "read_exif"]

_EXIF_DATETIME = re.compile(r"^(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})$")
_EXIF_OFFSET = re.compile(r"^([+-])(\d{2}):(\d{2})$")


def read_exif(img: Image.Image) -> Image.Exif | None:
    """The image's EXIF, or None when it is too damaged to parse."""
    try:
        return img.getexif()
    except DECODE_ERRORS:  # damaged EXIF: keep the pixels, drop the metadata
        return None


def orientation(img: Image.Image) -> int:
    """The EXIF orientation, 1 to 8; 1 (as stored) when absent or out of range."""
    exif = read_exif(img)
    value = exif.get(ExifTags.Base.Orientation, 1) if exif is not None else 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def captured_at(exif: Image.Exif | None) -> datetime | None:
    """EXIF DateTimeOriginal, with SubSecTimeOriginal and, when present, OffsetTimeOriginal as tzinfo.

    Args:
        exif: from :func:`read_exif`.

    Returns:
        The capture time, naive unless the photo states its UTC offset; None when missing or invalid.
    """
    if exif is None:
        return None
    try:
        tags = exif.get_ifd(ExifTags.IFD.Exif)
    except DECODE_ERRORS:
        return None
    text = _ascii(tags.get(ExifTags.Base.DateTimeOriginal))
    match = _EXIF_DATETIME.match(text) if text else None
    if match is None:  # missing, or blank ("    :  :     :  :  ") as some cameras write
        return None
    year, month, day, hour, minute, second = (int(part) for part in match.groups())
    try:
        when = datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None
    subsec = _ascii(tags.get(ExifTags.Base.SubsecTimeOriginal))
    if subsec and subsec.isdigit():
        when = when.replace(microsecond=int(subsec[:6].ljust(6, "0")))
    offset = _ascii(tags.get(ExifTags.Base.OffsetTimeOriginal))
    offset_match = _EXIF_OFFSET.match(offset) if offset else None
    if offset_match is not None:
        sign = -1 if offset_match[1] == "-" else 1
        delta = timedelta(hours=int(offset_match[2]), minutes=int(offset_match[3]))
        if delta < timedelta(hours=24):
            when = when.replace(tzinfo=timezone(sign * delta))
    return when


def _ascii(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return value.strip("\x00 ") if isinstance(value, str) else None

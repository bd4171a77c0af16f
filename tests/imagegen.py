"""Synthetic test photos as bytes: JPEG, PNG, WebP and HEIF with EXIF written by Pillow.

Plain functions for the tests::

    from tests.imagegen import make_photo, make_png_bomb, truncate

    data = make_photo("JPEG", (640, 480), lat=49.1193, lon=6.1757, orientation=6)

EXIF is built with ``PIL.Image.Exif`` (no piexif): JPEG APP1, PNG eXIf, WebP EXIF chunk, and for HEIF
pillow-heif, which also turns the EXIF orientation into the container's rotation (irot/imir).
"""

from __future__ import annotations

import functools
import io
import math
import struct
import zlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from PIL.ExifTags import GPS, IFD, Base
from PIL.TiffImagePlugin import IFDRational

__all__ = ["exif_bytes", "make_photo", "make_png_bomb", "pattern_array", "truncate"]

Pattern = Literal["gradient", "flat", "noise"]


def pattern_array(size: tuple[int, int], pattern: Pattern = "gradient", seed: int = 0) -> NDArray[np.uint8]:
    """An ``(h, w, 3)`` uint8 RGB picture of ``size = (w, h)``.

    ``gradient``: red grows left to right, green top to bottom, blue constant (cheap to encode, and
    any rotation or flip is visible); ``flat``: mid grey; ``noise``: seeded uniform noise.
    """
    width, height = size
    if pattern == "flat":
        return np.full((height, width, 3), 128, dtype=np.uint8)
    if pattern == "noise":
        return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    array = np.empty((height, width, 3), dtype=np.uint8)
    array[..., 0] = np.linspace(0, 255, width, dtype=np.float32).astype(np.uint8)[np.newaxis, :]
    array[..., 1] = np.linspace(0, 255, height, dtype=np.float32).astype(np.uint8)[:, np.newaxis]
    array[..., 2] = 96
    return array


def _rational(value: float, denominator: int) -> IFDRational:
    return IFDRational(round(value * denominator), denominator)


def _dms(value: float) -> tuple[IFDRational, IFDRational, IFDRational]:
    """Degrees, minutes, seconds of abs(value), the seconds to 1e-4 arcsecond (3e-8 degree)."""
    value = abs(value)
    degrees = math.floor(value)
    minutes_f = (value - degrees) * 60.0
    minutes = math.floor(minutes_f)
    return IFDRational(degrees, 1), IFDRational(minutes, 1), _rational((minutes_f - minutes) * 60.0, 10_000)


def exif_bytes(
    *,
    lat: float | None = None,
    lon: float | None = None,
    altitude: float | None = None,
    orientation: int | None = None,
    hpos_error: float | None = None,
    dop: float | None = None,
    gps_time: datetime | None = None,
    captured_at: datetime | None = None,
    raw_gps: Mapping[int, Any] | None = None,
) -> bytes:
    """EXIF (TIFF-structured, without the ``Exif\\0\\0`` header) for the given tags; b"" when none.

    ``raw_gps`` maps GPS tag numbers to values written as given after the others, e.g.
    ``{GPS.GPSLatitude: (IFDRational(49, 0), 0, 0)}`` for a zero denominator; a value of None
    removes the tag (``{GPS.GPSLatitudeRef: None}`` for a missing reference).
    """
    exif = Image.Exif()
    if orientation is not None:
        exif[Base.Orientation] = orientation

    details: dict[int, Any] = {}
    if captured_at is not None:
        details[Base.DateTimeOriginal] = captured_at.strftime("%Y:%m:%d %H:%M:%S")
        if captured_at.microsecond:
            details[Base.SubsecTimeOriginal] = f"{captured_at.microsecond:06d}"
        offset = captured_at.utcoffset()
        if offset is not None:
            minutes = round(offset.total_seconds() / 60)
            sign = "-" if minutes < 0 else "+"
            details[Base.OffsetTimeOriginal] = f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    if details:
        exif[IFD.Exif] = details

    gps: dict[int, Any] = {}
    if lat is not None:
        gps[GPS.GPSLatitudeRef] = "S" if lat < 0 else "N"
        gps[GPS.GPSLatitude] = _dms(lat)
    if lon is not None:
        gps[GPS.GPSLongitudeRef] = "W" if lon < 0 else "E"
        gps[GPS.GPSLongitude] = _dms(lon)
    if altitude is not None:
        gps[GPS.GPSAltitudeRef] = b"\x01" if altitude < 0 else b"\x00"
        gps[GPS.GPSAltitude] = _rational(abs(altitude), 100)
    if hpos_error is not None:
        gps[GPS.GPSHPositioningError] = _rational(hpos_error, 1000)
    if dop is not None:
        gps[GPS.GPSDOP] = _rational(dop, 1000)
    if gps_time is not None:
        utc = gps_time.astimezone(UTC) if gps_time.tzinfo else gps_time
        gps[GPS.GPSDateStamp] = utc.strftime("%Y:%m:%d")
        seconds = utc.second + utc.microsecond / 1e6
        gps[GPS.GPSTimeStamp] = (
            IFDRational(utc.hour, 1),
            IFDRational(utc.minute, 1),
            _rational(seconds, 1_000_000),
        )
    if gps:
        gps = {GPS.GPSVersionID: b"\x02\x03\x00\x00", **gps}
    for tag, value in (raw_gps or {}).items():
        if value is None:
            gps.pop(tag, None)
        else:
            gps[tag] = value
    if gps:
        exif[IFD.GPSInfo] = gps
    return exif.tobytes() if len(exif) else b""


def make_photo(
    fmt: str = "JPEG",
    size: tuple[int, int] = (64, 48),
    *,
    lat: float | None = None,
    lon: float | None = None,
    altitude: float | None = None,
    orientation: int | None = None,
    hpos_error: float | None = None,
    dop: float | None = None,
    gps_time: datetime | None = None,
    captured_at: datetime | None = None,
    raw_gps: Mapping[int, Any] | None = None,
    pattern: Pattern = "gradient",
    array: NDArray[np.uint8] | None = None,
    mode: str | None = None,
    quality: int = 90,
) -> bytes:
    """Encode a synthetic photo, with EXIF, as the bytes of a file.

    Args:
        fmt: container: JPEG, PNG, WEBP or HEIF (HEIF needs pillow-heif).
        size: ``(width, height)`` of the stored image; ignored when ``array`` is given.
        lat, lon: decimal degrees, written as GPS degrees/minutes/seconds with N/S, E/W references.
        altitude: metres; negative writes GPSAltitudeRef 1 (below sea level).
        orientation: EXIF orientation 1-8. The pixels are stored as given: a viewer (and
            ``load_image``) shows them transposed. For HEIF pillow-heif writes it as irot/imir.
        hpos_error: GPSHPositioningError, metres.
        dop: GPSDOP.
        gps_time: GPSDateStamp + GPSTimeStamp (converted to UTC when aware).
        captured_at: DateTimeOriginal, plus OffsetTimeOriginal when aware and SubSecTimeOriginal.
        raw_gps: GPS tags written verbatim over the others (see :func:`exif_bytes`).
        pattern: picture when no ``array`` is given (see :func:`pattern_array`).
        array: pixels in stored orientation: ``(h, w, 3)`` uint8 RGB, ``(h, w, 4)`` RGBA,
            ``(h, w)`` uint8 greyscale or uint16 (16-bit greyscale, PNG only).
        mode: convert to this Pillow mode before saving ("L", "P", "RGBA", "CMYK", "1", ...).
        quality: JPEG, WebP and HEIF quality; 100 makes WebP lossless.

    Returns:
        The encoded file.
    """
    pixels = pattern_array(size, pattern) if array is None else array
    img = Image.fromarray(np.ascontiguousarray(pixels))
    if mode == "P" and img.mode != "P":  # an adaptive palette keeps the colours exact (up to 256)
        img = img.convert("P", palette=Image.Palette.ADAPTIVE)
    elif mode is not None and img.mode != mode:
        img = img.convert(mode)
    exif = exif_bytes(
        lat=lat,
        lon=lon,
        altitude=altitude,
        orientation=orientation,
        hpos_error=hpos_error,
        dop=dop,
        gps_time=gps_time,
        captured_at=captured_at,
        raw_gps=raw_gps,
    )
    options: dict[str, Any] = {"exif": exif} if exif else {}
    if fmt == "JPEG":
        options["quality"] = quality
    elif fmt == "PNG":
        options["compress_level"] = 1
    elif fmt == "WEBP":
        options.update(quality=quality, lossless=quality >= 100)
    elif fmt == "HEIF":
        import pillow_heif  # the vipare[heic] extra; tests needing it use pytest.importorskip

        pillow_heif.register_heif_opener()
        options["quality"] = quality
    else:
        raise ValueError(f"unknown format {fmt!r}")
    buffer = io.BytesIO()
    img.save(buffer, fmt, **options)
    return buffer.getvalue()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


@functools.lru_cache(maxsize=8)
def make_png_bomb(width: int = 30000, height: int = 30000, *, mode: Literal["1", "L"] = "1") -> bytes:
    """A valid PNG of ``width x height`` black pixels in a small file (0.5 MB at 30000 x 30000, mode 1).

    The zlib stream is fed one batch of rows at a time, so neither the image nor its raw data is
    ever held in memory. Cached: the same arguments return the same bytes object.
    """
    bit_depth = 1 if mode == "1" else 8
    row = bytes(1 + (width * bit_depth + 7) // 8)  # filter byte 0, then black samples
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    compressor = zlib.compressobj(1)
    batch_rows = max(1, (1 << 20) // len(row))
    parts = []
    for start in range(0, height, batch_rows):
        parts.append(compressor.compress(row * min(batch_rows, height - start)))
    parts.append(compressor.flush())
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )


def truncate(data: bytes, keep: float = 0.5) -> bytes:
    """The first ``keep`` fraction (0 < keep < 1) of ``data``: a file cut short in transfer."""
    if not 0.0 < keep < 1.0:
        raise ValueError(f"keep must be a fraction in (0, 1), got {keep}")
    return data[: max(1, int(len(data) * keep))]

"""Removing from a photo's file everything its display does not need.

The store keeps no position, no camera identity and no hidden copy of the picture in the photos it
holds (the position lives in the database, with its source and accuracy). :func:`clean_metadata`
rewrites the file's container and keeps only what a viewer needs to show the picture as taken:

- the picture itself, byte for byte (JPEG scans and tables, PNG image data, WebP bitstreams, HEIF
  coded images with their properties and auxiliary images such as alpha), so nothing is re-encoded;
- its colour: the ICC profile (JPEG APP2, PNG iCCP, WebP ICCP, HEIF colr), JPEG's JFIF (without its
  thumbnail) and Adobe segments, PNG's sRGB, gAMA, cHRM, cICP, sBIT, pHYs, tRNS and bKGD chunks;
- its orientation: for JPEG, PNG and WebP a new EXIF block holding that one tag (only when it is
  not 1), because applying it would re-encode a JPEG and a viewer turns the picture by the tag as it
  did before; a HEIF keeps its container's rotation and mirror (irot, imir), which viewers apply.

Everything else goes: EXIF (GPS, dates, make, model, owner, serial numbers, maker notes, the
thumbnail in IFD1), XMP (its GPS too; an XMP orientation becomes the EXIF tag), IPTC (APP13),
comments, the other APPn segments (MPF), what follows a JPEG's end (a multi-picture file's second
picture, a motion photo's video), PNG text and time chunks, unknown PNG and WebP chunks, and a
HEIF's metadata items and thumbnails (:mod:`serving.photos.heif`).

A file whose container cannot be walked, or which Pillow still reads a tag from afterwards, is
decoded and encoded again in its format with only its ICC profile and orientation: lossless for
PNG, lossy at quality :data:`REENCODE_QUALITY` for JPEG, WebP and HEIF (and slow for a large HEIF:
seconds for 12 MP). The result depends only on the bytes given, as the store's de-duplication
needs (it compares a stored file with what it would write).
"""

from __future__ import annotations

import io
import re
import struct
import zlib

from PIL import Image

from serving.photos.heif import strip_heif_items
from vipare import exif as exif_tags
from vipare.intake import quiet_pillow

__all__ = ["REENCODE_QUALITY", "clean_metadata", "oriented_jpeg"]

REENCODE_QUALITY = 90
"""Quality of a JPEG, WebP or HEIF encoded again (see the module docstring)."""

_ORIENTATION = 0x0112
_EXIF_HEADER = b"Exif\x00\x00"

# JPEG: after a scan's header, the entropy-coded data runs to the next marker that is neither a
# stuffed 0xFF (FF 00), a restart (FF D0-D7) nor a fill byte (FF FF).
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_SOI, _EOI, _SOS, _COM = 0xD8, 0xD9, 0xDA, 0xFE
_JFIF = b"JFIF\x00"
_JFIF_HEAD = 14  # "JFIF\0", version, units, densities, then the thumbnail's width and height

# PNG chunks a viewer uses to show the picture; every other chunk is dropped.
_PNG_KEEP = frozenset(
    b"IHDR PLTE IDAT IEND tRNS cHRM gAMA iCCP sBIT sRGB cICP mDCV cLLI bKGD pHYs acTL fcTL fdAT".split()
)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Where Pillow finds a PNG's orientation: an eXIf chunk, ImageMagick's text profile, XMP.
_PNG_ORIENTATION_KEYS = (b"eXIf", b"Raw profile type exif", b"XML:com.adobe.xmp")

# WebP chunks of the picture; EXIF, XMP and unknown chunks are dropped.
_WEBP_KEEP = frozenset({b"VP8X", b"ICCP", b"ANIM", b"ANMF", b"ALPH", b"VP8 ", b"VP8L"})
_VP8X_EXIF, _VP8X_XMP = 0x08, 0x04

# Pillow ``info`` keys a re-encoded file keeps: colour and transparency.
_DISPLAY_INFO = ("icc_profile", "nclx_profile", "transparency")


def clean_metadata(data: bytes) -> bytes:
    """The photo with only what its display needs; ``data`` itself when it holds nothing else.

    Args:
        data: a photo vipare accepted (JPEG, PNG, WebP or HEIF); its format is read from the bytes.

    Returns:
        The file's bytes, same format: the picture unchanged, its colour profile and its
        orientation, nothing else (see the module docstring).
    """
    with Image.open(io.BytesIO(data)) as img, quiet_pillow():
        fmt = img.format
        # A HEIF's rotation is in its container. Pillow decodes a whole PNG to look for an EXIF
        # after the picture: only done when a chunk could hold an orientation.
        could_turn = fmt != "HEIF" and (fmt != "PNG" or any(key in data for key in _PNG_ORIENTATION_KEYS))
        orientation = exif_tags.orientation(img) if could_turn else 1
    tiff = _orientation_tiff(orientation)
    try:
        if fmt in ("JPEG", "MPO"):
            cleaned = _clean_jpeg(data, tiff)
        elif fmt == "PNG":
            cleaned = _clean_png(data, tiff)
        elif fmt == "WEBP":
            cleaned = _clean_webp(data, tiff)
        else:
            cleaned = strip_heif_items(data)
        if cleaned == data:
            return data
        if _only_display_tags(cleaned, orientation):
            return cleaned
    except (ValueError, IndexError, struct.error, OSError, RuntimeError, SyntaxError):
        pass  # a container that cannot be walked, or a rewrite Pillow cannot read: re-encoded below
    return _reencode(data)


def oriented_jpeg(jpeg: bytes, orientation: int) -> bytes:
    """A JPEG this process encoded, with ``orientation`` (1 to 8) in an EXIF block of that one tag,
    as :func:`clean_metadata` leaves a photo: a viewer turns the stored picture by it (none for 1).

    Raises:
        ValueError: ``jpeg`` is not a JPEG whose segments can be walked.
    """
    return _clean_jpeg(jpeg, _orientation_tiff(orientation))


def _orientation_tiff(orientation: int) -> bytes:
    """A TIFF-structured EXIF block holding only the orientation; b"" for 1 (as stored)."""
    if orientation == 1:
        return b""
    exif = Image.Exif()
    exif[_ORIENTATION] = orientation
    return exif.tobytes().removeprefix(_EXIF_HEADER)


def _clean_jpeg(data: bytes, tiff: bytes) -> bytes:
    """The JPEG's segments a viewer needs, the orientation in a new APP1, nothing after EOI."""
    if data[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG")
    jfif = b""
    out: list[bytes] = []
    pos = 2
    while True:
        if data[pos] != 0xFF:
            raise ValueError(f"no JPEG marker at byte {pos}")
        while data[pos + 1] == 0xFF:  # fill bytes before a marker
            pos += 1
        marker = data[pos + 1]
        if marker == _EOI:
            break  # anything after it (a second picture, a video) is dropped
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # no length field
            out.append(data[pos : pos + 2])
            pos += 2
            continue
        if marker == _SOI:
            raise ValueError("a second SOI before EOI")
        (length,) = struct.unpack_from(">H", data, pos + 2)
        end = pos + 2 + length
        if length < 2 or end > len(data):
            raise ValueError("JPEG segment out of bounds")
        payload = data[pos + 4 : end]
        if marker == _SOS:
            scan_end = _NEXT_MARKER.search(data, end)
            if scan_end is None:  # no EOI: the scan runs to the end of the file
                out.append(data[pos:])
                break
            out.append(data[pos : scan_end.start()])
            pos = scan_end.start()
            continue
        if marker == 0xE0 and payload.startswith(_JFIF) and len(payload) >= _JFIF_HEAD and not jfif:
            jfif = _segment(0xE0, payload[: _JFIF_HEAD - 2] + b"\x00\x00")  # without its thumbnail
        elif _keeps_segment(marker, payload):
            out.append(data[pos:end])
        pos = end
    # JFIF's APP0 comes first after SOI, then the EXIF APP1 (what both standards ask for).
    exif = _segment(0xE1, _EXIF_HEADER + tiff) if tiff else b""
    return b"\xff\xd8" + jfif + exif + b"".join(out) + b"\xff\xd9"


def _keeps_segment(marker: int, payload: bytes) -> bool:
    """Whether a JPEG segment (other than JFIF's APP0 and the scans) is needed to show the picture."""
    if marker == 0xE2:
        return payload.startswith(b"ICC_PROFILE\x00")
    if marker == 0xEE:
        return payload.startswith(b"Adobe")  # the colour transform of CMYK and YCCK pictures
    return not (0xE0 <= marker <= 0xEF or marker == _COM)  # tables, frame header, restart interval


def _segment(marker: int, payload: bytes) -> bytes:
    if len(payload) + 2 > 0xFFFF:
        raise ValueError("JPEG segment too long")
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


def _clean_png(data: bytes, tiff: bytes) -> bytes:
    """The PNG's display chunks, copied with their checksums; the orientation in an eXIf before IDAT."""
    if not data.startswith(_PNG_SIGNATURE):
        raise ValueError("not a PNG")
    out = [_PNG_SIGNATURE]
    pos = len(_PNG_SIGNATURE)
    while True:
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if end > len(data):
            raise ValueError("truncated PNG chunk")
        if kind == b"IDAT" and tiff:
            out.append(_png_chunk(b"eXIf", tiff))
            tiff = b""
        if kind in _PNG_KEEP:
            out.append(data[pos:end])
        if kind == b"IEND":
            return b"".join(out)
        pos = end


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _clean_webp(data: bytes, tiff: bytes) -> bytes:
    """The WebP's picture chunks, the VP8X flags and RIFF size set again; the orientation in EXIF."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise ValueError("not a WebP")
    (riff_size,) = struct.unpack_from("<I", data, 4)
    stop = min(len(data), 8 + riff_size)
    chunks: list[bytes] = []
    pos = 12
    while pos + 8 <= stop:
        kind, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        end = pos + 8 + size + (size & 1)
        if pos + 8 + size > stop:
            raise ValueError("truncated WebP chunk")
        if kind in _WEBP_KEEP:
            chunks.append(data[pos:end])
        pos = end
    if tiff:
        if not chunks or not chunks[0].startswith(b"VP8X"):
            raise ValueError("an orientation in a WebP without VP8X")
        chunks.append(b"EXIF" + struct.pack("<I", len(tiff)) + tiff + b"\x00" * (len(tiff) & 1))
    if chunks and chunks[0].startswith(b"VP8X"):
        flags = (chunks[0][8] & ~(_VP8X_EXIF | _VP8X_XMP)) | (_VP8X_EXIF if tiff else 0)
        chunks[0] = chunks[0][:8] + bytes((flags,)) + chunks[0][9:]
    body = b"WEBP" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _only_display_tags(data: bytes, orientation: int) -> bool:
    """Whether Pillow reads back the orientation as the only tag, and no XMP or comment."""
    with Image.open(io.BytesIO(data)) as img, quiet_pillow():
        exif = Image.Exif()  # from the file's EXIF as read at open: getexif() would decode a PNG
        raw = img.info.get("exif")
        if isinstance(raw, bytes) and raw:
            exif.load(raw)
        expected = {} if orientation == 1 else {_ORIENTATION: orientation}
        # pillow-heif lists a HEIF's thumbnails, empty or not
        hidden = [
            key for key in ("xmp", "XML:com.adobe.xmp", "comment", "photoshop", "thumbnails") if img.info.get(key)
        ]
        return dict(exif) == expected and not exif.get_ifd(0x8825) and not hidden


def _reencode(data: bytes) -> bytes:
    """Decode and save again, same format, with the ICC profile and orientation only (lossy except PNG).

    HEIF comes out upright (pillow-heif applied the container's rotation while decoding), with no
    EXIF, XMP, thumbnail or auxiliary image.
    """
    with Image.open(io.BytesIO(data)) as img, quiet_pillow():
        fmt = "JPEG" if img.format == "MPO" else img.format or "JPEG"
        orientation = exif_tags.orientation(img) if fmt != "HEIF" else 1
        img.load()
        picture = img.convert("RGB") if fmt == "JPEG" and img.mode not in ("RGB", "L", "CMYK") else img.copy()
        # Only what display needs travels to the new file: no EXIF, XMP, thumbnails or comments.
        picture.info = {key: img.info[key] for key in _DISPLAY_INFO if img.info.get(key) is not None}
    options: dict[str, object] = {}
    if "icc_profile" in picture.info:  # JPEG and WebP take it only as an option
        options["icc_profile"] = picture.info["icc_profile"]
    tiff = _orientation_tiff(orientation)
    if tiff:
        options["exif"] = _EXIF_HEADER + tiff
    if fmt != "PNG":
        options["quality"] = REENCODE_QUALITY
    out = io.BytesIO()
    with quiet_pillow():
        picture.save(out, fmt, **options)
    return out.getvalue()

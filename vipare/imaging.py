"""Photo intake: file bytes or a path in; an upright RGB array, what the file says, and its GPS fix out.

One way to decode (STYLE point 8): Pillow opens the content, restricted to JPEG, PNG, WebP and, with
the ``vipare[heic]`` extra, HEIC/HEIF (pillow-heif); the type is judged from the bytes, never from
a file name. Then, in order:

1. limits: the byte size (a path is checked with ``stat`` before it is read), then the pixel count
   from the header, before anything is decoded;
2. JPEG draft mode: with ``target_size``, libjpeg decodes at 1/2, 1/4 or 1/8 scale when the model's
   decoded photo would still be at least ``draft_oversample`` (1.5) times the letterbox size (a
   4032x3024 photo for a 320 model decodes at 504x378); a 640 px photo for that model decodes in
   full, exactly as the training and Ultralytics' own reader see it;
3. decode once, then read EXIF from the same image: orientation, DateTimeOriginal, GPS;
4. apply the EXIF orientation (all 8 values, as ``ImageOps.exif_transpose``) and convert to RGB.

Every failure is an :class:`~vipare.errors.ImageError` subclass whose message says what is wrong
and what to do; no other exception escapes for any byte string. Reading a path can still raise
``OSError`` (missing file, permissions).

Pillow's own decompression-bomb guard is kept (``Image.MAX_IMAGE_PIXELS`` is never changed) and
its error is mapped to :class:`~vipare.errors.ImageTooLargeError`; its warning is silenced around
the calls that parse untrusted headers, since ``max_pixels`` is checked right after.
``ImageFile.LOAD_TRUNCATED_IMAGES`` stays False: a cut-short file is refused, not half-decoded.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import struct
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Final, Literal

import numpy as np
from numpy.typing import NDArray

# Importing the three plugins registers them, so Image.open never falls back to Image.init().
from PIL import ExifTags, Image, JpegImagePlugin, PngImagePlugin, WebPImagePlugin  # noqa: F401

from vipare.errors import CorruptImageError, EmptyImageError, ImageTooLargeError, UnsupportedImageError
from vipare.geotag import gps_from_exif
from vipare.results import GpsFix, ImageInfo
from vipare.settings import Settings
from vipare.size import Size

try:  # optional: the vipare[heic] extra (pillow-heif bundles GPL-licensed codecs)
    import pillow_heif
except ImportError:  # pragma: no cover - depends on the installed extras
    _HEIF_AVAILABLE = False
else:
    pillow_heif.register_heif_opener()
    _HEIF_AVAILABLE = True

__all__ = ["DecodedImage", "heif_supported", "load_image"]

_Format = Literal["JPEG", "PNG", "WEBP", "HEIF"]

_DEFAULT_MAX_BYTES: Final[int] = Settings.model_fields["max_image_bytes"].default
_DEFAULT_MAX_PIXELS: Final[int] = Settings.model_fields["max_image_pixels"].default

_SEND: Final = "send a JPEG, PNG, WebP or HEIC photo"

# Pillow's format names -> ImageInfo.format. A JPEG with a multi-picture (MPO) index, as many phones
# write, is opened by the JPEG factory as "MPO"; its first picture is the photo.
_FORMAT_NAMES: Final[dict[str, _Format]] = {
    "JPEG": "JPEG",
    "MPO": "JPEG",
    "PNG": "PNG",
    "WEBP": "WEBP",
    "HEIF": "HEIF",
}

# Brands pillow-heif opens (HEVC-coded HEIF and the generic image brands).
_HEIF_BRANDS: Final = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"}
)

# EXIF orientation -> the transpose that shows the picture upright (as ImageOps.exif_transpose).
_TRANSPOSE: Final[dict[int, Image.Transpose]] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES: Final = frozenset({5, 6, 7, 8})

# What Pillow and its plugins raise on damaged data. DecompressionBombError is handled apart.
_DECODE_ERRORS: Final = (
    OSError,
    SyntaxError,
    ValueError,
    TypeError,
    IndexError,
    KeyError,
    EOFError,
    RuntimeError,
    ZeroDivisionError,
    OverflowError,
    struct.error,
)

_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")
_EXIF_DATETIME = re.compile(r"^(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})$")
_EXIF_OFFSET = re.compile(r"^([+-])(\d{2}):(\d{2})$")

# warnings.catch_warnings swaps process-wide state and is not thread-safe before Python 3.14: this
# lock keeps two intake threads from interleaving it. Only header and EXIF parsing run under it
# (well under a millisecond); decoding runs outside, in parallel.
_QUIET_LOCK = threading.Lock()


def heif_supported() -> bool:
    """True when pillow-heif (the ``vipare[heic]`` extra) is installed, so HEIC/HEIF photos decode."""
    return _HEIF_AVAILABLE


@dataclass(frozen=True, slots=True, eq=False)
class DecodedImage:
    """A decoded photo, upright, ready for the detector.

    Attributes:
        array: RGB pixels, shape ``(H, W, 3)``, dtype uint8, C-contiguous, read-only, upright (EXIF
            orientation applied). Smaller than ``info.width x info.height`` when the JPEG was
            decoded in draft mode; :attr:`scale` maps its pixels back to the original.
        info: the file's facts: full-size width and height after orientation, format, sha256, size,
            orientation applied, capture time.
        gps: the EXIF GPS fix, or None when the photo has none (or a malformed one).
    """

    array: NDArray[np.uint8]
    info: ImageInfo
    gps: GpsFix | None

    @property
    def size(self) -> Size:
        """Size of :attr:`array` (smaller than ``info.size`` after a draft-mode decode)."""
        return Size.of(self.array)

    @property
    def scale(self) -> tuple[float, float]:
        """``(sx, sy)`` = original pixels per array pixel: ``info.width / W``, ``info.height / H``.

        A box ``x1, y1, x2, y2`` in array pixels is ``x1 * sx, y1 * sy, x2 * sx, y2 * sy`` in
        pixels of the orientation-corrected original image. ``(1.0, 1.0)`` unless draft mode was used.
        """
        width, height = self.size
        return self.info.width / width, self.info.height / height


DRAFT_OVERSAMPLE = 1.5
"""Default for ``load_image(draft_oversample=...)``: a reduced JPEG decode keeps at least 1.5 times
the letterbox size. Photos up to twice the model size (the 640 px dataset photos for a 320 model)
then decode in full, exactly as Ultralytics reads them, while a 12 MP phone photo decodes at 1/8."""


def load_image(
    source: bytes | str | os.PathLike[str],
    *,
    max_bytes: int = _DEFAULT_MAX_BYTES,
    max_pixels: int = _DEFAULT_MAX_PIXELS,
    target_size: Size | None = None,
    draft_oversample: float = DRAFT_OVERSAMPLE,
) -> DecodedImage:
    """Read a photo: check limits, decode once (reduced for JPEG when possible), orient, read EXIF.

    Args:
        source: the file's bytes, or a path to it. The content decides the format, not the name.
        max_bytes: largest accepted file, bytes (``Settings.max_image_bytes``).
        max_pixels: largest accepted image, width x height of the stored image, checked from the
            header before decoding (``Settings.max_image_pixels``). Pillow's own limit
            (``2 * Image.MAX_IMAGE_PIXELS``, about 179 MP) also applies.
        target_size: the model's input size. For a JPEG, libjpeg then decodes with the strongest
            reduction (1/2, 1/4 or 1/8) whose result is still at least ``draft_oversample`` times
            the letterbox size (``round(w * r) x round(h * r)``, ``r = min(target height / h,
            target width / w)`` on the upright size), so the letterbox resize only ever shrinks.
            Other formats decode at full size, as does None.
        draft_oversample: how many times the letterbox size a reduced JPEG decode keeps (>= 1).
            Above 1, photos near the model size decode in full, exactly as Ultralytics reads
            them (full decode, then one resize), and only large photos are reduced.

    Returns:
        The upright RGB array (see :class:`DecodedImage` for shapes), the file's facts and GPS fix.
        Alpha is composited on white; a PNG's tRNS colour key is ignored (the colour is kept);
        16-bit samples keep their top 8 bits; colour profiles are not applied (pixels as stored).

    Raises:
        EmptyImageError: the file has no bytes.
        ImageTooLargeError: over ``max_bytes``, or over ``max_pixels`` (or Pillow's limit).
        UnsupportedImageError: not JPEG, PNG, WebP or HEIC/HEIF, or HEIC without ``vipare[heic]``.
        CorruptImageError: a supported format that cannot be decoded (cut short, damaged).
        OSError: ``source`` is a path that cannot be read.
        ValueError: ``target_size`` or a limit is not positive (a programming error).
    """
    if max_bytes < 1 or max_pixels < 1:
        raise ValueError(f"max_bytes and max_pixels must be >= 1, got {max_bytes} and {max_pixels}")
    if draft_oversample < 1:
        raise ValueError(f"draft_oversample must be >= 1, got {draft_oversample}")
    if target_size is not None and (len(target_size) != 2 or min(target_size) < 1):
        raise ValueError(f"target_size must be a positive Size(width, height), got {target_size!r}")
    if target_size is not None:
        target_size = Size(*target_size)  # a bare pair still works, read as (width, height)
    data = _read(source, max_bytes)
    if not data:
        raise EmptyImageError("The file is empty (0 bytes); send the photo again.")
    if len(data) > max_bytes:
        raise ImageTooLargeError(_too_many_bytes(len(data), max_bytes))

    with _quiet_pillow():
        img = _open(data, max_pixels)
    try:
        return _decode(img, data, target_size, draft_oversample)
    finally:
        img.close()


# --------------------------------------------------------------------------------------------------
# Reading and opening


def _read(source: bytes | str | os.PathLike[str], max_bytes: int) -> bytes:
    if isinstance(source, bytes):
        return source
    if isinstance(source, (bytearray, memoryview)):
        return bytes(source)
    size = os.stat(source).st_size
    if size > max_bytes:  # refuse before reading a byte
        raise ImageTooLargeError(_too_many_bytes(size, max_bytes))
    with open(source, "rb") as file:
        return file.read(max_bytes + 1)  # the file may have grown since stat: the caller re-checks


def _too_many_bytes(size: int, max_bytes: int) -> str:
    return (
        f"The file is {size / 1e6:.1f} MB, over the {max_bytes / 1e6:.1f} MB limit; send a smaller photo "
        "(a JPEG at the phone's normal quality, or a lower resolution)."
    )


def _too_many_pixels(pixels: int, max_pixels: int, size: tuple[int, int] | None = None) -> str:
    dims = f"{size[0]} x {size[1]} pixels, " if size else ""
    return (
        f"The image is {dims}{pixels / 1e6:.1f} megapixels, over the {max_pixels / 1e6:g} megapixel limit; "
        f"resize it below {max_pixels / 1e6:g} megapixels and send it again."
    )


@contextmanager
def _quiet_pillow() -> Iterator[None]:
    """Silence Pillow's warnings about the untrusted file being parsed, thread by thread.

    The decompression-bomb warning is redundant with the ``max_pixels`` check; "corrupt EXIF"
    warnings describe metadata that is simply ignored.
    """
    with _QUIET_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        warnings.filterwarnings("ignore", module=r"(PIL|pillow_heif)(\.|$)")
        yield


def _sniff(data: bytes) -> str | None:
    """The supported format the magic bytes announce, or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        return "HEIF"
    return None


def _open(data: bytes, max_pixels: int) -> Image.Image:
    formats = ["JPEG", "PNG", "WEBP"] + (["HEIF"] if _HEIF_AVAILABLE else [])
    try:
        img = Image.open(io.BytesIO(data), formats=formats)
    except Image.DecompressionBombError as exc:
        match = _BOMB_PIXELS.search(str(exc))
        pixels = int(match[1]) if match else max_pixels + 1
        limit = min(max_pixels, 2 * (Image.MAX_IMAGE_PIXELS or max_pixels))
        raise ImageTooLargeError(_too_many_pixels(pixels, limit)) from None
    except (*_DECODE_ERRORS, ImportError):
        # UnidentifiedImageError is an OSError. ImportError: Ultralytics, when imported in the same
        # process (training, evaluation), replaces Image.open with a wrapper that imports an optional
        # HEIF plugin on unidentified files; without that plugin the file is still just unreadable.
        raise _not_opened(data) from None
    try:
        width, height = img.size
        if width < 1 or height < 1:
            raise CorruptImageError(
                f"The {_sniff(data) or 'image'} file declares no pixels; send the photo again."
            )
        if width * height > max_pixels:
            raise ImageTooLargeError(_too_many_pixels(width * height, max_pixels, (width, height)))
    except BaseException:
        img.close()
        raise
    return img


def _not_opened(data: bytes) -> Exception:
    """The error for bytes that Pillow could not open with any allowed format."""
    sniffed = _sniff(data)
    if sniffed == "HEIF" and not _HEIF_AVAILABLE:
        return UnsupportedImageError(
            "The file is a HEIC/HEIF photo, but HEIC support is not installed; install it with "
            "pip install 'vipare[heic]', or send the photo as JPEG."
        )
    if sniffed is not None:
        return CorruptImageError(
            f"The file starts like a {sniffed} image but is cut short or damaged; send it again."
        )
    return UnsupportedImageError(f"The file is not an image vipare can read; {_SEND}.")


# --------------------------------------------------------------------------------------------------
# Decoding


def _decode(
    img: Image.Image, data: bytes, target_size: Size | None, draft_oversample: float
) -> DecodedImage:
    fmt = _FORMAT_NAMES[img.format or ""]
    stored_size = Size(*img.size)
    # pillow-heif applies the HEIF rotation/mirror (irot/imir) while decoding and resets the EXIF
    # orientation to 1, keeping the original value here.
    heif_orientation = img.info.get("original_orientation") if fmt == "HEIF" else None

    try:
        if fmt == "JPEG" and target_size is not None:
            with _quiet_pillow():  # a JPEG's EXIF is parsed from APP1 without decoding the pixels
                orientation = _orientation(img)
            request = _draft_request(stored_size, orientation, target_size, draft_oversample)
            if request is not None:
                img.draft("RGB", request)
        img.load()
    except _DECODE_ERRORS as exc:
        raise _corrupt(fmt, exc) from None

    with _quiet_pillow():  # after load: a PNG's eXIf chunk may follow the pixels
        orientation = _orientation(img)
        exif = _exif(img)
        captured_at = _captured_at(exif)
        gps = gps_from_exif(exif)

    if fmt == "HEIF":
        applied = heif_orientation if isinstance(heif_orientation, int) and 1 <= heif_orientation <= 8 else 1
        upright = stored_size  # already upright
        method = None
    else:
        applied = orientation
        upright = _upright(stored_size, orientation)
        method = _TRANSPOSE.get(orientation)

    try:
        array = _rgb_array(img if method is None else img.transpose(method))
    except _DECODE_ERRORS as exc:  # pragma: no cover - conversions of a loaded image do not fail
        raise _corrupt(fmt, exc) from None

    info = ImageInfo(
        width=upright.width,
        height=upright.height,
        format=fmt,
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        orientation=applied,
        captured_at=captured_at,
    )
    return DecodedImage(array=array, info=info, gps=gps)


_TRUNCATION_HINTS: Final = ("truncat", "end of file", "premature end", "unexpected end")


def _corrupt(fmt: str, exc: BaseException) -> CorruptImageError:
    detail = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, EOFError) or any(hint in detail.lower() for hint in _TRUNCATION_HINTS):
        return CorruptImageError(f"The {fmt} file is cut short, send it again (decoder: {detail}).")
    return CorruptImageError(
        f"The {fmt} file is damaged and cannot be decoded; send the original photo again (decoder: {detail})."
    )


def _upright(stored_size: Size, orientation: int) -> Size:
    """The size of a picture stored at ``stored_size`` once its EXIF ``orientation`` is applied."""
    return Size(stored_size.height, stored_size.width) if orientation in _SWAPS_AXES else stored_size


def _draft_request(stored_size: Size, orientation: int, target_size: Size, oversample: float) -> Size | None:
    """The size to ask ``Image.draft`` for, in the file's stored orientation, or None for full size.

    It is ``oversample`` times the letterbox's resized (unpadded) size, ``round(w * r), round(h * r)``
    with ``r = oversample * min(target_h / h, target_w / w)`` on the upright size. Pillow then picks
    the strongest reduction (1/2, 1/4, 1/8) whose result is no smaller.
    """
    upright = _upright(stored_size, orientation)
    ratio = oversample * min(target_size.height / upright.height, target_size.width / upright.width)
    if ratio * 2 > 1:  # even a 1/2 scale would be smaller than the requested size
        return None
    # Back to the stored orientation: swapping twice is the identity.
    return _upright(upright.scaled(ratio), orientation)


def _exif(img: Image.Image) -> Image.Exif | None:
    try:
        return img.getexif()
    except _DECODE_ERRORS:  # damaged EXIF: keep the pixels, drop the metadata
        return None


def _orientation(img: Image.Image) -> int:
    exif = _exif(img)
    value = exif.get(ExifTags.Base.Orientation, 1) if exif is not None else 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _captured_at(exif: Image.Exif | None) -> datetime | None:
    """EXIF DateTimeOriginal, with SubSecTimeOriginal and, when present, OffsetTimeOriginal as tzinfo."""
    if exif is None:
        return None
    try:
        tags = exif.get_ifd(ExifTags.IFD.Exif)
    except _DECODE_ERRORS:
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


def _rgb_array(img: Image.Image) -> NDArray[np.uint8]:
    """``(H, W, 3)`` uint8 RGB, C-contiguous, read-only, from a loaded image of any mode."""
    mode = img.mode
    if mode.startswith("I"):  # I;16, I;16B, I (16-bit greyscale): keep the top 8 bits
        grey16 = np.clip(np.asarray(img, dtype=np.int64), 0, 65535) >> 8
        grey = grey16.astype(np.uint8)
        array: NDArray[np.uint8] = np.repeat(grey[:, :, np.newaxis], 3, axis=2)
    elif mode == "F":
        grey = np.clip(np.asarray(img), 0, 255).astype(np.uint8)
        array = np.repeat(grey[:, :, np.newaxis], 3, axis=2)
    else:
        if mode in ("RGBA", "RGBa", "LA", "La", "PA") or (mode == "P" and "transparency" in img.info):
            rgba = img if mode == "RGBA" else img.convert("RGBA")
            rgb = Image.new("RGB", rgba.size, (255, 255, 255))
            rgb.paste(rgba, mask=rgba)  # composite on white, using the alpha band as the mask
        else:
            rgb = img if mode == "RGB" else img.convert("RGB")
        array = np.asarray(rgb)
    if not array.flags.c_contiguous:  # pragma: no cover - asarray of a Pillow image is contiguous
        array = np.ascontiguousarray(array)
    array.flags.writeable = False
    return array

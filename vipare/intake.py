"""Before any decoding: read a photo's bytes under the size limit, then open it under the pixel limit.

The first step of :func:`vipare.imaging.load_image`. :func:`read_bytes` refuses an empty file and
one over ``max_bytes`` (a path is checked with ``stat`` before it is read); :func:`open_image` lets
Pillow open the content, restricted to JPEG, PNG, WebP and, with the ``vipare[heic]`` extra,
HEIC/HEIF (pillow-heif), and refuses a picture over ``max_pixels`` from its header, before a pixel is
decoded. The type is judged from the bytes, never from a file name.

PNG, WebP and HEIC get a lower limit, ``max_non_jpeg_pixels``: a JPEG decodes reduced (libjpeg's
1/2, 1/4, 1/8 scales, :mod:`vipare.imaging`), so its memory follows the size the model needs, while
these formats can only be decoded whole (a 285 KB PNG of 10000 x 10000 pixels took about 1 GB). PNG
and HEIC hold about 4 bytes per pixel at the peak; Pillow's WebP decoder about 16 (libwebp's canvas
and its copies), so WebP's limit is a quarter of it (:func:`non_jpeg_limit`;
``benchmarks/bench_intake_memory.py`` measures them). The message then says to send a JPEG or a
smaller picture.

Pillow's own decompression-bomb guard is kept (``Image.MAX_IMAGE_PIXELS`` is never changed) and
its error is mapped to :class:`~vipare.errors.ImageTooLargeError`; its warning is silenced around
the calls that parse untrusted headers (:func:`quiet_pillow`), since ``max_pixels`` is checked right
after.
"""

from __future__ import annotations

import io
import os
import re
import struct
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

# Importing the three plugins registers them, so Image.open never falls back to Image.init().
from PIL import Image, JpegImagePlugin, PngImagePlugin, WebPImagePlugin  # noqa: F401

from vipare.errors import CorruptImageError, EmptyImageError, ImageTooLargeError, UnsupportedImageError

try:  # optional: the vipare[heic] extra (pillow-heif bundles GPL-licensed codecs)
    import pillow_heif
except ImportError:  # pragma: no cover - depends on the installed extras
    _HEIF_AVAILABLE = False
else:
    pillow_heif.register_heif_opener()
    _HEIF_AVAILABLE = True

__all__ = ["DECODE_ERRORS", "heif_supported", "non_jpeg_limit", "open_image", "quiet_pillow", "read_bytes"]

_SEND: Final = "send a JPEG, PNG, WebP or HEIC photo"

# Brands pillow-heif opens (HEVC-coded HEIF and the generic image brands).
_HEIF_BRANDS: Final = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"}
)

DECODE_ERRORS: Final = (
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
"""What Pillow and its plugins raise on damaged data (a decompression bomb is handled apart)."""

_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")

# warnings.catch_warnings swaps process-wide state and is not thread-safe before Python 3.14: this
# lock keeps two intake threads from interleaving it. Only header and EXIF parsing run under it
# (well under a millisecond); decoding runs outside, in parallel.
_QUIET_LOCK = threading.Lock()


def heif_supported() -> bool:
    """True when pillow-heif (the ``vipare[heic]`` extra) is installed, so HEIC/HEIF photos decode."""
    return _HEIF_AVAILABLE


def non_jpeg_limit(fmt: str, max_non_jpeg_pixels: int) -> int:
    """The pixel limit of a PNG, WebP or HEIC image (Pillow's format name) under ``max_non_jpeg_pixels``.

    WebP gets a quarter: Pillow's WebP decoder holds about four times the memory per pixel of the
    others at its peak (a 12 MP WebP about 190 MB).
    """
    return max(1, max_non_jpeg_pixels // 4) if fmt == "WEBP" else max_non_jpeg_pixels


def read_bytes(source: bytes | str | os.PathLike[str], max_bytes: int) -> bytes:
    """A photo's bytes, refused when empty or over ``max_bytes``.

    Args:
        source: the file's bytes, or a path to it.
        max_bytes: largest accepted file, bytes. A path over it is refused before it is read.

    Returns:
        The bytes, at most ``max_bytes`` of them.

    Raises:
        EmptyImageError: the file has no bytes.
        ImageTooLargeError: over ``max_bytes``.
        OSError: ``source`` is a path that cannot be read.
    """
    data = _read(source, max_bytes)
    if not data:
        raise EmptyImageError("The file is empty (0 bytes); send the photo again.")
    if len(data) > max_bytes:
        raise ImageTooLargeError(_too_many_bytes(len(data), max_bytes))
    return data


def open_image(data: bytes, max_pixels: int, max_non_jpeg_pixels: int | None = None) -> Image.Image:
    """Open ``data`` with Pillow (headers only, nothing decoded) and check its pixel count.

    Args:
        data: the file's bytes.
        max_pixels: largest accepted image, width x height as stored. Pillow's own limit
            (``2 * Image.MAX_IMAGE_PIXELS``, about 179 MP) also applies.
        max_non_jpeg_pixels: largest accepted PNG or HEIC image, a quarter of it for WebP (they
            decode only at full size, :func:`non_jpeg_limit`); None: ``max_pixels`` for every format.

    Returns:
        The opened, not yet loaded image; the caller closes it.

    Raises:
        ImageTooLargeError: over ``max_pixels`` (or Pillow's limit), or a PNG, WebP or HEIC image
            over ``max_non_jpeg_pixels``.
        UnsupportedImageError: not JPEG, PNG, WebP or HEIC/HEIF, or HEIC without ``vipare[heic]``.
        CorruptImageError: a supported format whose header cannot be read, or declares no pixels.
    """
    with quiet_pillow():
        return _open(data, max_pixels, max_non_jpeg_pixels)


@contextmanager
def quiet_pillow() -> Iterator[None]:
    """Silence Pillow's warnings about the untrusted file being parsed, thread by thread.

    The decompression-bomb warning is redundant with the ``max_pixels`` check; "corrupt EXIF"
    warnings describe metadata that is simply ignored.
    """
    with _QUIET_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        warnings.filterwarnings("ignore", module=r"(PIL|pillow_heif)(\.|$)")
        yield


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


def _too_many_non_jpeg_pixels(fmt: str, size: tuple[int, int], max_pixels: int, max_non_jpeg: int) -> str:
    pixels = size[0] * size[1]
    return (
        f"The {fmt} image is {size[0]} x {size[1]} pixels, {pixels / 1e6:.1f} megapixels, over the "
        f"{max_non_jpeg / 1e6:g} megapixel limit for {fmt} images (PNG, WebP and HEIC can only be decoded at "
        f"full size); send the photo as a JPEG (up to {max_pixels / 1e6:g} megapixels) or resize it below "
        f"{max_non_jpeg / 1e6:g} megapixels."
    )


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


def _open(data: bytes, max_pixels: int, max_non_jpeg_pixels: int | None) -> Image.Image:
    formats = ["JPEG", "PNG", "WEBP"] + (["HEIF"] if _HEIF_AVAILABLE else [])
    try:
        img = Image.open(io.BytesIO(data), formats=formats)
    except Image.DecompressionBombError as exc:
        match = _BOMB_PIXELS.search(str(exc))
        pixels = int(match[1]) if match else max_pixels + 1
        limit = min(max_pixels, 2 * (Image.MAX_IMAGE_PIXELS or max_pixels))
        raise ImageTooLargeError(_too_many_pixels(pixels, limit)) from None
    except (*DECODE_ERRORS, ImportError):
        # UnidentifiedImageError is an OSError. ImportError: Ultralytics, when imported in the same
        # process (training, evaluation), replaces Image.open with a wrapper that imports an optional
        # HEIF plugin on unidentified files; without that plugin the file is still just unreadable.
        raise _not_opened(data) from None
    try:
        width, height = img.size
        if width < 1 or height < 1:
            raise CorruptImageError(f"The {_sniff(data) or 'image'} file declares no pixels; send the photo again.")
        if width * height > max_pixels:
            raise ImageTooLargeError(_too_many_pixels(width * height, max_pixels, (width, height)))
        # A multi-picture JPEG (MPO, as many phones write) decodes reduced like any JPEG.
        if max_non_jpeg_pixels is not None and img.format not in ("JPEG", "MPO"):
            limit = non_jpeg_limit(str(img.format), max_non_jpeg_pixels)
            if width * height > limit:
                name = {"HEIF": "HEIC", "WEBP": "WebP"}.get(str(img.format), str(img.format))
                raise ImageTooLargeError(_too_many_non_jpeg_pixels(name, (width, height), max_pixels, limit))
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
        return CorruptImageError(f"The file starts like a {sniffed} image but is cut short or damaged; send it again.")
    return UnsupportedImageError(f"The file is not an image vipare can read; {_SEND}.")

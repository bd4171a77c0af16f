"""Photo intake: file bytes or a path in; an upright RGB array, what the file says, and its GPS fix out.

One way to decode (STYLE point 8): Pillow opens the content, restricted to JPEG, PNG, WebP and, with
the ``vipare[heic]`` extra, HEIC/HEIF (pillow-heif); the type is judged from the bytes, never from
a file name. Then, in order:

1. limits (:mod:`vipare.intake`): the byte size (a path is checked with ``stat`` before it is read),
   then the pixel count from the header, before anything is decoded (a lower count for PNG, WebP
   and HEIC, which cannot be decoded reduced);
2. JPEG draft mode: with ``target_size``, libjpeg decodes at 1/2, 1/4 or 1/8 scale when the model's
   decoded photo would still be at least ``draft_oversample`` (1.5) times the letterbox size (a
   4032x3024 photo for a 320 model decodes at 504x378); a 640 px photo for that model decodes in
   full, exactly as the training and Ultralytics' own reader see it;
3. decode once, then read EXIF from the same image: orientation, DateTimeOriginal
   (:mod:`vipare.exif`), GPS (:mod:`vipare.geotag`);
4. other formats decode whole; with ``target_size``, one that is at least twice as large as the
   JPEG rule asks is reduced right away by the largest integer factor that keeps it so
   (``Image.reduce``, a box filter), before any copy is made: the decoded picture is then the only
   full-size buffer, whatever the conversions that follow;
5. apply the EXIF orientation (all 8 values, as ``ImageOps.exif_transpose``) and convert to RGB.

Every failure is an :class:`~vipare.errors.ImageError` subclass whose message says what is wrong
and what to do; no other exception escapes for any byte string. Reading a path can still raise
``OSError`` (missing file, permissions).

Pillow's own decompression-bomb guard is kept (see :mod:`vipare.intake`).
``ImageFile.LOAD_TRUNCATED_IMAGES`` stays False: a cut-short file is refused, not half-decoded.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from vipare import exif
from vipare.errors import CorruptImageError
from vipare.geotag import gps_from_exif
from vipare.intake import DECODE_ERRORS, open_image, quiet_pillow, read_bytes
from vipare.results import GpsFix, ImageInfo
from vipare.settings import Settings
from vipare.size import Size

__all__ = ["DecodedImage", "load_image"]

_Format = Literal["JPEG", "PNG", "WEBP", "HEIF"]

_DEFAULT_MAX_BYTES: Final[int] = Settings.model_fields["max_image_bytes"].default
_DEFAULT_MAX_PIXELS: Final[int] = Settings.model_fields["max_image_pixels"].default
_DEFAULT_MAX_NON_JPEG_PIXELS: Final[int] = Settings.model_fields["max_non_jpeg_pixels"].default

# Pillow's format names -> ImageInfo.format. A JPEG with a multi-picture (MPO) index, as many phones
# write, is opened by the JPEG factory as "MPO"; its first picture is the photo.
_FORMAT_NAMES: Final[dict[str, _Format]] = {
    "JPEG": "JPEG",
    "MPO": "JPEG",
    "PNG": "PNG",
    "WEBP": "WEBP",
    "HEIF": "HEIF",
}

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
    max_non_jpeg_pixels: int = _DEFAULT_MAX_NON_JPEG_PIXELS,
    sha256: str | None = None,
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
            Other formats decode at full size, then are reduced by the largest integer factor
            (2 or more) that keeps them that large. None: full size.
        draft_oversample: how many times the letterbox size a reduced decode keeps (>= 1).
            Above 1, photos near the model size decode in full, exactly as Ultralytics reads
            them (full decode, then one resize), and only large photos are reduced.
        max_non_jpeg_pixels: largest accepted PNG, WebP or HEIC image, width x height as stored
            (``Settings.max_non_jpeg_pixels``): those decode whole, so their memory grows with it.
        sha256: the file's sha256 (hex) when the caller has computed it already (a service looking
            for the same upload before analysing it); computed here when None.

    Returns:
        The upright RGB array (see :class:`DecodedImage` for shapes), the file's facts and GPS fix.
        Alpha is composited on white; a PNG's tRNS colour key is ignored (the colour is kept);
        16-bit samples keep their top 8 bits; colour profiles are not applied (pixels as stored).

    Raises:
        EmptyImageError: the file has no bytes.
        ImageTooLargeError: over ``max_bytes``, or over ``max_pixels`` (or Pillow's limit), or a
            PNG, WebP or HEIC image over ``max_non_jpeg_pixels``.
        UnsupportedImageError: not JPEG, PNG, WebP or HEIC/HEIF, or HEIC without ``vipare[heic]``.
        CorruptImageError: a supported format that cannot be decoded (cut short, damaged).
        OSError: ``source`` is a path that cannot be read.
        ValueError: ``target_size`` or a limit is not positive (a programming error).
        TypeError: ``target_size`` is not a :class:`~vipare.size.Size` (a programming error).
    """
    if max_bytes < 1 or max_pixels < 1 or max_non_jpeg_pixels < 1:
        raise ValueError(
            f"max_bytes, max_pixels and max_non_jpeg_pixels must be >= 1, got {max_bytes}, {max_pixels} and "
            f"{max_non_jpeg_pixels}"
        )
    if draft_oversample < 1:
        raise ValueError(f"draft_oversample must be >= 1, got {draft_oversample}")
    if target_size is not None and not isinstance(target_size, Size):
        # A bare pair is ambiguous: numpy shapes are (height, width), Pillow sizes (width, height).
        raise TypeError(f"target_size must be a vipare.size.Size(width, height), got {target_size!r}")
    if target_size is not None and min(target_size) < 1:
        raise ValueError(f"target_size must be a positive Size(width, height), got {target_size!r}")
    data = read_bytes(source, max_bytes)
    img = open_image(data, max_pixels, max_non_jpeg_pixels)
    try:
        return _decode(img, data, target_size, draft_oversample, sha256)
    finally:
        img.close()


def _decode(
    img: Image.Image, data: bytes, target_size: Size | None, draft_oversample: float, sha256: str | None
) -> DecodedImage:
    fmt = _FORMAT_NAMES[img.format or ""]
    stored_size = Size(*img.size)
    # pillow-heif applies the HEIF rotation/mirror (irot/imir) while decoding and resets the EXIF
    # orientation to 1, keeping the original value here.
    heif_orientation = img.info.get("original_orientation") if fmt == "HEIF" else None

    try:
        if fmt == "JPEG" and target_size is not None:
            with quiet_pillow():  # a JPEG's EXIF is parsed from APP1 without decoding the pixels
                orientation = exif.orientation(img)
            request = _draft_request(stored_size, orientation, target_size, draft_oversample)
            if request is not None:
                img.draft("RGB", request)
        img.load()
    except DECODE_ERRORS as exc:
        raise _corrupt(fmt, exc) from None

    with quiet_pillow():  # after load: a PNG's eXIf chunk may follow the pixels
        orientation = exif.orientation(img)
        tags = exif.read_exif(img)
        captured_at = exif.captured_at(tags)
        gps = gps_from_exif(tags)

    if fmt == "HEIF":
        applied = heif_orientation if isinstance(heif_orientation, int) and 1 <= heif_orientation <= 8 else 1
        upright = stored_size  # already upright
        method = None
    else:
        applied = orientation
        upright = _upright(stored_size, orientation)
        method = _TRANSPOSE.get(orientation)

    try:
        if fmt != "JPEG" and target_size is not None:
            img = _reduced(img, _reduce_factor(upright, target_size, draft_oversample))
        array = _rgb_array(img if method is None else img.transpose(method))
    except DECODE_ERRORS as exc:  # pragma: no cover - conversions of a loaded image do not fail
        raise _corrupt(fmt, exc) from None

    info = ImageInfo(
        width=upright.width,
        height=upright.height,
        format=fmt,
        sha256=sha256 or hashlib.sha256(data).hexdigest(),
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


def _reduce_factor(upright: Size, target_size: Size, oversample: float) -> int:
    """The largest integer factor that keeps a picture of ``upright`` size ``oversample`` times the letterbox.

    The same rule as :func:`_draft_request`, with any integer instead of 2, 4 or 8; 1: no reduction.
    """
    ratio = oversample * min(target_size.height / upright.height, target_size.width / upright.width)
    return max(1, int(1 / ratio)) if ratio > 0 else 1


# Modes Image.reduce works on as they are; the others are first converted to the mode named here.
# Alpha is premultiplied for the box filter (RGBa, La), so transparent pixels lend it no colour.
_REDUCE_MODES: Final[dict[str, str]] = {
    **{mode: mode for mode in ("L", "RGB", "I", "F", "RGBa", "La")},
    **dict.fromkeys(("RGBA", "PA"), "RGBa"),
    **dict.fromkeys(("I;16", "I;16B", "I;16L"), "I"),
    **dict.fromkeys(("CMYK", "YCbCr"), "RGB"),
    "LA": "La",
    "1": "L",
}


def _reduced(img: Image.Image, factor: int) -> Image.Image:
    """``img`` reduced ``factor`` times on each side (box filter); ``img`` itself when ``factor`` < 2."""
    if factor < 2:
        return img
    if img.mode == "P":
        target = "RGBa" if "transparency" in img.info else "RGB"
    else:
        target = _REDUCE_MODES.get(img.mode, "RGB")
    if img.mode != target:
        # RGBA -> RGBa goes through Pillow's premultiplying converter; P with a tRNS key through RGBA.
        source = img.convert("RGBA") if img.mode in ("P", "PA") and target == "RGBa" else img
        img = source.convert(target)
    return img.reduce(factor)


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

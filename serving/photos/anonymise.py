"""The bytes the store keeps of a photo: its faces and licence plates made unreadable.

:func:`anonymise` runs on every accepted photo before it is written (an upload, a camera frame, a
frame of ``POST /v1/batches``), so the store never holds a readable face or plate, and every
photo served, drawn on or exported comes from the blurred copy. The regions come from
:meth:`vipare.pipeline.Pipeline.private_regions` (on the reduced copy the analysis decoded);
then:

- no region: the uploaded bytes, which :meth:`serving.photos.store.PhotoStore.put` cleans of their
  metadata as for any photo (no decode, no re-encode: the common case stays cheap);
- regions: the photo is decoded in full, blurred (:func:`vipare.blur.blur`) and encoded again in
  its own format (JPEG, WebP and HEIF at quality 90, PNG lossless) with only its colour profile and,
  for a JPEG, its orientation, as :func:`serving.photos.metadata.clean_metadata` leaves any photo:
  no unblurred thumbnail survives in an EXIF block. A JPEG is blurred as stored, its upright regions
  moved onto its stored pixels (:func:`vipare.blur.blur`'s ``orientation``), and encoded as it was
  taken, so a 12 MP photo is never turned (a third of its decoding time); other formats are decoded
  upright.
  Whether plate bands take the coarse or the fine cells is decided before, on the reduced copy
  (:func:`fine_plates_needed`): one full-size decode and one encode per photo, whatever the choice.

The store names the file after the sha256 of the uploaded bytes, not of the stored ones, so the same
photo sent again is still recognised; the same bytes and regions always give the same stored bytes,
so :meth:`~serving.photos.store.PhotoStore.put`'s check that a file holds what it should still holds.
"""

from __future__ import annotations

import dataclasses
import io
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # a batch job's own process stores photos without loading OpenCV or onnxruntime
    from vipare.imaging import DecodedImage
    from vipare.pipeline import Pipeline
    from vipare.privacy import Region

__all__ = ["JPEG_QUALITY", "anonymise", "anonymised_copy", "fine_plates_needed"]

JPEG_QUALITY = 90
"""Quality of a re-encoded JPEG, WebP or HEIF: a blurred photo loses no visible detail elsewhere."""

_SAVE_FORMATS = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG", "WEBP": "WEBP", "HEIF": "HEIF"}


def anonymise(
    data: bytes,
    regions: Sequence[Region],
    *,
    max_pixels: int,
    max_non_jpeg_pixels: int,
    fine_plates: bool = False,
) -> bytes:
    """The bytes to store for a photo whose private regions are ``regions``.

    Args:
        data: the accepted photo's bytes (JPEG, PNG, WebP or HEIF).
        regions: faces, heads and plate bands, boxes in pixels of the upright original.
        max_pixels: the intake's pixel limit (the full-size decode checks it again).
        max_non_jpeg_pixels: the intake's pixel limit for PNG and HEIC, a quarter of it for WebP
            (``Settings.max_non_jpeg_pixels``): the analysis accepted the photo under it, so the
            blurring must not refuse it under a lower one.
        fine_plates: blur plate bands with fine cells (:func:`vipare.blur.blur`), as
            :func:`fine_plates_needed` decides; else every region with the coarse ones.

    Returns:
        ``data`` itself when there is nothing to blur; else the upright, blurred photo in the same
        format, without metadata.

    Raises:
        vipare.ImageError: the photo cannot be decoded in full (it was, reduced, by the analysis).
    """
    if not regions:
        return data
    from vipare.exif import orientation  # the decoders and OpenCV: only when there is work
    from vipare.intake import open_image

    with open_image(data, max_pixels, max_non_jpeg_pixels) as original:
        icc = original.info.get("icc_profile")
        fmt = _SAVE_FORMATS.get(original.format or "", "JPEG")
        stored_size = original.size
        turn = orientation(original) if fmt == "JPEG" else 1
    if not (isinstance(icc, bytes) and icc[16:20] == b"RGB "):
        icc = None  # a CMYK or grey profile would not fit the RGB pixels written
    pixels = _decoded(data, fmt, stored_size, turn, max_pixels, max_non_jpeg_pixels)
    return _encode(pixels, regions, fmt, icc, fine_plates=fine_plates)


def fine_plates_needed(pipeline: Pipeline, image: DecodedImage, regions: Sequence[Region], dumping: bool) -> bool:
    """Whether the photo's plate bands are to be blurred with fine cells (``anonymise(fine_plates=True)``).

    The coarse blur comes first; when it changes the verdict ``dumping`` the detector gave the photo
    (a blurred car read as a bin, a deposit beside blurred cars no longer found), the plate bands'
    fine cells are tried, and taken when they keep it. When neither keeps it, the coarse blur, the
    more private. Without a plate band there is nothing else to try: no detector runs.

    Both blurs are tried on ``image``, the reduced copy the analysis decoded, with the regions
    scaled to it: the detector sees that copy at its input size as it would see the stored photo
    decoded again, so no full-size decode or encode is spent on a copy that is not kept.

    Args:
        pipeline: the deposit detector's pipeline (its :meth:`~vipare.pipeline.Pipeline.analyze`).
        image: the photo as :meth:`~vipare.pipeline.Pipeline.decode` returned it.
        regions: its private regions, in pixels of the upright original.
        dumping: the photo's verdict.
    """
    if not any(r.kind == "plate" for r in regions):
        return False
    from vipare.blur import blur

    sx, sy = image.scale
    reduced = [_scaled(r, 1.0 / sx, 1.0 / sy) for r in regions]

    def keeps(fine: bool) -> bool:
        blurred = dataclasses.replace(image, array=blur(image.array, reduced, fine_plates=fine))
        return pipeline.analyze(blurred).verdict.dumping == dumping

    return not keeps(False) and keeps(True)


def anonymised_copy(
    pipeline: Pipeline, data: bytes, image: DecodedImage, regions: Sequence[Region], dumping: bool
) -> bytes:
    """:func:`anonymise` as the service stores a photo: at its pipeline's limits, plate cells chosen
    by :func:`fine_plates_needed` (``image``: the photo as the pipeline decoded it; ``dumping``: its verdict)."""
    return anonymise(
        data, regions, max_pixels=pipeline.settings.max_image_pixels,
        max_non_jpeg_pixels=pipeline.settings.max_non_jpeg_pixels,
        fine_plates=fine_plates_needed(pipeline, image, regions, dumping),
    )


def _scaled(region: Region, fx: float, fy: float) -> Region:
    def scale(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        return (box[0] * fx, box[1] * fy, box[2] * fx, box[3] * fy)

    return dataclasses.replace(region, box=scale(region.box), whole=scale(region.whole) if region.whole else None)


class _Pixels:
    """The photo decoded in full: a JPEG as stored, BGR, from OpenCV's codec, with the EXIF
    ``orientation`` a viewer applies; else upright RGB from vipare's decoding (orientation 1)."""

    def __init__(self, array: np.ndarray, bgr: bool, orientation: int = 1) -> None:
        self.array, self.bgr, self.orientation = array, bgr, orientation


def _decoded(
    data: bytes, fmt: str, stored_size: tuple[int, int], turn: int, max_pixels: int, max_non_jpeg_pixels: int
) -> _Pixels:
    """A JPEG through OpenCV's codec as stored (twice as fast as Pillow's on a 12 MP photo, and not
    turned: ``turn``, vipare's reading of its orientation, stays for the viewer), anything else as
    vipare decodes it: upright.

    A JPEG OpenCV cannot decode, or decodes to another size than Pillow read (``stored_size``:
    width, height), is decoded by vipare instead.
    """
    import cv2

    from vipare.imaging import load_image

    if fmt == "JPEG":
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if bgr is not None and (bgr.shape[1], bgr.shape[0]) == stored_size:
            return _Pixels(np.asarray(bgr, dtype=np.uint8), bgr=True, orientation=turn)
    image = load_image(data, max_bytes=len(data), max_pixels=max_pixels, max_non_jpeg_pixels=max_non_jpeg_pixels)
    return _Pixels(image.array, bgr=False)


def _encode(pixels: _Pixels, regions: Sequence[Region], fmt: str, icc: bytes | None, *, fine_plates: bool) -> bytes:
    """The blurred photo in its own format (JPEG, WebP and HEIF at quality 90, PNG lossless), no metadata
    but its colour profile and, for a JPEG decoded as stored, its orientation."""
    import cv2

    from serving.photos.metadata import oriented_jpeg
    from vipare.blur import blur

    # decoded for this alone: blurred in place (a decoder's read-only array copied first)
    array = blur(pixels.array, regions, fine_plates=fine_plates, in_place=pixels.array.flags.writeable,
                 orientation=pixels.orientation)
    if pixels.bgr:
        ok, encoded = cv2.imencode(".jpg", array, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if ok:
            jpeg = encoded.tobytes()
            return oriented_jpeg(_with_icc(jpeg, icc) if icc else jpeg, pixels.orientation)
        array = np.ascontiguousarray(array[:, :, ::-1])  # Pillow's JPEG encoding, the orientation kept as well
    options: dict[str, object] = {} if fmt == "PNG" else {"quality": JPEG_QUALITY}
    if icc:
        options["icc_profile"] = icc
    out = io.BytesIO()
    Image.fromarray(array).save(out, fmt, **options)
    return oriented_jpeg(out.getvalue(), pixels.orientation) if pixels.bgr else out.getvalue()


def _with_icc(jpeg: bytes, icc: bytes) -> bytes:
    """``jpeg`` with the colour profile ``icc`` in APP2 ``ICC_PROFILE`` segments after its APP0."""
    chunk = 65519  # 65535 - 2 (length) - 14 (ICC_PROFILE\0 + sequence number + count)
    parts = [icc[i : i + chunk] for i in range(0, len(icc), chunk)]
    segments = b"".join(
        b"\xff\xe2" + struct.pack(">H", len(part) + 16) + b"ICC_PROFILE\x00" + bytes((n, len(parts))) + part
        for n, part in enumerate(parts, start=1)
    )
    at = 2
    if jpeg[2:4] == b"\xff\xe0":  # after the JFIF header
        at = 4 + struct.unpack(">H", jpeg[4:6])[0]
    return jpeg[:at] + segments + jpeg[at:]

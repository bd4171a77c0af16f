"""The bytes the store keeps of a photo: its faces and licence plates made unreadable.

:func:`anonymise` runs on every accepted photo before it is written (an upload, a camera frame, a
frame of ``POST /v1/batches``), so the store never holds a readable face or plate, and every
photo served, drawn on or exported comes from the blurred copy. The regions come from
:meth:`vipare.pipeline.Pipeline.private_regions` (on the reduced copy the analysis decoded);
then:

- no region: the uploaded bytes, which :meth:`serving.photos.store.PhotoStore.put` cleans of their
  metadata as for any photo (no decode, no re-encode: the common case stays cheap);
- regions: the photo is decoded in full, turned upright, blurred (:func:`vipare.privacy.blur_regions`)
  and encoded again in its own format (JPEG, WebP and HEIF at quality 90, PNG lossless), with no
  metadata at all (its colour profile kept), so no unblurred thumbnail survives in an EXIF block.

The store names the file after the sha256 of the uploaded bytes, not of the stored ones, so the same
photo sent again is still recognised; the same bytes and regions always give the same stored bytes,
so :meth:`~serving.photos.store.PhotoStore.put`'s check that a file holds what it should still holds.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

from PIL import Image

if TYPE_CHECKING:  # a batch job's own process stores photos without loading OpenCV or onnxruntime
    from vipare.privacy import Region

__all__ = ["JPEG_QUALITY", "anonymise"]

JPEG_QUALITY = 90
"""Quality of a re-encoded JPEG, WebP or HEIF: a blurred photo loses no visible detail elsewhere."""

_SAVE_FORMATS = {"JPEG": "JPEG", "PNG": "PNG", "WEBP": "WEBP", "HEIF": "HEIF"}


def anonymise(data: bytes, regions: Sequence[Region], *, max_pixels: int) -> bytes:
    """The bytes to store for a photo whose private regions are ``regions``.

    Args:
        data: the accepted photo's bytes (JPEG, PNG, WebP or HEIF).
        regions: faces, heads and plate bands, boxes in pixels of the upright original.
        max_pixels: the intake's pixel limit (the full-size decode checks it again).

    Returns:
        ``data`` itself when there is nothing to blur; else the upright, blurred photo in the same
        format, without metadata.

    Raises:
        vipare.ImageError: the photo cannot be decoded in full (it was, reduced, by the analysis).
    """
    if not regions:
        return data
    from vipare.imaging import load_image  # OpenCV and the decoders: only when there is work
    from vipare.intake import open_image
    from vipare.privacy import blur_regions

    image = load_image(data, max_bytes=len(data), max_pixels=max_pixels)
    blurred = blur_regions(image.array, [region.box for region in regions])
    with open_image(data, max_pixels) as original:
        icc = original.info.get("icc_profile")
    fmt = _SAVE_FORMATS[image.info.format]
    options: dict[str, object] = {} if fmt == "PNG" else {"quality": JPEG_QUALITY}
    if icc:
        options["icc_profile"] = icc
    out = io.BytesIO()
    Image.fromarray(blurred).save(out, fmt, **options)
    return out.getvalue()

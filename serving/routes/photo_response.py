"""A copy of a stored photo as an HTTP answer: the file itself from a folder, streamed from a bucket."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import BinaryIO

from fastapi import Response
from fastapi.responses import FileResponse, StreamingResponse

from serving.photos.backend import Kind, PhotoBackend
from serving.photos.store import MEDIA_TYPES

__all__ = ["CHUNK_BYTES", "photo_response", "streamed"]

CHUNK_BYTES = 256 * 1024
"""How much of an object is read from the store per piece sent: a phone photo in a dozen reads, little memory."""


def photo_response(
    photos: PhotoBackend, sha256: str, ext: str, kind: Kind = "photo", *, headers: Mapping[str, str] | None = None
) -> Response:
    """The copy ``kind`` of a photo, with ``headers``: a ``FileResponse`` when the store has a file here
    (Range, ETag and Last-Modified included), else the object's body streamed through the service.

    Blocking for a bucket (the object is opened here): call it from a worker thread.

    Raises:
        FileNotFoundError: the copy is not in a bucket store (a folder's file is looked for when sent).
    """
    media_type = MEDIA_TYPES[ext]
    path = photos.local_path(sha256, ext, kind)
    if path is not None:
        return FileResponse(path, media_type=media_type, headers=dict(headers or {}))
    stream, size = photos.open(sha256, ext, kind)
    return streamed(stream, size, media_type=media_type, headers=headers)


def streamed(
    stream: BinaryIO, size: int, *, media_type: str, headers: Mapping[str, str] | None = None
) -> StreamingResponse:
    """``stream`` (``size`` bytes, e.g. an object's body) sent in pieces of :data:`CHUNK_BYTES`, closed once sent
    or when the client goes away."""
    return StreamingResponse(
        _chunks(stream), media_type=media_type, headers={**(headers or {}), "Content-Length": str(size)}
    )


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    try:
        while chunk := stream.read(CHUNK_BYTES):
            yield chunk
    finally:
        stream.close()

"""What every photo store offers, whether its files are in a folder on this machine or in an S3 bucket.

A photo has up to three copies, each named by the sha256 of the uploaded bytes and its extension
(:data:`serving.photos.store.EXTENSIONS`), each of one :data:`Kind`:

- ``photo``: the stored copy, blurred, the one served (:meth:`PhotoBackend.put`);
- ``held``: the accepted upload waiting for its blurred copy, never served (:mod:`serving.photos.pending`);
- ``original``: the unblurred original, kept when a setting says so (:mod:`serving.originals`).

Two stores implement :class:`PhotoBackend`: :class:`serving.photos.store.PhotoStore`, a folder under
``data_dir`` (the default), and :class:`serving.photos.s3.S3PhotoStore`, a bucket of an S3-compatible
store several hosts share (``VIPARE_PHOTO_STORE=s3://bucket/prefix``, the ``[s3]`` extra).
:func:`serving.photos.location.open_photos` opens the one the settings name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO, Literal, Protocol

__all__ = ["Kind", "PhotoBackend"]

Kind = Literal["photo", "held", "original"]
"""Which copy of a photo: the stored (blurred) one, the one held for blurring, or the unblurred original."""


class PhotoBackend(Protocol):
    """A photo store: the copies of each photo by sha256, extension and :data:`Kind`.

    Reads raise ``FileNotFoundError`` for a copy that is not there; a store that cannot be reached or
    refuses a write raises another ``OSError`` (``EACCES`` when it refuses access), which the service
    answers as it answers a failing disk (:func:`serving.errors.storage_error`).
    """

    location: str
    """Where the photos are (a folder, ``s3://bucket/prefix``), for messages."""

    shared: bool
    """True when processes on other machines write to the store too, where no worker lock reaches them
    (:class:`serving.photos.workers.WorkerLock`): the orphan sweep then always spares recent files."""

    def put(self, data: bytes, sha256: str, ext: str, *, durable: bool = True) -> bool:
        """Store a photo, with only the metadata display needs; False when it was already there."""
        ...

    def hold(self, data: bytes, sha256: str, ext: str) -> bool:
        """Keep an accepted photo, metadata removed, until its blurred copy is stored; False when held already."""
        ...

    def keep_original(self, data: bytes, sha256: str, ext: str) -> bool:
        """Keep an upload's unblurred original (metadata removed); False when kept already."""
        ...

    def release(self, sha256: str, ext: str) -> None:
        """Drop a held photo (its blurred copy is stored, or no report needs it)."""
        ...

    def held(self) -> list[tuple[str, str, float]]:
        """The photos held for blurring: (sha256, extension, seconds since written), oldest first."""
        ...

    def originals(self) -> list[tuple[str, str, float]]:
        """The unblurred originals kept: (sha256, extension, seconds since written), oldest first."""
        ...

    def exists(self, sha256: str, ext: str, kind: Kind = "photo") -> bool:
        """Whether the store holds this copy."""
        ...

    def size(self, sha256: str, ext: str, kind: Kind = "photo") -> int | None:
        """The copy's size in bytes; None when it is not there."""
        ...

    def read(self, sha256: str, ext: str, kind: Kind = "photo") -> bytes:
        """The copy's bytes."""
        ...

    def open(self, sha256: str, ext: str, kind: Kind = "photo") -> tuple[BinaryIO, int]:
        """The copy as a stream to read and close, and its size in bytes."""
        ...

    def local_path(self, sha256: str, ext: str, kind: Kind = "photo") -> Path | None:
        """The copy's file on this machine, for a store that has one (whether or not the copy is there); else None."""
        ...

    def version(self, sha256: str, ext: str) -> str:
        """A token of the stored copy that changes whenever its bytes are written again (a cache key)."""
        ...

    def delete(self, sha256: str, ext: str, kind: Kind = "photo") -> None:
        """Delete a copy; nothing when it is not there."""
        ...

    def sync_file(self, sha256: str, ext: str) -> Path | None:
        """Make durable a photo written with ``put(durable=False)``; the folder to sync next, if any."""
        ...

    def sync_folder(self, folder: Path) -> None:
        """Make durable a folder :meth:`sync_file` returned, or the store's root."""
        ...

    def remove_orphans(self, referenced: Callable[[Sequence[str]], set[str]], *, older_than_s: float = 0.0) -> int:
        """Delete the copies no report references, older than ``older_than_s`` seconds; returns how many."""
        ...

    def claim(self, database_uid: str) -> str:
        """The id of the database whose reports the store's photos belong to, recorded in the store.

        ``database_uid`` when the store recorded none yet (it is recorded now, unless another process
        recorded its own first: then that one); else the one recorded, whatever ``database_uid`` is.
        """
        ...

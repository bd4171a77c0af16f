"""The photo store in a folder: one file per distinct upload, named by the sha256 of the uploaded bytes.

``<data_dir>/photos/ab/abcdef...64 hex....jpg``, held copies in ``.held/`` and originals in
``.originals/`` (:mod:`serving.photos.backend`: what it shares with the S3 store). The stored copy
keeps only what display needs (the picture, its colour profile and orientation; no GPS, XMP, serial
numbers or thumbnails: the position lives in the database, with its source and accuracy), by
:func:`serving.photos.metadata.clean_metadata`, which leaves a JPEG's, PNG's or WebP's picture byte
for byte as it came.

Crash safety: a file is written to a temporary name in its final folder, flushed to disk, then
renamed (atomic), and the folder is synced; the database rows are committed after that. A batch
job's workers write without the fsyncs (``put(durable=False)``) and its writer syncs the files of a
transaction (:meth:`PhotoStore.sync_file` on threads while the workers go on, then each folder once
with :meth:`PhotoStore.sync_folder`) before committing it; a photo is stored again when the file of
its name holds other bytes (one a power cut left unsynced and torn), so the file a committed row
refers to holds the photo whichever way it came. A crash between the two leaves a file no row
references, which :meth:`PhotoStore.remove_orphans` deletes at the next start;
:class:`serving.photos.workers.WorkerLock` tells a starting worker when that sweep is needed and
which files it may delete.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from serving.photos.backend import Kind
from serving.photos.metadata import clean_metadata

__all__ = ["EXTENSIONS", "MEDIA_TYPES", "PhotoStore", "fsync_path"]

EXTENSIONS: dict[str, str] = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "HEIF": "heic"}
"""``ImageInfo.format`` -> file extension of the stored copy."""

MEDIA_TYPES: dict[str, str] = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp", "heic": "image/heic"}

_TMP_PREFIX = ".tmp-"
HELD = ".held"
"""Folder of the store where accepted photos wait for their blurred copy (:mod:`serving.photos.pending`)."""
ORIGINALS = ".originals"
"""Folder of the store where unblurred originals are kept, when a setting says so (:mod:`serving.originals`)."""
_ORPHAN_BATCH = 500


OWNER_FILE = ".database"
"""The file under the store's root that names the database its photos belong to (:meth:`PhotoStore.claim`)."""


class PhotoStore:
    """Photos under one folder, fanned out by the first two hex digits of their sha256.

    A :class:`serving.photos.backend.PhotoBackend`.

    Args:
        root: the folder (created when missing).
    """

    shared = False
    """Only processes on this machine write here, and the worker lock covers them all."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.location = str(root)

    def local_path(self, sha256: str, ext: str, kind: Kind = "photo") -> Path:
        """The file of a copy of the photo (:meth:`path`, :meth:`held_path`, :meth:`original_path`)."""
        if kind == "held":
            return self.held_path(sha256, ext)
        if kind == "original":
            return self.original_path(sha256, ext)
        return self.path(sha256, ext)

    def exists(self, sha256: str, ext: str, kind: Kind = "photo") -> bool:
        """Whether the file of this copy is there."""
        return self.local_path(sha256, ext, kind).exists()

    def size(self, sha256: str, ext: str, kind: Kind = "photo") -> int | None:
        """The size of this copy's file in bytes; None when there is none."""
        try:
            return self.local_path(sha256, ext, kind).stat().st_size
        except FileNotFoundError:
            return None

    def read(self, sha256: str, ext: str, kind: Kind = "photo") -> bytes:
        """The bytes of this copy's file.

        Raises:
            FileNotFoundError: there is none.
        """
        return self.local_path(sha256, ext, kind).read_bytes()

    def open(self, sha256: str, ext: str, kind: Kind = "photo") -> tuple[BinaryIO, int]:
        """This copy's file, open for reading, and its size.

        Raises:
            FileNotFoundError: there is none.
        """
        handle = open(self.local_path(sha256, ext, kind), "rb")  # noqa: SIM115 - the caller closes it
        return handle, os.fstat(handle.fileno()).st_size

    def version(self, sha256: str, ext: str) -> str:
        """The stored file's name, size, modification time and inode: a new file (a rename) changes it.

        Raises:
            FileNotFoundError: there is none.
        """
        path = self.path(sha256, ext)
        stat = path.stat()
        return f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ino}"

    def delete(self, sha256: str, ext: str, kind: Kind = "photo") -> None:
        """Delete this copy's file, if there is one."""
        self.local_path(sha256, ext, kind).unlink(missing_ok=True)

    def path(self, sha256: str, ext: str) -> Path:
        """Where the photo with this sha256 and extension lives."""
        return self.root / sha256[:2] / f"{sha256}.{ext}"

    def put(self, data: bytes, sha256: str, ext: str, *, durable: bool = True) -> bool:
        """Store a photo, with only the metadata display needs, atomically; False when it was already there.

        Args:
            data: the uploaded file, as accepted by vipare.
            sha256: hex sha256 of ``data`` (the file's name).
            ext: extension for the format (:data:`EXTENSIONS`).
            durable: on disk when this returns: the file and its folders fsynced. False leaves that
                to :meth:`sync`, which must return before anything refers to the photo.
        """
        return self._write(self.path(sha256, ext), clean_metadata(data), durable=durable)

    def held_path(self, sha256: str, ext: str) -> Path:
        """Where an accepted photo waits for its blurred copy (:meth:`hold`); never served."""
        return self.root / HELD / f"{sha256}.{ext}"

    def hold(self, data: bytes, sha256: str, ext: str) -> bool:
        """Keep an accepted photo, metadata removed, on disk until its blurred copy is stored; False when held already.

        Its report may be committed once this returns; :meth:`put` then stores the blurred copy and
        :meth:`release` drops this one (:mod:`serving.photos.pending`).
        """
        return self._write(self.held_path(sha256, ext), clean_metadata(data), durable=True)

    def release(self, sha256: str, ext: str) -> None:
        """Drop a held photo (its blurred copy is stored, or no report needs it)."""
        self.held_path(sha256, ext).unlink(missing_ok=True)

    def held(self) -> list[tuple[str, str, float]]:
        """The photos held for blurring: (sha256, extension, seconds since written), oldest first."""
        return self._listed(HELD)

    def original_path(self, sha256: str, ext: str) -> Path:
        """Where an upload's unblurred original is kept, when a setting says so (:mod:`serving.originals`)."""
        return self.root / ORIGINALS / f"{sha256}.{ext}"

    def keep_original(self, data: bytes, sha256: str, ext: str) -> bool:
        """Keep an upload's unblurred original (metadata removed), on disk; False when kept already."""
        return self._write(self.original_path(sha256, ext), clean_metadata(data), durable=True)

    def originals(self) -> list[tuple[str, str, float]]:
        """The unblurred originals kept: (sha256, extension, seconds since written), oldest first."""
        return self._listed(ORIGINALS)

    def _listed(self, folder: str) -> list[tuple[str, str, float]]:
        try:
            with os.scandir(self.root / folder) as entries:
                found = [(e.stat().st_mtime, e.name) for e in entries if not e.name.startswith(_TMP_PREFIX)]
        except FileNotFoundError:
            return []
        now = time.time()
        listed = []
        for mtime, name in sorted(found):
            sha256, _, ext = name.partition(".")
            listed.append((sha256, ext, now - mtime))
        return listed

    def _write(self, final: Path, content: bytes, *, durable: bool) -> bool:
        if _holds(final, content):
            if durable:  # it may be a batch worker's, not synced yet
                self.sync_folder(self.sync_file_at(final))
                self.sync_folder(self.root)
            return False
        folder_is_new = not final.parent.exists()
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
        try:
            with open(tmp, "wb") as handle:
                handle.write(content)
                if durable:
                    handle.flush()
                    os.fsync(handle.fileno())
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        if durable:
            fsync_path(final.parent)
            if folder_is_new:
                fsync_path(self.root)
        return True

    def sync(self, sha256: str, ext: str) -> None:
        """Put a photo written with ``put(durable=False)`` on disk: its file and folders fsynced.

        Raises:
            OSError: the file is not there, or the disk failed to write it.
        """
        self.sync_folder(self.sync_file(sha256, ext))
        self.sync_folder(self.root)

    def sync_file(self, sha256: str, ext: str) -> Path:
        """The first half of :meth:`sync`: fsync the photo's file; returns its folder.

        For many photos at once: their files, then each of their folders once and the root
        (:meth:`sync_folder`), before anything refers to them.
        """
        return self.sync_file_at(self.path(sha256, ext))

    def sync_file_at(self, path: Path) -> Path:
        """fsync one file of the store; returns its folder."""
        fsync_path(path)
        return path.parent

    def sync_folder(self, folder: Path) -> None:
        """The second half of :meth:`sync`: fsync a folder of the store (a photo's, or the root, for new folders)."""
        fsync_path(folder)

    def files(self) -> Iterator[Path]:
        """Every file in the store, temporary ones included, in name order.

        Read with ``os.scandir``, whose entries know their type, so listing costs no ``stat`` per photo.
        """
        with os.scandir(self.root) as entries:
            folders = sorted(entry.path for entry in entries if entry.is_dir(follow_symlinks=False))
        for folder in folders:
            with os.scandir(folder) as entries:
                names = sorted(entry.path for entry in entries if entry.is_file(follow_symlinks=False))
            yield from map(Path, names)

    def claim(self, database_uid: str) -> str:
        """The id of the database the photos belong to (:meth:`serving.photos.backend.PhotoBackend.claim`),
        in ``<root>/.database``, made whole or not at all (written aside, then linked under its name)."""
        marker = self.root / OWNER_FILE
        if not marker.exists():
            aside = self.root / f"{OWNER_FILE}.{os.getpid()}.{threading.get_ident()}.tmp"
            with open(aside, "w", encoding="ascii") as handle:
                handle.write(f"{database_uid}\n")
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(aside, marker)  # fails when another process linked its own first
            except FileExistsError:
                pass
            finally:
                aside.unlink(missing_ok=True)
            fsync_path(self.root)
        return marker.read_text(encoding="ascii").strip()

    def remove_orphans(self, referenced: Callable[[Sequence[str]], set[str]], *, older_than_s: float = 0.0) -> int:
        """Delete files no report references, and leftover temporary files.

        Args:
            referenced: given sha256 values, returns those some report references.
            older_than_s: keep files modified less than this many seconds ago.

        Returns:
            How many files were deleted.
        """
        now, removed = time.time(), 0
        batch: list[Path] = []

        def flush() -> int:
            keep = referenced([p.name.split(".", 1)[0] for p in batch])
            gone = 0
            for path in batch:
                if path.name.split(".", 1)[0] not in keep and _age(path, now) >= older_than_s:
                    path.unlink(missing_ok=True)
                    gone += 1
            batch.clear()
            return gone

        for path in self.files():
            if path.name.startswith(_TMP_PREFIX):
                if _age(path, now) >= older_than_s:
                    path.unlink(missing_ok=True)
                    removed += 1
                continue
            batch.append(path)
            if len(batch) >= _ORPHAN_BATCH:
                removed += flush()
        if batch:
            removed += flush()
        return removed


def _holds(path: Path, content: bytes) -> bool:
    """Whether the file at ``path`` holds exactly ``content`` (False when there is none)."""
    try:
        if path.stat().st_size != len(content):
            return False
        return path.read_bytes() == content
    except FileNotFoundError:
        return False


def _age(path: Path, now: float) -> float:
    try:
        return now - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def fsync_path(path: Path) -> None:
    """fsync a file or a folder (a folder's entries: what was created, renamed or deleted in it).

    Args:
        path: the file or folder.

    Raises:
        OSError: it is not there, or the disk failed to write it.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""Where a batch job's results go, and how it knows which frames an earlier run already took.

Two sinks, one contract: :meth:`known` gives the ``(camera_id, sha256)`` pairs already written, and
:meth:`write` writes accepted frames so that each is either fully written or not at all.

* :class:`StoreSink`: the service's own store (``--data-dir`` / ``VIPARE_DATABASE_URL``). Each call
  to :meth:`StoreSink.write` is one write transaction through :func:`serving.reports.store.store_reports`,
  the function the upload route uses: same de-duplication (one report per client and sha256; a
  registered camera's client is ``camera:<id>``, whichever way its frames come), same incidents.
  The photo files are already in the store (workers put them, without fsync) when a transaction
  begins; the sink fsyncs them on a few threads as the frames come back (:meth:`StoreSink.photo_put`),
  so that the workers never wait on the disk, and waits for those of a transaction's frames before
  committing it. A crash in between leaves files no row references, which the next start deletes.
  :meth:`StoreSink.write` may run on another thread than the one that reports the photos (the job's
  writer thread), one transaction at a time.
* :class:`JsonlSink`: one JSON object per line, appended, flushed and fsynced line by line, each
  with its frame's camera and sha256. On opening, a last line without its newline (the job was
  killed while writing it) is cut off; a damaged complete line stops the job. The file is locked
  while a job appends to it.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import select

from serving.auth import Principal, camera_client_ref, camera_principal
from serving.cameras import CameraSpec, position_of
from serving.config import ServiceSettings
from serving.db import write_session
from serving.models import Report, utcnow
from serving.photos.location import PhotoLocation, photo_location
from serving.photos.store import EXTENSIONS
from serving.reports.store import NewReport, observed_time, places_of, store_reports
from serving.storage import grouping_policy, open_storage
from vipare.results import ImageResult

__all__ = ["Accepted", "JsonlSink", "Sink", "SinkError", "StoreSink", "Written", "photo_disk_error"]

BATCH_SUBMITTER = "vipare batch"
"""How batch jobs appear in reports (``submitted_by``) and incident histories."""


class SinkError(RuntimeError):
    """The output cannot be used (locked by another job, damaged); the message says what to do."""


def photo_disk_error(problem: str) -> SinkError:
    """What stops a job whose photos cannot be written or synced: ``problem``, and what to do."""
    return SinkError(f"{problem}; the frames written before stay written: free the disk (or fix it) "
                     "and run the same command again")


@dataclass(frozen=True, slots=True)
class Accepted:
    """An analysed frame, ready to be written.

    Attributes:
        name: the frame's name in the source.
        camera_id: its camera.
        result: the analysis (with a location).
        captured_at: the time ``frames.csv`` gives it, if any.
        fallback_time: the time read from a naive EXIF clock or the file name, used when neither the
            sidecar nor EXIF (GPS time, or a time with offset) gives one.
    """

    name: str
    camera_id: str
    result: ImageResult
    captured_at: datetime | None
    fallback_time: datetime | None


@dataclass(frozen=True, slots=True)
class Written:
    """What writing one frame did.

    Attributes:
        created: False when the same frame of the same camera was already there (a twin).
        incident_action: opened, joined or late when the frame's deposit reached an incident.
    """

    created: bool
    incident_action: str | None = None


class Sink(Protocol):
    """Where results go."""

    photos_at: PhotoLocation | None
    """The photo store the workers put accepted frames in; None when the sink keeps no photos."""

    def known(self, camera_ids: Iterable[str]) -> set[tuple[str, str]]:
        """``(camera_id, sha256)`` of the frames already written for these cameras."""
        ...

    def write(self, items: Sequence[Accepted]) -> list[Written]:
        """Write the frames, all or none of them."""
        ...

    def store_photo(self, data: bytes, sha256: str, ext: str) -> None:
        """Put a photo in the store, when the worker that analysed it could not."""
        ...

    def photo_put(self, sha256: str, ext: str) -> None:
        """A worker put this photo in :attr:`photos_at` without fsync: on disk before its frame is written."""
        ...

    def close(self) -> None:
        """Release what the sink holds."""
        ...


class StoreSink:
    """The service's store: reports and incidents in its database, photos in its photo store.

    Args:
        settings: the service's settings (database, data folder, grouping policy).
        registry: the registered cameras by id.
    """

    SYNC_THREADS = 4
    """Threads that fsync photos while the job goes on (fsyncs wait on the disk, not on a core)."""

    def __init__(self, settings: ServiceSettings, registry: dict[str, CameraSpec]) -> None:
        self.storage = open_storage(settings)
        self.photos_at: PhotoLocation | None = photo_location(settings)
        self._syncer = ThreadPoolExecutor(max_workers=self.SYNC_THREADS, thread_name_prefix="photo-sync")
        self._syncing: dict[tuple[str, str], list[Future[Path | None]]] = {}  # (sha256, ext) -> its files' fsyncs
        self._syncing_lock = threading.Lock()
        self.policy = grouping_policy(settings)
        self._principals: dict[str, Principal] = {
            camera_id: camera_principal(camera_id, position_of(spec), BATCH_SUBMITTER)
            for camera_id, spec in registry.items()
        }

    def known(self, camera_ids: Iterable[str]) -> set[tuple[str, str]]:
        """Frames these cameras already have reports for, by any way they came (batch or camera key)."""
        refs = {camera_client_ref(c): c for c in camera_ids}
        found: set[tuple[str, str]] = set()
        with self.storage.sessions() as session:
            for chunk in _chunks(sorted(refs), 500):
                rows = session.execute(select(Report.client_ref, Report.sha256).where(Report.client_ref.in_(chunk)))
                found.update((refs[ref], sha256) for ref, sha256 in rows)
        return found

    def write(self, items: Sequence[Accepted]) -> list[Written]:
        """Store the reports of these frames and give them their incidents, in one transaction.

        First waits until the photos of these frames are on disk: their files, synced as they came
        (:meth:`photo_put`), then their folders, each once.

        Raises:
            SinkError: a photo could not be put on disk; nothing of these frames is written.
        """
        with self._syncing_lock:
            syncing = [
                file_synced
                for key in {(item.result.image.sha256, EXTENSIONS[item.result.image.format]) for item in items}
                for file_synced in self._syncing.pop(key, [])
            ]
        try:
            folders = {folder for file_synced in syncing if (folder := file_synced.result()) is not None}
            folders |= {folder.parent for folder in folders}  # the store's root, for the folders made new
            for folder_synced in [self._syncer.submit(self.storage.photos.sync_folder, f) for f in folders]:
                folder_synced.result()
        except OSError as exc:
            raise photo_disk_error(f"cannot put the frames' photos on disk in {self.photos_at}: {exc}") from exc
        received = utcnow()
        reports = [
            NewReport(
                self._principals[item.camera_id], item.result, EXTENSIONS[item.result.image.format], received,
                captured_at=item.captured_at, fallback_time=item.fallback_time, camera_id=item.camera_id,
            )
            for item in items
        ]
        places = places_of((item.result for item in items), self.policy)
        with write_session(self.storage.sessions, places=places) as session:
            submitted = store_reports(session, reports, policy=self.policy)
        return [Written(outcome.created, outcome.incident_action) for outcome in submitted]

    def store_photo(self, data: bytes, sha256: str, ext: str) -> None:
        """Put a photo in the store (display metadata only, atomically), on disk before its frame is written.

        Raises:
            SinkError: the store cannot take it (disk full, say).
        """
        try:
            self.storage.photos.put(data, sha256, ext, durable=False)
        except OSError as exc:
            raise photo_disk_error(f"cannot store a photo in {self.photos_at}: {exc.strerror or exc}") from exc
        self.photo_put(sha256, ext)

    def photo_put(self, sha256: str, ext: str) -> None:
        """Start putting on disk a photo written without fsync; the :meth:`write` of its frame waits for it."""
        file_synced = self._syncer.submit(self.storage.photos.sync_file, sha256, ext)
        with self._syncing_lock:
            self._syncing.setdefault((sha256, ext), []).append(file_synced)

    def close(self) -> None:
        """Release the database and the worker lock (photos still being synced are waited for)."""
        self._syncer.shutdown(wait=True)
        self.storage.close()


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class JsonlSink:
    """JSON lines: one object per frame, ``{"frame", "camera_id", "sha256", "captured_at", "observed_at",
    "received_at", "result"}``, where ``result`` is the library's :class:`~vipare.results.ImageResult`.

    Args:
        path: the file; created when missing, appended to otherwise (see the module doc).

    Raises:
        SinkError: another job holds the file, or a complete line is not a JSON object with
            ``camera_id`` and ``sha256``.
    """

    photos_at: PhotoLocation | None = None

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise SinkError(
                f"{path} is being written by another batch job; wait for it, or use another file"
            ) from None
        try:
            self._known, self.dropped_bytes = self._recover()
        except BaseException:
            os.close(self._fd)
            raise

    def _recover(self) -> tuple[set[tuple[str, str]], int]:
        """Read what earlier runs wrote; cut off a torn last line. Returns the known frames and bytes cut."""
        known: set[tuple[str, str]] = set()
        end = 0  # just after the last complete line
        with open(self.path, "rb") as file:
            for number, line in enumerate(file, 1):
                if not line.endswith(b"\n"):  # the last line, cut short by a kill
                    break
                end += len(line)
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    known.add((str(record["camera_id"]), str(record["sha256"])))
                except (ValueError, KeyError, TypeError):
                    raise SinkError(
                        f"{self.path} line {number} is not a result line of vipare batch; move the file away or "
                        "give another --output"
                    ) from None
        size = os.fstat(self._fd).st_size
        if end < size:
            os.truncate(self.path, end)
            os.fsync(self._fd)
        return known, size - end

    def known(self, camera_ids: Iterable[str]) -> set[tuple[str, str]]:
        """Frames of these cameras the file already holds."""
        wanted = set(camera_ids)
        return {pair for pair in self._known if pair[0] in wanted}

    def write(self, items: Sequence[Accepted]) -> list[Written]:
        """Append one line per frame, each flushed to disk before the next."""
        received = utcnow()
        written = []
        for item in items:
            key = (item.camera_id, item.result.image.sha256)
            if key in self._known:
                written.append(Written(created=False))
                continue
            observed, captured = observed_time(
                item.result, received, sent=item.captured_at, fallback=item.fallback_time
            )
            record: dict[str, Any] = {
                "frame": item.name,
                "camera_id": item.camera_id,
                "sha256": item.result.image.sha256,
                "captured_at": captured.isoformat() if captured else None,
                "observed_at": observed.isoformat(),
                "received_at": received.isoformat(),
                "result": item.result.model_dump(mode="json"),
            }
            line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
            view = memoryview(line)
            while view:  # one write per line in practice: a kill leaves whole lines and at most a torn last one
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)
            self._known.add(key)
            written.append(Written(created=True))
        return written

    def store_photo(self, data: bytes, sha256: str, ext: str) -> None:
        """JSON lines keep no photos."""

    def photo_put(self, sha256: str, ext: str) -> None:
        """JSON lines keep no photos."""

    def close(self) -> None:
        """Release the file and its lock."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

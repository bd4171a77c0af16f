"""Export jobs: a national export written to a file by a thread of the service, then downloaded.

A job is files, not rows: ``<id>.json`` says what the job is and how far it went, ``<id>.csv`` (or
``.geojson``) appears whole when it is done (written to ``.part``, synced, renamed), so that any
worker of the service (a shared data folder) answers for any job. A running job writes its progress
every few seconds; one whose progress stopped for :data:`STALE_AFTER` (its process died) reads as
failed, to be started again. Finished files are deleted after ``keep``. What the file holds comes
from :mod:`serving.bulk_exports`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from serving.errors import ServiceError
from serving.models import utcnow

__all__ = ["STALE_AFTER", "ExportJob", "ExportJobs", "ExportNotReadyError", "Kind", "Progress"]

logger = logging.getLogger("serving.export_jobs")

Kind = Literal["csv", "geojson"]
Progress = Callable[[int], None]
"""Told the number of incidents of each block written."""
STALE_AFTER = timedelta(minutes=2)
"""A running job whose progress is older than this has stopped (its process is gone)."""
_BEAT_S = 5.0
_ID_LENGTH = 32


class ExportNotReadyError(ServiceError):
    """An export job's file asked for while the job runs, or after it failed."""

    status_code, code = 409, "export_not_ready"



@dataclass(frozen=True)
class ExportJob:
    """What an export job is and how far it went.

    Attributes:
        id: 32 hexadecimal digits, unguessable.
        kind: ``csv`` or ``geojson``.
        status: ``running``, ``done`` or ``failed``.
        query: the request's query string (its filters and CSV format), to say what the file holds.
        created_by: who asked (the key's name).
        created_at: when.
        updated_at: its last progress.
        incidents: incidents written so far (all of them once done).
        size_bytes: the file's size, once done.
        finished_at: when it ended.
        error: why it failed.
    """

    id: str
    kind: Kind
    status: Literal["running", "done", "failed"]
    query: str
    created_by: str
    created_at: datetime
    updated_at: datetime
    incidents: int = 0
    size_bytes: int | None = None
    finished_at: datetime | None = None
    error: str | None = None

    def to_json(self) -> str:
        return json.dumps({k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(self).items()})

    @classmethod
    def from_json(cls, text: str) -> ExportJob:
        data = json.loads(text)
        for name in ("created_at", "updated_at", "finished_at"):
            if data.get(name) is not None:
                data[name] = datetime.fromisoformat(data[name])
        return cls(**data)


class ExportJobs:
    """Export jobs of one service process, one running at a time, their files in ``folder``.

    Args:
        folder: ``<data_dir>/exports`` (created when missing).
        keep: how long a finished job and its file are kept.
    """

    def __init__(self, folder: Path, keep: timedelta) -> None:
        self.folder = folder
        self.keep = keep
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vipare-export")
        self._stopping = threading.Event()
        self._meta_lock = threading.Lock()

    def start(self, kind: Kind, text: Callable[[Progress], Iterator[str]], *, query: str, created_by: str) -> ExportJob:
        """Start writing ``text(progress)`` to a file; returns the job, running.

        Raises:
            OSError: the folder cannot be written.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        self._remove_expired()
        now = utcnow()
        job = ExportJob(id=uuid.uuid4().hex, kind=kind, status="running", query=query, created_by=created_by,
                        created_at=now, updated_at=now)
        self._save(job)
        self._pool.submit(self._run, job, text)
        return job

    def get(self, job_id: str) -> ExportJob | None:
        """The job, or None when there is none of that id (or it expired)."""
        if len(job_id) != _ID_LENGTH or any(c not in "0123456789abcdef" for c in job_id):
            return None
        try:
            job = ExportJob.from_json(self._meta(job_id).read_text())
        except (FileNotFoundError, ValueError, TypeError):
            return None
        if job.status == "running" and utcnow() - job.updated_at > STALE_AFTER:
            return replace(job, status="failed", error="The export stopped (its process ended): start it again.")
        return job

    def file(self, job: ExportJob) -> Path:
        """Where a done job's file is."""
        return self.folder / f"{job.id}.{job.kind}"

    def close(self) -> None:
        """Stop: a running job ends at its next block, as failed (to be started again)."""
        self._stopping.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self, job: ExportJob, text: Callable[[Progress], Iterator[str]]) -> None:
        part = self.folder / f"{job.id}.{job.kind}.part"
        state = {"incidents": 0, "beat": time.monotonic()}

        def progress(incidents: int) -> None:
            state["incidents"] += incidents
            if self._stopping.is_set():
                raise InterruptedError("The service stopped during the export: start it again.")
            if time.monotonic() - state["beat"] >= _BEAT_S:
                state["beat"] = time.monotonic()
                self._save(replace(job, incidents=int(state["incidents"]), updated_at=utcnow()))

        try:
            with part.open("w", encoding="utf-8", newline="") as out:
                for piece in text(progress):
                    out.write(piece)
                out.flush()
                os.fsync(out.fileno())
            final = self.file(job)
            part.replace(final)
            now = utcnow()
            self._save(replace(job, status="done", incidents=int(state["incidents"]), size_bytes=final.stat().st_size,
                               updated_at=now, finished_at=now))
            logger.info("export done", extra={"job": job.id, "incidents": state["incidents"]})
        except Exception as exc:  # the job says why; the service goes on
            part.unlink(missing_ok=True)
            detail = str(exc) if isinstance(exc, InterruptedError) else f"The export failed: {exc}"
            now = utcnow()
            self._save(replace(job, status="failed", incidents=int(state["incidents"]), updated_at=now,
                               finished_at=now, error=detail))
            logger.exception("export failed", extra={"job": job.id})

    def _meta(self, job_id: str) -> Path:
        return self.folder / f"{job_id}.json"

    def _save(self, job: ExportJob) -> None:
        """Write the job's description atomically (a reader never sees half of it)."""
        with self._meta_lock:
            tmp = self.folder / f".{job.id}.json.tmp"
            tmp.write_text(job.to_json())
            tmp.replace(self._meta(job.id))

    def _remove_expired(self) -> None:
        """Delete the jobs finished longer than ``keep`` ago, and their files."""
        cutoff = utcnow() - self.keep
        for meta in self.folder.glob("*.json"):
            job = self.get(meta.stem)
            if job is None or job.status == "running" or (job.finished_at or job.updated_at) >= cutoff:
                continue
            self.file(job).unlink(missing_ok=True)
            meta.unlink(missing_ok=True)

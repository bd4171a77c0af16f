"""Export jobs: a national export written to a file by a thread of the service, then downloaded.

A job is files, not rows: ``<id>.json`` says what the job is and how far it went, ``<id>.csv`` (or
``.geojson``) appears whole when it is done, so that any worker of the service answers for any job.
Where they are (:class:`JobFiles`): in ``<data_dir>/exports`` (:class:`FolderJobFiles`; written to
``.part``, synced, renamed), which the workers of one host share; or, when the photos are kept in a
bucket that several hosts share, under ``<prefix>/.exports/`` in that bucket
(:class:`BucketJobFiles`: the file is written to a local ``.part`` first, then sent whole), so that
a job started through one host is followed and downloaded through any other. A running job writes
its progress every few seconds; one whose progress stopped for :data:`STALE_AFTER` (its process
died) reads as failed, to be started again. Finished files are deleted after ``keep``. What the file
holds comes from :mod:`serving.bulk_exports`.
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
from typing import Any, BinaryIO, Literal, Protocol

from serving.errors import ServiceError
from serving.models import utcnow

__all__ = [
    "MEDIA_TYPES", "STALE_AFTER", "BucketJobFiles", "ExportJob", "ExportJobs", "ExportNotReadyError", "FolderJobFiles",
    "JobFiles", "Kind", "Progress",
]

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


class JobFiles(Protocol):
    """Where export jobs' descriptions and files are kept.

    Attributes:
        work: a local folder for the files being written (``<id>.<kind>.part``).
    """

    work: Path

    def read_meta(self, job_id: str) -> str | None:
        """A job's description, or None when there is none."""
        ...

    def write_meta(self, job_id: str, text: str) -> None:
        """Replace a job's description at once (a reader never sees half of it)."""
        ...

    def publish(self, part: Path, job_id: str, kind: Kind, beat: Callable[[], None]) -> int:
        """Make the written ``part`` the job's file (``part`` is gone after); returns its size in bytes.

        ``beat`` is called now and then while it takes time (an upload), to keep the job's progress fresh.
        """
        ...

    def local_file(self, job_id: str, kind: Kind) -> Path | None:
        """The job's file on this host's disk, or None when it is kept elsewhere (then :meth:`open` it)."""
        ...

    def open(self, job_id: str, kind: Kind) -> tuple[BinaryIO, int]:
        """The job's file to read, and its size."""
        ...

    def job_ids(self) -> list[str]:
        """The ids of the jobs whose descriptions are kept."""
        ...

    def delete(self, job_id: str, kind: Kind) -> None:
        """Delete a job's file and its description (either may be missing)."""
        ...


class FolderJobFiles:
    """Jobs in a folder of this host: ``<id>.json`` and ``<id>.<kind>``, written under temporary names, renamed."""

    def __init__(self, folder: Path) -> None:
        self.folder = self.work = folder
        self._lock = threading.Lock()

    def read_meta(self, job_id: str) -> str | None:
        try:
            return (self.folder / f"{job_id}.json").read_text()
        except FileNotFoundError:
            return None

    def write_meta(self, job_id: str, text: str) -> None:
        with self._lock:
            tmp = self.folder / f".{job_id}.json.tmp"
            tmp.write_text(text)
            tmp.replace(self.folder / f"{job_id}.json")

    def publish(self, part: Path, job_id: str, kind: Kind, beat: Callable[[], None]) -> int:
        final = self.folder / f"{job_id}.{kind}"
        part.replace(final)
        return final.stat().st_size

    def local_file(self, job_id: str, kind: Kind) -> Path:
        return self.folder / f"{job_id}.{kind}"

    def open(self, job_id: str, kind: Kind) -> tuple[BinaryIO, int]:
        path = self.local_file(job_id, kind)
        stream = path.open("rb")
        return stream, os.fstat(stream.fileno()).st_size

    def job_ids(self) -> list[str]:
        return [meta.stem for meta in self.folder.glob("*.json")]

    def delete(self, job_id: str, kind: Kind) -> None:
        (self.folder / f"{job_id}.{kind}").unlink(missing_ok=True)
        (self.folder / f"{job_id}.json").unlink(missing_ok=True)


class BucketJobFiles:
    """Jobs in the photo store's bucket, which several hosts share: ``<prefix>.exports/<id>.json`` and
    ``<id>.<kind>``; a PUT replaces an object at once, a file goes up whole (in parts when large).

    Failures of the store come back as ``OSError``, as the photo store's do (:mod:`serving.photos.s3`).

    Args:
        client: a boto3 S3 client (the photo store's).
        bucket: the bucket.
        prefix: the photo store's key prefix (``""`` or ending with ``/``).
        work: a local folder for the files being written.
    """

    FOLDER = ".exports"

    def __init__(self, client: Any, bucket: str, prefix: str, work: Path) -> None:
        from serving.photos.s3 import store_errors  # boto3: only where a bucket is named

        self.client, self.bucket, self.work = client, bucket, work
        self.under = f"{prefix}{self.FOLDER}/"
        self._errors = store_errors

    def read_meta(self, job_id: str) -> str | None:
        try:
            with self._errors(self.under + f"{job_id}.json"):
                answer = self.client.get_object(Bucket=self.bucket, Key=self.under + f"{job_id}.json")
                return bytes(answer["Body"].read()).decode()
        except FileNotFoundError:
            return None

    def write_meta(self, job_id: str, text: str) -> None:
        key = self.under + f"{job_id}.json"
        with self._errors(key):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=text.encode(), ContentType="application/json")

    def publish(self, part: Path, job_id: str, kind: Kind, beat: Callable[[], None]) -> int:
        key, size = self.under + f"{job_id}.{kind}", part.stat().st_size
        with self._errors(key):
            self.client.upload_file(str(part), self.bucket, key, ExtraArgs={"ContentType": MEDIA_TYPES[kind]},
                                    Callback=lambda _sent: beat())
        part.unlink()
        return size

    def local_file(self, job_id: str, kind: Kind) -> None:
        return None

    def open(self, job_id: str, kind: Kind) -> tuple[BinaryIO, int]:
        key = self.under + f"{job_id}.{kind}"
        with self._errors(key):
            answer = self.client.get_object(Bucket=self.bucket, Key=key)
        return answer["Body"], int(answer["ContentLength"])

    def job_ids(self) -> list[str]:
        ids = []
        with self._errors(self.under):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.under):
                ids += [item["Key"][len(self.under):-len(".json")] for item in page.get("Contents", [])
                        if item["Key"].endswith(".json")]
        return ids

    def delete(self, job_id: str, kind: Kind) -> None:
        for name in (f"{job_id}.{kind}", f"{job_id}.json"):
            with self._errors(self.under + name):
                self.client.delete_object(Bucket=self.bucket, Key=self.under + name)


MEDIA_TYPES: dict[str, str] = {"csv": "text/csv; charset=utf-8", "geojson": "application/geo+json"}
"""The media type of each kind of job file, as served and as stored in a bucket."""


class ExportJobs:
    """Export jobs of one service process, one running at a time, kept in ``files``.

    Args:
        files: where the jobs are kept (:class:`FolderJobFiles` on ``<data_dir>/exports``, or
            :class:`BucketJobFiles` beside the photos in a shared bucket).
        keep: how long a finished job and its file are kept.
    """

    def __init__(self, files: JobFiles, keep: timedelta) -> None:
        self.files = files
        self.keep = keep
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vipare-export")
        self._stopping = threading.Event()

    def start(self, kind: Kind, text: Callable[[Progress], Iterator[str]], *, query: str, created_by: str) -> ExportJob:
        """Start writing ``text(progress)`` to a file; returns the job, running.

        Raises:
            OSError: the folder (or the bucket) cannot be written.
        """
        self.files.work.mkdir(parents=True, exist_ok=True)
        self._remove_expired()
        now = utcnow()
        job = ExportJob(id=uuid.uuid4().hex, kind=kind, status="running", query=query, created_by=created_by,
                        created_at=now, updated_at=now)
        self._save(job)
        self._pool.submit(self._run, job, text)
        return job

    def get(self, job_id: str) -> ExportJob | None:
        """The job, or None when there is none of that id (or it expired).

        Raises:
            OSError: the bucket that keeps the jobs refused the read or could not be reached.
        """
        if len(job_id) != _ID_LENGTH or any(c not in "0123456789abcdef" for c in job_id):
            return None
        try:
            text = self.files.read_meta(job_id)
            job = ExportJob.from_json(text) if text is not None else None
        except (ValueError, TypeError):
            return None
        if job is not None and job.status == "running" and utcnow() - job.updated_at > STALE_AFTER:
            return replace(job, status="failed", error="The export stopped (its process ended): start it again.")
        return job

    def local_file(self, job: ExportJob) -> Path | None:
        """A done job's file on this host's disk, or None when it is kept in the bucket (:meth:`open` it)."""
        return self.files.local_file(job.id, job.kind)

    def open(self, job: ExportJob) -> tuple[BinaryIO, int]:
        """A done job's file to read, and its size."""
        return self.files.open(job.id, job.kind)

    def close(self) -> None:
        """Stop: a running job ends at its next block, as failed (to be started again)."""
        self._stopping.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self, job: ExportJob, text: Callable[[Progress], Iterator[str]]) -> None:
        part = self.files.work / f"{job.id}.{job.kind}.part"
        state = {"incidents": 0, "beat": time.monotonic()}

        def beat() -> None:
            if time.monotonic() - state["beat"] >= _BEAT_S:
                state["beat"] = time.monotonic()
                self._save(replace(job, incidents=int(state["incidents"]), updated_at=utcnow()))

        def progress(incidents: int) -> None:
            state["incidents"] += incidents
            if self._stopping.is_set():
                raise InterruptedError("The service stopped during the export: start it again.")
            beat()

        try:
            with part.open("w", encoding="utf-8", newline="") as out:
                for piece in text(progress):
                    out.write(piece)
                out.flush()
                os.fsync(out.fileno())
            size = self.files.publish(part, job.id, job.kind, beat)
            now = utcnow()
            self._save(replace(job, status="done", incidents=int(state["incidents"]), size_bytes=size,
                               updated_at=now, finished_at=now))
            logger.info("export done", extra={"job": job.id, "incidents": state["incidents"]})
        except Exception as exc:  # the job says why; the service goes on
            part.unlink(missing_ok=True)
            detail = str(exc) if isinstance(exc, InterruptedError) else f"The export failed: {exc}"
            now = utcnow()
            try:
                self._save(replace(job, status="failed", incidents=int(state["incidents"]), updated_at=now,
                                   finished_at=now, error=detail))
            except OSError:  # the store is gone too: the job reads as stopped once its progress is stale
                logger.exception("an export job's failure could not be recorded", extra={"job": job.id})
            logger.exception("export failed", extra={"job": job.id})

    def _save(self, job: ExportJob) -> None:
        self.files.write_meta(job.id, job.to_json())

    def _remove_expired(self) -> None:
        """Delete the jobs finished longer than ``keep`` ago, and their files."""
        cutoff = utcnow() - self.keep
        for job_id in self.files.job_ids():
            job = self.get(job_id)
            if job is None or job.status == "running" or (job.finished_at or job.updated_at) >= cutoff:
                continue
            self.files.delete(job.id, job.kind)

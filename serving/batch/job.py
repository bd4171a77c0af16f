"""One batch job: list the frames, skip those already written, analyse the rest, write the results.

The job's own process is the single writer::

    open_source ──> for each frame, in name order:          engine (worker processes or Ray actors)
                      camera known?      no: error           read, check sha256, decode, detect,
                      read + sha256      (camera, sha256)    locate, put the photo in the store
                      written before?    yes: skipped   ──>  ─────────────────────────────────────
                      twice in source?   yes: duplicate      outcomes, in task order
                                                                     │
    writer thread: sink.write(up to ``commit_every`` frames)  <──────┘   one transaction / fsynced lines

The writer thread writes one batch at a time, in order, while the job's loop goes on feeding the
engine and gathering outcomes: the workers never wait for a commit or an fsync. A batch is handed
over once ``commit_every`` frames wait, or the oldest has waited ``commit_seconds``; while the writer
is busy with the previous batch, the frames that come meanwhile join the next one (up to
``commit_every``), so a slow disk makes fewer, larger transactions rather than a stalled job.

Exactly once: a frame counts as processed when its report is committed (or its line fsynced), in
the same transaction as its incident, its photo fsynced before; a job killed at any point leaves
whole frames written, and run again it skips them by ``(camera, sha256)`` and writes the others in
the order a clean run would have, so the incidents come out the same. Frames that fail (not an
image, no position...) are not written and are tried again by the next run.

Frame times, first known: ``frames.csv``'s ``captured_at``; EXIF GPS time; EXIF DateTimeOriginal
with its offset; the EXIF time without offset, read in ``tz``; the file name's time
(:mod:`serving.batch.times`); else the time the frame is written.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Literal

from serving.batch.engines import Engine, LocalEngine, thread_budget
from serving.batch.forkserver import available_cores
from serving.batch.frames import PHOTO_NOT_STORED, FrameOutcome, FrameTask, close_archives, error_kind, read_frame
from serving.batch.progress import Reporter, Summary
from serving.batch.sinks import Accepted, JsonlSink, Sink, StoreSink, Written, photo_disk_error
from serving.batch.sources import Frame, open_source
from serving.batch.times import in_zone, time_from_name
from serving.cameras import CameraSpec, list_cameras, load_camera_file, position_of, upsert_cameras
from serving.config import ServiceSettings
from serving.db import engine_from_settings, migrate, session_factory, write_session
from serving.photos.anonymise import anonymise
from serving.photos.location import PhotoLocation, photo_location
from serving.photos.store import EXTENSIONS
from vipare.errors import ImageError
from vipare.results import ImageResult
from vipare.settings import Settings

__all__ = ["BatchConfig", "fallback_time", "load_registry", "run_batch"]


@dataclass(frozen=True)
class BatchConfig:
    """What ``vipare batch`` was asked to do (see its help).

    Attributes:
        source: a folder, a zip archive or a glob.
        sidecar: ``frames.csv`` elsewhere than at the source's root.
        default_camera: the camera of frames nothing else names.
        cameras_file: cameras to register first (store) or to use (``output``).
        output: write JSON lines here instead of the store.
        engine: ``local`` (process pool) or ``ray``.
        workers: worker processes or Ray actors (local: 0 runs in the job's process).
        threads: onnxruntime threads per worker; None: ``max(1, cores // workers)``.
        ray_address: an existing Ray cluster; None starts a local instance.
        ray_batch_size: frames per Ray ``map_batches`` call.
        tz: the zone of times written without an offset (sidecar, EXIF, file names).
        commit_every: most frames per write transaction.
        commit_seconds: longest a finished frame waits to be written.
    """

    source: str
    sidecar: Path | None = None
    default_camera: str | None = None
    cameras_file: Path | None = None
    output: Path | None = None
    engine: Literal["local", "ray"] = "local"
    workers: int = 1
    threads: int | None = None
    ray_address: str | None = None
    ray_batch_size: int = 16
    tz: tzinfo = UTC
    commit_every: int = 32
    commit_seconds: float = 1.0


def load_registry(settings: ServiceSettings, *, cameras_file: Path | None, into_store: bool) -> dict[str, CameraSpec]:
    """The cameras a job may use, by id.

    With ``into_store``, the cameras of ``cameras_file`` are added to (or update) the store's registry
    first, and the registry is read back. Without, ``cameras_file`` alone when given, else the store's.
    """
    specs = load_camera_file(cameras_file) if cameras_file is not None else None
    if specs is not None and not into_store:
        return {spec.id: spec for spec in specs}
    engine = engine_from_settings(settings)
    try:
        migrate(engine)
        sessions = session_factory(engine)
        if specs:
            with write_session(sessions) as session:
                upsert_cameras(session, specs)
        with sessions() as session:
            return {camera.id: CameraSpec.of(camera) for camera in list_cameras(session)}
    finally:
        engine.dispose()


def fallback_time(result: ImageResult, name: str, tz: tzinfo) -> datetime | None:
    """The capture time from a naive EXIF clock (read in ``tz``), else from the file name; None if neither."""
    exif_time = result.image.captured_at
    if exif_time is not None and exif_time.tzinfo is None:
        return in_zone(exif_time, tz)
    return time_from_name(name, tz)


def run_batch(config: BatchConfig, settings: ServiceSettings, reporter: Reporter | None = None) -> Summary:
    """Run one job to its end (see the module doc).

    Args:
        config: the job.
        settings: the service's settings: the store, the model, thresholds, intake limits.
        reporter: progress and warnings; plain lines on stderr every 10 s when omitted.

    Returns:
        The counts of this run.

    Raises:
        SourceError: the source or its sidecar cannot be used.
        SinkError: the output cannot be used.
        CameraFileError: ``cameras_file`` cannot be used.
        vipare.ModelError: the model cannot be loaded (known before any frame is read).
    """
    reporter = reporter or Reporter(live=False)
    started = time.monotonic()
    threads = thread_budget(config.workers, config.threads)
    library = Settings(**{name: getattr(settings, name) for name in Settings.model_fields})
    # JSON lines keep no photo: nothing to blur, so the workers neither load nor run the face and plate search.
    stores_photos = config.output is None
    library = library.for_frames().model_copy(
        update={"intra_op_threads": threads, "blur_photos": library.blur_photos and stores_photos}
    )
    # The workers start, and load their models, while this process migrates, lists and hashes;
    # a model they cannot load is raised when the first frame is due.
    engine = _engine(config, library, photo_location(settings) if stores_photos else None)
    engine.start()
    sink: Sink | None = None
    try:
        source = open_source(config.source, sidecar=config.sidecar, default_camera=config.default_camera,
                             tz=config.tz)
        registry = load_registry(settings, cameras_file=config.cameras_file, into_store=config.output is None)
        sink = JsonlSink(config.output) if config.output is not None else StoreSink(settings, registry)
        summary = Summary(frames=len(source.frames))
        sidecar = f" (cameras from {source.sidecar})" if source.sidecar else ""
        reporter.start(summary, f"batch: {summary.frames} frames from {source.kind} {source.root}{sidecar}; "
                       f"{engine.describe()}")
        if isinstance(sink, JsonlSink) and sink.dropped_bytes:
            reporter.note(f"batch: cut off a torn last line ({sink.dropped_bytes} bytes) of {sink.path}")
        workers = max(1, config.workers)
        if workers * threads > available_cores():
            reporter.note(f"batch: warning: {workers} workers x {threads} threads exceed the "
                          f"{available_cores()} cores; sessions will compete for them")
        unknown = sorted({f.camera_id for f in source.frames if f.camera_id and f.camera_id not in registry})
        if unknown:
            reporter.note(f"batch: cameras not in the registry (their frames fail): {', '.join(unknown[:10])}"
                          + (" ..." if len(unknown) > 10 else "") + "; add them with vipare cameras add/import")
        _Run(config, settings, sink, registry, summary, reporter).go(source.frames, engine)
    finally:
        engine.close()
        if sink is not None:
            sink.close()
        close_archives()
        reporter.finish()
    summary.elapsed_s = time.monotonic() - started
    return summary


def _engine(config: BatchConfig, library: Settings, photos_at: PhotoLocation | None) -> Engine:
    if config.engine == "ray":
        from serving.batch.ray_engine import RayEngine

        return RayEngine(
            library, workers=max(1, config.workers), address=config.ray_address, batch_size=config.ray_batch_size
        )
    return LocalEngine(library, workers=config.workers, photos_at=photos_at)


class _Run:
    """The job's loop: feed the engine, gather its outcomes in order, hand them to the writer thread in batches."""

    def __init__(
        self,
        config: BatchConfig,
        settings: ServiceSettings,
        sink: Sink,
        registry: dict[str, CameraSpec],
        summary: Summary,
        reporter: Reporter,
    ) -> None:
        self.config, self.settings, self.sink, self.registry = config, settings, sink, registry
        self.summary, self.reporter = summary, reporter
        self.frames: dict[int, Frame] = {}
        self.pending: list[Accepted] = []
        self.pending_since = 0.0
        self.writing: tuple[list[Accepted], Future[list[Written]]] | None = None

    def go(self, frames: list[Frame], engine: Engine) -> None:
        known = self.sink.known({f.camera_id for f in frames if f.camera_id in self.registry})
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-writer")
        try:
            for outcome in engine.run(self._tasks(frames, known)):
                self._take(outcome, writer)
            self._flush(writer, last=True)
        finally:
            writer.shutdown(wait=True)  # a transaction under way ends (committed or not) before the sink closes

    def _error(self, name: str, kind: str, message: str) -> None:
        self.summary.errors[kind] += 1
        self.reporter.frame_error(name, kind, message)
        self.reporter.update()

    def _tasks(self, frames: list[Frame], known: set[tuple[str, str]]) -> Iterator[FrameTask]:
        seen: set[tuple[str, str]] = set()
        max_bytes = self.settings.max_image_bytes
        for index, frame in enumerate(frames):
            if frame.ref is None:
                self._error(frame.name, "missing_file", "frames.csv lists it, but there is no such file")
                continue
            if frame.camera_id is None:
                self._error(frame.name, "no_camera", "no camera: list it in frames.csv, put it in a folder named "
                            "after its camera, or give --camera")
                continue
            camera = self.registry.get(frame.camera_id)
            if camera is None:
                self._error(frame.name, "unknown_camera", f"camera {frame.camera_id!r} is not in the registry")
                continue
            try:
                sha256 = hashlib.sha256(read_frame(frame.ref, max_bytes)).hexdigest()
            except ImageError as exc:
                self._error(frame.name, error_kind(exc), str(exc))
                continue
            except OSError as exc:
                self._error(frame.name, "unreadable", str(exc.strerror or exc))
                continue
            key = (frame.camera_id, sha256)
            if key in known or key in seen:
                if key in known:
                    self.summary.skipped += 1
                else:
                    self.summary.duplicates += 1
                self.reporter.update()
                continue
            seen.add(key)
            self.frames[index] = frame
            yield FrameTask(index, frame.name, frame.ref, sha256, position_of(camera), frame.client)

    def _take(self, outcome: FrameOutcome, writer: ThreadPoolExecutor) -> None:
        frame = self.frames.pop(outcome.index)
        self.summary.analysed += 1
        if outcome.error is not None or outcome.result is None:
            kind, message = outcome.error or ("error", "no result")
            if kind == PHOTO_NOT_STORED:  # the disk, not the frame: the frames after it would fail too
                raise photo_disk_error(message)
            self._error(frame.name, kind, message)
            return
        result = outcome.result
        assert frame.camera_id is not None and frame.ref is not None
        if outcome.photo_stored:
            self.sink.photo_put(result.image.sha256, EXTENSIONS[result.image.format])
        elif self.sink.photos_at is not None:
            try:  # the Ray engine's actors keep no photos
                data = read_frame(frame.ref, self.settings.max_image_bytes)
            except (ImageError, OSError) as exc:
                self._error(frame.name, "unreadable", str(exc))
                return
            if hashlib.sha256(data).hexdigest() != result.image.sha256:
                self._error(frame.name, "changed", "the file changed while the job ran; run the job again")
                return
            try:  # blurred here: the actor found the regions but kept no photo
                data = anonymise(
                    data,
                    outcome.private_regions,
                    max_pixels=self.settings.max_image_pixels,
                    max_non_jpeg_pixels=self.settings.max_non_jpeg_pixels,
                    fine_plates=outcome.fine_plates,
                )
            except ImageError as exc:
                self._error(frame.name, error_kind(exc), str(exc))
                return
            self.sink.store_photo(data, result.image.sha256, EXTENSIONS[result.image.format])
        if not self.pending:
            self.pending_since = time.monotonic()
        fallback = fallback_time(result, frame.name, self.config.tz)
        self.pending.append(Accepted(frame.name, frame.camera_id, result, frame.captured_at, fallback))
        waited = time.monotonic() - self.pending_since
        if len(self.pending) >= self.config.commit_every or waited >= self.config.commit_seconds:
            self._flush(writer)

    def _flush(self, writer: ThreadPoolExecutor, *, last: bool = False) -> None:
        """Hand the waiting frames to the writer thread once it is done with the previous batch.

        While it is busy, frames keep gathering, up to ``commit_every``; then, and at the ``last``
        call, this waits for it. A batch that failed raises here (:class:`SinkError`).
        """
        if self.writing is not None:
            items, written = self.writing
            if not (last or written.done() or len(self.pending) >= self.config.commit_every):
                return
            self.writing = None
            self._count(items, written.result())
        if self.pending:
            self.writing = (self.pending, writer.submit(self.sink.write, self.pending))
            self.pending = []
            if last:
                self._flush(writer, last=True)

    def _count(self, items: list[Accepted], written: list[Written]) -> None:
        for item, outcome in zip(items, written, strict=True):
            if not outcome.created:
                self.summary.duplicates += 1
                continue
            self.summary.written += 1
            self.summary.deposits += item.result.verdict.dumping
            if outcome.incident_action:
                self.summary.incidents[outcome.incident_action] += 1
        self.reporter.update()

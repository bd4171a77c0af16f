"""One frame's analysis, as a worker process or a Ray actor runs it: bytes in, a result or an error out.

Light on purpose: nothing of the database or the web framework, and the detector (onnxruntime,
OpenCV) only where a frame is analysed (:func:`init_worker`, and the fork server's preload), so that
the job's own process, which uses the tasks and outcomes, does not load it. Everything here crosses
process boundaries, so it is plain picklable data (:class:`FrameTask` in, :class:`FrameOutcome` out).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import threading
import time
import zipfile
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Final

from serving.photos.anonymise import anonymise, fine_plates_needed
from serving.photos.backend import PhotoBackend
from serving.photos.location import PhotoLocation
from serving.photos.store import EXTENSIONS
from vipare.errors import (
    CorruptImageError,
    EmptyImageError,
    ImageError,
    ImageTooLargeError,
    ModelError,
    UnsupportedImageError,
)
from vipare.geotag import CameraPosition, ClientPosition
from vipare.results import ImageResult
from vipare.settings import Settings

if TYPE_CHECKING:  # the job's own process, which decodes nothing, does not load the detector
    from vipare.pipeline import Pipeline
    from vipare.privacy import Region

__all__ = [
    "ERROR_KINDS",
    "FrameOutcome",
    "FrameRef",
    "FrameTask",
    "PHOTO_NOT_STORED",
    "analyze_frame",
    "analyze_in_worker",
    "close_archives",
    "init_worker",
    "read_frame",
    "set_thread_budget",
    "worker_ready",
]

ERROR_KINDS: Final[dict[type[ImageError], str]] = {
    EmptyImageError: "empty_image",
    CorruptImageError: "corrupt_image",
    UnsupportedImageError: "unsupported_image",
    ImageTooLargeError: "image_too_large",
}
"""Intake errors -> the kind a batch reports: the codes ``serving.errors`` answers a single upload with."""

PHOTO_NOT_STORED: Final = "photo_not_stored"
"""The error kind of a frame whose photo the worker could not write (disk full, say): it stops the job."""

LOCATION_MISSING: Final = (
    "the frame has no GPS, frames.csv gives it no lat/lon and its camera has no position; register the "
    "camera's position (vipare cameras add ID --lat --lon) or give lat,lon in frames.csv"
)


@dataclass(frozen=True, slots=True)
class FrameRef:
    """Where a frame's bytes are: a file, or a member of a zip archive.

    Attributes:
        path: the file, or the zip archive.
        member: the member's name in the archive; None for a plain file.
    """

    path: str
    member: str | None = None

    def __str__(self) -> str:
        return f"{self.path}!{self.member}" if self.member is not None else self.path


def error_kind(exc: ImageError) -> str:
    """The batch's name for an intake error (the service's error code for it)."""
    for error_type, kind in ERROR_KINDS.items():
        if isinstance(exc, error_type):
            return kind
    return "unreadable_image"


# One open archive per zip per process: reopening reads the central directory each time.
_ZIPS: dict[str, zipfile.ZipFile] = {}
_ZIPS_LOCK = threading.Lock()


def read_frame(ref: FrameRef, max_bytes: int) -> bytes:
    """The frame's bytes, refusing before reading them when they are over ``max_bytes``.

    Raises:
        ImageTooLargeError: over ``max_bytes`` (a zip member's declared size counts, before inflating).
        OSError: the file cannot be read (``zipfile.BadZipFile`` included).
    """
    if ref.member is None:
        size = os.stat(ref.path).st_size
        if size > max_bytes:
            raise ImageTooLargeError(f"the file is {size} bytes, over the {max_bytes} byte limit")
        with open(ref.path, "rb") as file:
            data = file.read(max_bytes + 1)
    else:
        try:
            with _ZIPS_LOCK:  # a ZipFile shares one file handle between its members
                archive = _ZIPS.get(ref.path) or _ZIPS.setdefault(ref.path, zipfile.ZipFile(ref.path))
                info = archive.getinfo(ref.member)
                if info.file_size > max_bytes:
                    raise ImageTooLargeError(f"the member is {info.file_size} bytes, over the {max_bytes} byte limit")
                with archive.open(info) as member:
                    data = member.read(max_bytes + 1)
        except (zipfile.BadZipFile, KeyError, RuntimeError, EOFError) as exc:
            raise OSError(f"cannot read {ref.member} from {ref.path}: {exc}") from exc
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"the file is over the {max_bytes} byte limit")
    return data


def close_archives() -> None:
    """Close the zip archives :func:`read_frame` opened in this process."""
    with _ZIPS_LOCK:
        for archive in _ZIPS.values():
            archive.close()
        _ZIPS.clear()


@dataclass(frozen=True, slots=True)
class FrameTask:
    """A frame to analyse.

    Attributes:
        index: its place in the job (frames are written in this order).
        name: its name relative to the source (``cam12/20240501_093000.jpg``), stored as the result's source.
        ref: where its bytes are.
        sha256: hex sha256 of its bytes, as the job read them when it listed the frame.
        camera: its camera's position, the last resort for a frame without GPS.
        client: a position given for the frame in ``frames.csv`` (a vehicle's GPS log).
    """

    index: int
    name: str
    ref: FrameRef
    sha256: str
    camera: CameraPosition | None
    client: ClientPosition | None


@dataclass(frozen=True, slots=True)
class FrameOutcome:
    """What became of a frame.

    Attributes:
        index: the task's index.
        result: the analysis, with a location; None on error.
        error: ``(kind, message)`` when the frame cannot be used.
        photo_stored: True when the worker already put the photo in the store (not fsynced: the
            job's sink puts it on disk before it writes the frame).
        private_regions: the faces, heads and plate bands to blur, for a job that stores the photo
            itself (:func:`serving.photos.anonymise.anonymise`); the worker blurred those it stored.
        fine_plates: the plate bands take the fine cells
            (:func:`serving.photos.anonymise.fine_plates_needed`, decided by the worker).
        seconds: time spent on it in the worker (read, decode, detect, store).
    """

    index: int
    result: ImageResult | None = None
    error: tuple[str, str] | None = None
    photo_stored: bool = False
    private_regions: tuple[Region, ...] = ()
    fine_plates: bool = False
    seconds: float = field(default=0.0, compare=False)


def analyze_frame(pipeline: Pipeline, task: FrameTask, photos: PhotoBackend | None = None) -> FrameOutcome:
    """Read, check, decode and analyse one frame; put its photo, blurred, in ``photos`` when it can be stored.

    The photo is put without fsync, so that a worker never waits on the disk: the job's sink puts it
    on disk before it writes the frame (:meth:`~serving.batch.sinks.StoreSink.photo_put`).

    Never raises for a bad frame: unreadable, changed since listed, not an image or without any
    position, it comes back as an error outcome; so does a photo the store cannot take
    (:data:`PHOTO_NOT_STORED`), which the job stops at.
    """
    start = time.perf_counter()

    def failed(kind: str, message: str) -> FrameOutcome:
        return FrameOutcome(task.index, error=(kind, message), seconds=time.perf_counter() - start)

    try:
        data = read_frame(task.ref, pipeline.settings.max_image_bytes)
    except ImageError as exc:
        return failed(error_kind(exc), str(exc))
    except OSError as exc:
        return failed("unreadable", f"{exc.strerror or exc}")
    if hashlib.sha256(data).hexdigest() != task.sha256:
        return failed("changed", "the file changed while the job ran; run the job again to take the new version")
    try:
        image = pipeline.decode(data)
        result = pipeline.analyze(image, client=task.client, camera=task.camera, name=task.name)
    except ImageError as exc:
        return failed(error_kind(exc), str(exc))
    if result.location is None:
        return failed("location_missing", LOCATION_MISSING)
    regions = tuple(pipeline.private_regions(image, result.detections))
    fine_plates = fine_plates_needed(pipeline, image, regions, result.verdict.dumping)
    stored = False
    if photos is not None:
        try:
            content = anonymise(
                data,
                regions,
                max_pixels=pipeline.settings.max_image_pixels,
                max_non_jpeg_pixels=pipeline.settings.max_non_jpeg_pixels,
                fine_plates=fine_plates,
            )
        except ImageError as exc:
            return failed(error_kind(exc), str(exc))
        try:
            photos.put(content, task.sha256, EXTENSIONS[result.image.format], durable=False)
        except OSError as exc:
            return failed(PHOTO_NOT_STORED, f"cannot store a photo in {photos.location}: {exc.strerror or exc}")
        stored = True
    return FrameOutcome(
        task.index, result=result, photo_stored=stored, private_regions=regions, fine_plates=fine_plates,
        seconds=time.perf_counter() - start,
    )


# --------------------------------------------------------------------------------------------------
# Worker processes


_WORKER: tuple[Pipeline, PhotoBackend | None] | None = None
_WORKER_ERROR: ModelError | None = None


def set_thread_budget(threads: int) -> None:
    """Hold this process's OpenCV pool to ``threads`` (the letterbox resize); onnxruntime's is in Settings."""
    import cv2

    cv2.setNumThreads(max(1, threads))


def init_worker(settings: Settings, photos_at: PhotoLocation | None) -> None:
    """Process-pool initializer: one pipeline (one onnxruntime session) per worker process.

    A model that cannot be loaded is kept, for :func:`worker_ready` to hand back: the job raises it
    with its message, where an initializer that raised would only break the pool. The worker exits
    when the job's process is gone (killed with -9, say). It ignores Ctrl-C, which reaches the whole
    process group: the job handles it, lets the workers finish the frames they are on, and stops them
    (a worker interrupted while it waits for a frame would die with a traceback).

    Args:
        settings: the library settings, ``intra_op_threads`` set to this worker's share of the cores.
        photos_at: the photo store the worker writes accepted frames to; None to leave it to the parent.
    """
    global _WORKER, _WORKER_ERROR
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    job = multiprocessing.parent_process()
    if job is not None:
        threading.Thread(target=_exit_with, args=(job,), daemon=True, name="job-watch").start()
    set_thread_budget(settings.intra_op_threads)
    from vipare.pipeline import Pipeline

    try:
        pipeline = Pipeline(settings=settings)
    except ModelError as exc:
        _WORKER_ERROR = exc
        return
    _WORKER = (pipeline, photos_at.open() if photos_at else None)


def worker_ready() -> ModelError | None:
    """None when this worker's model is loaded, else why it could not be (the job's first call to a worker)."""
    return _WORKER_ERROR


def _exit_with(job: BaseProcess) -> None:
    job.join()  # returns when the job's process has ended, however it ended
    os._exit(1)


def analyze_in_worker(task: FrameTask) -> FrameOutcome:
    """The function the pool runs: :func:`analyze_frame` with the worker's pipeline and store."""
    if _WORKER is None:  # pragma: no cover - the pool always runs init_worker first
        raise RuntimeError("init_worker has not run in this process")
    pipeline, photos = _WORKER
    return analyze_frame(pipeline, task, photos)

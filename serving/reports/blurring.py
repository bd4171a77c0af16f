"""Blurring an uploaded photo after its upload is answered (see :mod:`serving.photos.pending`).

:func:`serving.reports.upload.submit` holds the photo, commits its report and answers; then
:func:`blur_later` finds its faces and plates on the reduced copy the analysis decoded and stores the
blurred copy, in one of the analysis slots (the CPU budget stays the service's). Readers go through
:func:`ensure_stored`, which waits for that or does it. When :data:`MAX_IN_FLIGHT` photos already
wait, an upload blurs its photo before answering, as one with blurring off stores it: a burst of
uploads slows down instead of piling up unblurred photos.

Nothing here changes what is stored: the same bytes and detections give the same blurred copy,
whichever process makes it and however often, so a race between two of them is harmless.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import anyio.to_thread
from sqlalchemy import select

from serving.errors import PhotoPendingError
from serving.models import Report
from serving.photos.anonymise import anonymised_copy
from serving.retention import photo_kept
from vipare.errors import ImageError
from vipare.results import Detection

if TYPE_CHECKING:
    from serving.service import Service
    from vipare.imaging import DecodedImage
    from vipare.pipeline import Pipeline
    from vipare.privacy import Region

__all__ = [
    "MAX_IN_FLIGHT", "READ_WAIT_S", "blur_held", "blur_later", "blurred_copy", "ensure_stored", "recover_held",
]

logger = logging.getLogger("serving.reports.blurring")

MAX_IN_FLIGHT = 8
"""Photos of this process held or being held (from their analysis on) at most; beyond, an upload blurs before it
answers."""

READ_WAIT_S = 30.0
"""How long a reader waits for this process's blurring of a photo before doing it itself."""


def blur_later(
    service: Service, pipeline: Pipeline, data: bytes, image: DecodedImage, detections: Sequence[Detection],
    dumping: bool, sha256: str, ext: str, every_deposit: bool = False,
) -> None:
    """Blur a held photo after the answer; the caller claimed it with ``service.in_flight.start(sha256)``.

    ``every_deposit``: the agent said the photo shows a deposit, so every deposit find is spared (see
    :meth:`vipare.pipeline.Pipeline.private_regions`; the report's ``agent_says_deposit``).
    """

    async def run() -> None:
        try:
            await anyio.to_thread.run_sync(
                store_blurred, service, pipeline, data, image, detections, dumping, sha256, ext, every_deposit,
                limiter=service.analysis_limiter,
            )
        except ImageError as exc:
            _unusable(service, sha256, ext, exc)
        except Exception:  # the held file stays: a reader or the next start blurs it
            logger.exception("blurring a photo failed; it stays held until read or until the next start",
                             extra={"sha256": sha256})
        finally:
            service.in_flight.finish(sha256)

    task = asyncio.create_task(run())
    service.background.add(task)
    task.add_done_callback(service.background.discard)


def blurred_copy(
    service: Service, pipeline: Pipeline, data: bytes, image: DecodedImage, detections: Sequence[Detection],
    dumping: bool, every_deposit: bool = False,
) -> tuple[bytes, list[Region]]:
    """The bytes to store for a photo (:func:`serving.photos.anonymise.anonymised_copy`) and its private regions.

    Finding the regions and blurring are timed in the service's metrics (stages ``privacy``, ``blur``).
    """
    start = time.perf_counter()
    regions = pipeline.private_regions(image, detections, every_deposit=every_deposit)
    found = time.perf_counter()
    stored = anonymised_copy(pipeline, data, image, regions, dumping)
    service.metrics.analysis.labels(stage="privacy").observe(found - start)
    if regions:
        service.metrics.analysis.labels(stage="blur").observe(time.perf_counter() - found)
    return stored, regions


def store_blurred(
    service: Service, pipeline: Pipeline, data: bytes, image: DecodedImage, detections: Sequence[Detection],
    dumping: bool, sha256: str, ext: str, every_deposit: bool = False,
) -> None:
    """Find the photo's regions, store its blurred copy and drop the held one.

    With ``keep_originals_days`` set, the unblurred original of a photo with regions is kept too
    (:mod:`serving.originals`; without regions the stored photo is the original).
    Stored only while a report keeps the photo: one erased or purged meanwhile (by another process)
    gets no blurred copy or original back.
    """
    stored, regions = blurred_copy(service, pipeline, data, image, detections, dumping, every_deposit)
    if regions and service.settings.keep_originals_days > 0:  # read by privacy officers only (serving.originals)
        service.photos.keep_original(data, sha256, ext)
    service.photos.put(stored, sha256, ext)
    if not photo_kept(service.sessions, sha256):
        service.photos.delete(sha256, ext)
        service.photos.delete(sha256, ext, "original")
    service.photos.release(sha256, ext)


def blur_held(
    service: Service, sha256: str, ext: str, detections: Sequence[Detection], dumping: bool, every_deposit: bool = False
) -> None:
    """Blur a photo from its held file (a reader in another process, or after a crash).

    Raises:
        FileNotFoundError: the file is no longer held (its blurred copy was stored meanwhile).
    """
    data = service.photos.read(sha256, ext, "held")
    pipeline = service.pipeline  # the privacy detectors: ready before the deposit model's warm-up
    store_blurred(service, pipeline, data, pipeline.decode(data), detections, dumping, sha256, ext, every_deposit)


def ensure_stored(
    service: Service, sha256: str, ext: str, detections: Sequence[Detection], dumping: bool, every_deposit: bool = False
) -> bool:
    """Whether the store holds the photo's blurred copy, once this process's blurring of it ended or this call did it.

    Blocking: call it from a worker thread.

    Raises:
        PhotoPendingError: still being blurred after :data:`READ_WAIT_S` (a long queue): try again.
    """
    photos = service.photos
    if photos.exists(sha256, ext):
        return True
    if not service.in_flight.wait(sha256, READ_WAIT_S):
        raise _pending()
    if photos.exists(sha256, ext) or not photos.exists(sha256, ext, "held"):
        return photos.exists(sha256, ext)
    if service.in_flight.start(sha256):
        try:
            blur_held(service, sha256, ext, detections, dumping, every_deposit)
        except FileNotFoundError:
            pass  # another process stored it meanwhile
        except ImageError as exc:
            _unusable(service, sha256, ext, exc)
        finally:
            service.in_flight.finish(sha256)
    elif not service.in_flight.wait(sha256, READ_WAIT_S):
        raise _pending()
    return photos.exists(sha256, ext)


def _pending() -> PhotoPendingError:
    return PhotoPendingError(
        f"The photo is still being blurred (faces and plates) after {READ_WAIT_S:.0f} s: the service is busy. "
        "Ask again in a few seconds.",
        headers={"Retry-After": "5"},
    )


def _unusable(service: Service, sha256: str, ext: str, exc: ImageError) -> None:
    """A held photo that cannot be decoded in full (the analysis read it reduced): no copy of it is kept."""
    logger.error("a held photo cannot be decoded in full to be blurred; it is deleted, its report keeps no photo: %s",
                 exc, extra={"sha256": sha256})
    service.photos.release(sha256, ext)


def recover_held(service: Service) -> int:
    """At start-up, before the service is ready: blur every held photo a report keeps (a crash left it
    between the answer and the blur).

    Those no report keeps are the store's orphans (:meth:`serving.photos.store.PhotoStore.remove_orphans`
    deletes them). Returns how many photos were blurred.
    """
    blurred = 0
    for sha256, ext, _age in service.photos.held():
        with service.sessions() as session:
            report = session.scalars(
                select(Report).where(Report.sha256 == sha256, Report.photo_deleted_at.is_(None)).limit(1)
            ).first()
            if report is None:
                continue
            detections, dumping = [Detection.model_validate(d) for d in report.detections], report.dumping
            every_deposit = report.agent_says_deposit
        if not service.in_flight.start(sha256):
            continue
        try:
            blur_held(service, sha256, ext, detections, dumping, every_deposit)
            blurred += 1
        except FileNotFoundError:
            pass
        except ImageError as exc:
            _unusable(service, sha256, ext, exc)
        except Exception:
            logger.exception("blurring a held photo failed; it stays held", extra={"sha256": sha256})
        finally:
            service.in_flight.finish(sha256)
    return blurred

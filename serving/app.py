"""The application factory.

``create_app()`` builds the FastAPI app; its lifespan (once per worker process) migrates the
database to the latest revision, refuses to serve beyond loopback without API keys, deletes photo
files a crash left unreferenced, loads the model once and warms it up in the background:
``/readyz`` answers 503 and uploads 503 until the first inference has run. Then it looks for a
newly promoted model every ``model_check_s`` seconds and switches to it without stopping
(:meth:`serving.service.Service.follow_promotions`), and every hour whether the day's purge of photos
past retention is due (:func:`serving.retention.daily_pass`: one worker runs it, the others find it done).

Requests never run model or file work on the event loop: decoding and inference run in worker
threads (at most ``analysis_slots`` at once), database work in FastAPI's thread pool.

Run it with ``vipare serve`` (see :mod:`serving.cli`), or ``uvicorn --factory serving.app:create_app``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from importlib.metadata import PackageNotFoundError, version

import anyio.to_thread
from fastapi import FastAPI

from serving.config import ServiceSettings
from serving.errors import install_error_handlers
from serving.limits import FORM_OVERHEAD_BYTES, JSON_BODY_LIMIT, BodyLimitMiddleware
from serving.model_registry import MAX_MODEL_BYTES
from serving.observability import Metrics, RequestLogMiddleware, configure_logging
from serving.originals import expire_originals
from serving.photos.annotated import ANNOTATED_CACHE
from serving.reports.blurring import recover_held
from serving.retention import PASS_CHECK_S, daily_pass
from serving.routes import (
    batches,
    cameras,
    datasets,
    exports,
    incidents,
    keys,
    ops,
    originals,
    pages,
    reports,
    reviews,
    rounds,
    statistics,
)
from serving.routes import models as model_routes
from serving.security import HardenedFastAPI, RequestGuardMiddleware
from serving.service import Service, start_service
from vipare.detection import Detector

__all__ = ["create_app"]

logger = logging.getLogger("serving.app")

PURGE_FIRST_CHECK_S = 60.0
"""Seconds after start-up before a worker first looks whether the daily purge of photos is due."""


def _version() -> str:
    try:
        return version("vipare")
    except PackageNotFoundError:  # pragma: no cover - running from a checkout without install
        return "0"


def create_app(settings: ServiceSettings | None = None, *, detector: Detector | None = None) -> FastAPI:
    """Build the service's application.

    Args:
        settings: the service's settings; read from ``VIPARE_*`` variables when omitted.
        detector: an already loaded detector to use instead of loading ``settings.model_path`` (tests
            share one); it keeps its own thresholds and thread count.

    Returns:
        The app; the database, photo store and model are set up by its lifespan.
    """
    settings = settings or ServiceSettings()
    configure_logging(settings.log_level)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service: Service = await anyio.to_thread.run_sync(start_service, settings, metrics, detector)
        app.state.service = service
        warm_up = asyncio.create_task(_warm_up(service))
        watcher = asyncio.create_task(_follow_promotions(service))
        purger = asyncio.create_task(_purge_photos(service))
        try:
            yield
        finally:
            for task in (purger, watcher, warm_up):
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
            if service.background:  # photos answered for and not blurred yet: finish them, not leave them held
                await asyncio.gather(*service.background, return_exceptions=True)
            service.close()
            metrics.close()  # this worker's live gauges leave the metrics shared with other workers

    app = HardenedFastAPI(
        title="vipare",
        version=_version(),
        summary="Illegal dumping reports from street photos, grouped into incidents for cleansing teams.",
        lifespan=lifespan,
        docs_url=None,  # served by serving.routes.pages with Swagger UI's files from this server, not a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    install_error_handlers(app)
    app.include_router(ops.router)
    app.include_router(model_routes.router)
    app.include_router(reports.upload_router)
    app.include_router(reports.router)
    app.include_router(originals.router)
    app.include_router(reviews.router)
    app.include_router(incidents.router)
    app.include_router(exports.router)
    app.include_router(rounds.router)
    app.include_router(statistics.router)
    app.include_router(datasets.router)
    app.include_router(keys.router)
    app.include_router(cameras.router)
    app.include_router(batches.router)
    app.include_router(pages.router)
    upload_limit = settings.max_image_bytes + FORM_OVERHEAD_BYTES
    upload_refusal = (
        f"The upload is larger than the service accepts: send one photo of at most {settings.max_image_bytes} "
        "bytes (the JPEG or HEIC the phone made is fine; do not send RAW files or videos)."
    )
    app.add_middleware(
        BodyLimitMiddleware,
        default_limit=JSON_BODY_LIMIT,
        limits={
            reports.UPLOAD_PATH: (upload_limit, upload_refusal, "image_too_large"),
            batches.BATCH_PATH: (
                upload_limit,
                f"The batch is larger than one upload may be ({upload_limit} bytes in all); send fewer frames "
                "per request.",
                "image_too_large",
            ),
            model_routes.MODELS_PATH: (
                MAX_MODEL_BYTES + FORM_OVERHEAD_BYTES,
                f"The model file is larger than the service accepts ({MAX_MODEL_BYTES} bytes); promote it on the "
                "server with vipare models promote FILE.",
                "model_too_large",
            ),
        },
    )
    app.add_middleware(RequestGuardMiddleware, settings=settings)  # untrusted hosts, foreign origins
    app.add_middleware(RequestLogMiddleware, metrics=metrics)  # outermost: logs every answer, 413s included
    return app


async def _warm_up(service: Service) -> None:
    # First the photos a crash left held between an upload's answer and their blurring: ready means
    # that no photo answered for is waiting.
    try:
        blurred = await anyio.to_thread.run_sync(recover_held, service)
    except Exception:  # readers blur what is left, one at a time
        logger.exception("blurring the photos held at start-up failed")
    else:
        if blurred:
            logger.info("blurred the photos held at start-up", extra={"photos": blurred})
    await anyio.to_thread.run_sync(service.warm_up)


async def _follow_promotions(service: Service) -> None:
    while True:
        await asyncio.sleep(service.settings.model_check_s)
        try:
            await anyio.to_thread.run_sync(service.follow_promotions)
        except Exception:  # the watcher must outlive any one failed check; the next one retries
            logger.exception("checking for a promoted model failed")


async def _purge_photos(service: Service) -> None:
    await asyncio.sleep(PURGE_FIRST_CHECK_S)  # not in the way of the start-up and the warm-up
    settings = service.settings
    while True:
        try:
            await anyio.to_thread.run_sync(
                lambda: daily_pass(
                    service.sessions, service.photos, retention_days=settings.photo_retention_days,
                    annotated_cache=settings.data_dir / ANNOTATED_CACHE,
                )
            )
        except Exception:  # the pass must outlive one failure (a full disk, a locked database); the next retries
            logger.exception("the daily purge of photos failed")
        try:
            expired = await anyio.to_thread.run_sync(expire_originals, service.photos, settings.keep_originals_days)
        except Exception:  # as the purge: the next check retries
            logger.exception("deleting the expired unblurred originals failed")
        else:
            if expired:
                logger.info("expired unblurred originals deleted", extra={"files": expired})
        await asyncio.sleep(PASS_CHECK_S)

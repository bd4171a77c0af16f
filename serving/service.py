"""The service's long-lived parts, built once per process at start-up (see :func:`start_service`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import anyio
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from serving.config import ServiceSettings, check_exposure, is_loopback
from serving.db import active_key_count
from serving.errors import ModelNotReadyError
from serving.incidents import GroupingPolicy
from serving.observability import Metrics
from serving.photos.store import PhotoStore
from serving.photos.workers import WorkerLock
from serving.storage import grouping_policy, open_storage
from vipare.detection import Detector
from vipare.errors import ModelError
from vipare.pipeline import Pipeline

__all__ = ["Service", "start_service"]

logger = logging.getLogger("serving.service")

NOT_READY_RETRY_S = 5


@dataclass
class Service:
    """Everything a request needs: settings, database, photo store, model, metrics.

    Attributes:
        ready: True once the model has run its warm-up inference (:meth:`warm_up`).
        warm_up_error: why the warm-up failed, when it did; the service then never becomes ready.
        analysis_limiter: bounds the photos analysed at once (``settings.effective_analysis_slots``).
    """

    settings: ServiceSettings
    engine: Engine
    sessions: sessionmaker[Session]
    photos: PhotoStore
    metrics: Metrics
    pipeline: Pipeline
    worker_lock: WorkerLock
    ready: bool = False
    warm_up_error: str | None = None
    analysis_limiter: anyio.CapacityLimiter = field(init=False)

    def __post_init__(self) -> None:
        self.analysis_limiter = anyio.CapacityLimiter(self.settings.effective_analysis_slots)

    @property
    def policy(self) -> GroupingPolicy:
        """How reports group into incidents."""
        return grouping_policy(self.settings)

    def require_ready(self) -> Pipeline:
        """The pipeline, once warm.

        Raises:
            ModelNotReadyError: still warming up (HTTP 503 with Retry-After).
            vipare.ModelError: the warm-up failed (HTTP 503): the model cannot serve.
        """
        if self.warm_up_error is not None:
            raise ModelError(f"The model failed its warm-up and cannot analyse photos: {self.warm_up_error}")
        if not self.ready:
            raise ModelNotReadyError(
                "The model is still loading; send the photo again in a few seconds.",
                headers={"Retry-After": str(NOT_READY_RETRY_S)},
            )
        return self.pipeline

    def open_mode(self, session: Session) -> bool:
        """True when no API key exists and the service only listens on loopback: callers need no key."""
        return is_loopback(self.settings.host) and active_key_count(session) == 0

    def warm_up(self) -> None:
        """Run the model's one warm-up inference (first runs are slow), then declare the service ready.

        :func:`start_service` loads the model without warming it, so this is the only warm-up and
        ``/readyz`` answers 503 for as long as it takes. A model whose output does not fit its class
        names fails here: the error is logged and kept in :attr:`warm_up_error` for ``/readyz``.
        """
        try:
            self.pipeline.detector.warm_up()
        except ModelError as exc:
            self.warm_up_error = str(exc)
            logger.error("warm-up failed: %s", exc, extra={"model_sha256": self.pipeline.detector.info.sha256})
            return
        self.ready = True
        self.metrics.ready.set(1)
        logger.info("ready", extra={"model_sha256": self.pipeline.detector.info.sha256})

    def close(self) -> None:
        """Release the database and the worker lock."""
        self.ready = False
        self.engine.dispose()
        self.worker_lock.release()


def start_service(settings: ServiceSettings, metrics: Metrics, detector: Detector | None = None) -> Service:
    """Build the service: migrate the database, check exposure, clean the photo store, load the model.

    Blocking; run it off the event loop.

    Args:
        settings: the service's settings.
        metrics: where to count.
        detector: an already loaded detector (tests share one); loaded from ``settings`` when omitted,
            without its own warm-up: :meth:`Service.warm_up` runs it once the app is up.

    Raises:
        UnsafeConfigurationError: bound beyond loopback with no API key.
        vipare.ModelError: the model cannot be loaded.
    """
    storage = open_storage(settings)
    try:
        with storage.sessions() as session:
            check_exposure(settings, active_key_count(session))
        if detector is None:
            detector = Detector.from_settings(settings, warmup=False)
        pipeline = Pipeline(detector=detector, settings=settings)
    except BaseException:
        storage.close()
        raise
    return Service(
        settings=settings, engine=storage.engine, sessions=storage.sessions, photos=storage.photos, metrics=metrics,
        pipeline=pipeline, worker_lock=storage.worker_lock,
    )

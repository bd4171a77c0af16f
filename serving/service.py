"""The service's long-lived parts, built once per process at start-up (see :func:`start_service`).

The model can change while the service runs (:mod:`serving.model_registry`): a new detector is
loaded and warmed in a worker thread, then :attr:`Service.pipeline` is replaced in one assignment.
A request takes the pipeline once (:meth:`Service.require_ready`) and keeps it, so an upload already
running finishes on the model it started with, and ``/readyz`` stays 200 throughout.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, cast

import anyio
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from serving.auth import any_key_created
from serving.config import ServiceSettings, check_exposure, is_loopback
from serving.errors import ModelNotReadyError
from serving.export_jobs import BucketJobFiles, ExportJobs, FolderJobFiles, JobFiles
from serving.grouping import GroupingPolicy
from serving.model_registry import ModelRejectedError, current_model, load_model, open_detector, promotion_path
from serving.observability import Metrics
from serving.photos.backend import PhotoBackend
from serving.photos.pending import InFlight
from serving.photos.workers import WorkerLock
from serving.storage import grouping_policy, open_storage
from vipare.detection import Detector
from vipare.errors import ModelError
from vipare.pipeline import Pipeline

if TYPE_CHECKING:
    from pathlib import Path

    from serving.addresses import ReverseGeocoder
    from serving.photos.s3 import S3PhotoStore

__all__ = ["Service", "export_files", "start_service"]

logger = logging.getLogger("serving.service")

NOT_READY_RETRY_S = 5


@dataclass
class Service:
    """Everything a request needs: settings, database, photo store, model, metrics.

    Attributes:
        pipeline: the model in service; replaced whole when another model is promoted.
        promotion_id: the promotion (:class:`serving.model_registry.Promotion`) whose model runs, None
            while it is the configured ``model_path`` (or the detector the app was given).
        ready: True once the model has run its warm-up inference (:meth:`warm_up`).
        warm_up_error: why the warm-up failed, when it did; the service then never becomes ready
            (unless a model promoted later loads).
        analysis_limiter: bounds the photos analysed at once (``settings.effective_analysis_slots``).
        in_flight: the photos this process is blurring after their upload was answered
            (:mod:`serving.photos.pending`).
        background: the tasks doing it, awaited before the service closes.
        exports: the export jobs this process runs (:mod:`serving.export_jobs`).
        geocoder: the nearest address of incidents (:mod:`serving.addresses`), loaded once at start-up
            when ``addresses_path`` is set; None otherwise (incidents then have no address).
    """

    settings: ServiceSettings
    engine: Engine
    sessions: sessionmaker[Session]
    photos: PhotoBackend
    metrics: Metrics
    pipeline: Pipeline
    worker_lock: WorkerLock
    promotion_id: int | None = None
    geocoder: ReverseGeocoder | None = None
    ready: bool = False
    warm_up_error: str | None = None
    analysis_limiter: anyio.CapacityLimiter = field(init=False)
    in_flight: InFlight = field(init=False, default_factory=InFlight)
    exports: ExportJobs = field(init=False)
    background: set[asyncio.Task[None]] = field(init=False, default_factory=set)
    # Serialises model loads and swaps (never inference): the watcher and an HTTP promotion may race.
    _model_lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    _refused_promotion_id: int | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.analysis_limiter = anyio.CapacityLimiter(self.settings.effective_analysis_slots)
        self.exports = ExportJobs(export_files(self.photos, self.settings.export_dir),
                                  timedelta(hours=self.settings.export_keep_hours))

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
        """True in the trial mode (set, on loopback) until the first API key is created: callers need no key."""
        return self.settings.trial_mode and is_loopback(self.settings.host) and not any_key_created(session)

    def warm_up(self) -> None:
        """Run the model's one warm-up inference (first runs are slow), then declare the service ready.

        :func:`start_service` loads the model without warming it, so this is the only warm-up and
        ``/readyz`` answers 503 for as long as it takes. A model whose output does not fit its class
        names fails here: the error is logged and kept in :attr:`warm_up_error` for ``/readyz``.
        """
        pipeline = self.pipeline
        try:
            pipeline.detector.warm_up()
            if pipeline.privacy is not None:  # the faces and plates blurred before a photo is stored
                pipeline.privacy.warm_up()
        except ModelError as exc:
            if self.pipeline is pipeline:  # else a promoted model, warm, replaced it meanwhile
                self.warm_up_error = str(exc)
            logger.error("warm-up failed: %s", exc, extra={"model_sha256": pipeline.detector.info.sha256})
            return
        self.ready = True
        self.metrics.ready.set(1)
        logger.info("ready", extra={"model_sha256": pipeline.detector.info.sha256})

    def install(self, detector: Detector, promotion_id: int) -> bool:
        """Serve a promoted model from now on: requests already running finish on the previous one.

        Args:
            detector: the promoted model, loaded and warm (:func:`serving.model_registry.load_model`).
            promotion_id: its promotion.

        Returns:
            False when a later promotion is already in service (the detector is then dropped).
        """
        with self._model_lock:
            if self.promotion_id is not None and promotion_id < self.promotion_id:
                return False
            self._swap(detector, promotion_id)
            return True

    def follow_promotions(self) -> bool:
        """Switch to the latest promoted model when it is not the one in service (blocking).

        The service's watcher calls this every ``model_check_s`` seconds, so each worker follows a
        promotion made elsewhere (``vipare models``, another worker). A model that fails to load is
        logged once and the current one kept.

        Returns:
            True when the model changed.
        """
        try:
            with self.sessions() as session:
                latest = current_model(session)
        except SQLAlchemyError as exc:
            logger.error("cannot read the promoted model: %s", exc)
            return False
        if latest is None or latest.id in (self.promotion_id, self._refused_promotion_id):
            return False
        with self._model_lock:
            if self.promotion_id is not None and latest.id <= self.promotion_id:
                return False  # an HTTP promotion installed it (or a later one) meanwhile
            if latest.sha256 == self.pipeline.detector.info.sha256:
                self.promotion_id = latest.id
                return False
            try:
                detector = load_model(promotion_path(self.settings, latest), self.settings)
            except ModelRejectedError as exc:
                self._refused_promotion_id = latest.id
                logger.error(
                    "promoted model not loaded, keeping the current one: %s", exc.detail,
                    extra={"model_sha256": self.pipeline.detector.info.sha256},
                )
                return False
            self._swap(detector, latest.id)
            return True

    def _swap(self, detector: Detector, promotion_id: int) -> None:
        previous = self.pipeline.detector.info.sha256
        self.pipeline = Pipeline(detector=detector, settings=self.settings, privacy=self.pipeline.privacy)
        self.promotion_id = promotion_id
        self.warm_up_error = None
        self.ready = True
        self.metrics.ready.set(1)
        logger.info("model swapped", extra={"model_sha256": detector.info.sha256, "previous_sha256": previous})

    def close(self) -> None:
        """Release the database and the worker lock."""
        self.ready = False
        self.exports.close()
        self.engine.dispose()
        self.worker_lock.release()


def start_service(settings: ServiceSettings, metrics: Metrics, detector: Detector | None = None) -> Service:
    """Build the service: migrate the database, check exposure, clean the photo store, load the model and
    the address index (when ``settings.addresses_path`` is set).

    Blocking; run it off the event loop.

    The model is the latest promoted one (:mod:`serving.model_registry`) if any, else ``detector``,
    else ``settings.model_path``; loaded without its warm-up: :meth:`Service.warm_up` runs it once
    the app is up.

    Args:
        settings: the service's settings.
        metrics: where to count.
        detector: an already loaded detector (tests share one), used instead of ``settings.model_path``
            while no model has been promoted.

    Raises:
        UnsafeConfigurationError: the trial mode beyond loopback.
        vipare.ModelError: the model cannot be loaded.
        serving.addresses.AddressIndexError: the address index is set but cannot be loaded.
    """
    check_exposure(settings)
    storage = open_storage(settings)
    try:
        with storage.sessions() as session:
            promoted = current_model(session)
        if promoted is not None:
            path = promotion_path(settings, promoted)
            try:
                detector = open_detector(path, settings, warmup=False)
            except ModelError as exc:
                raise ModelError(
                    f"the promoted model {promoted.sha256} ({path}) cannot be loaded: {exc}. Roll back "
                    "(vipare models rollback) or promote another model (vipare models promote FILE)."
                ) from exc
        elif detector is None:
            detector = Detector.from_settings(settings, warmup=False)
        pipeline = Pipeline(detector=detector, settings=settings)
        geocoder = _load_geocoder(settings)
    except BaseException:
        storage.close()
        raise
    return Service(
        settings=settings, engine=storage.engine, sessions=storage.sessions, photos=storage.photos, metrics=metrics,
        pipeline=pipeline, worker_lock=storage.worker_lock, promotion_id=None if promoted is None else promoted.id,
        geocoder=geocoder,
    )


def _load_geocoder(settings: ServiceSettings) -> ReverseGeocoder | None:
    if settings.addresses_path is None:
        return None
    from serving.addresses import ReverseGeocoder  # SciPy's import time only for a service with addresses

    geocoder = ReverseGeocoder.load(settings.addresses_path, max_distance_m=settings.address_max_distance_m)
    logger.info("address index loaded", extra={"addresses": len(geocoder), "path": str(settings.addresses_path)})
    return geocoder


def export_files(photos: PhotoBackend, folder: Path) -> JobFiles:
    """Where export jobs are kept: beside the photos when they are in a bucket that several hosts share (a job
    is then followed and downloaded through any host), else in ``folder`` (``<data_dir>/exports``)."""
    if photos.shared:  # only a bucket is: serving.photos.s3.S3PhotoStore
        bucket = cast("S3PhotoStore", photos)
        return BucketJobFiles(bucket.client, bucket.bucket, bucket.prefix, folder)
    return FolderJobFiles(folder)

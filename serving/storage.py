"""The store a service worker and a batch job share: the database and the photo store, opened together.

Light on purpose: a batch job's own process opens the store without loading the detector, the web
framework or the metrics (see :mod:`serving.service` for what the HTTP service adds).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from serving.config import ServiceSettings, UnsafeConfigurationError
from serving.db import engine_from_settings, migrate, session_factory
from serving.grouping import GroupingPolicy
from serving.models import Installation, Report
from serving.photos.backend import PhotoBackend
from serving.photos.location import open_photos
from serving.photos.store import OWNER_FILE
from serving.photos.workers import WorkerLock

__all__ = ["Storage", "claim_photos", "grouping_policy", "open_storage"]

logger = logging.getLogger("serving.storage")


def grouping_policy(settings: ServiceSettings) -> GroupingPolicy:
    """How reports group into incidents, from ``incident_radius_m`` and ``incident_window_days``."""
    return GroupingPolicy(radius_m=settings.incident_radius_m, window=timedelta(days=settings.incident_window_days))


@dataclass
class Storage:
    """The database and the photo store, open, with this process counted among their writers.

    Attributes:
        engine: the database engine, migrated to the latest revision.
        sessions: the session factory.
        photos: the photo store.
        worker_lock: held shared while this process may write (see :class:`serving.photos.workers.WorkerLock`).
    """

    engine: Engine
    sessions: sessionmaker[Session]
    photos: PhotoBackend
    worker_lock: WorkerLock

    def close(self) -> None:
        """Release the database and the worker lock."""
        self.engine.dispose()
        self.worker_lock.release()


def open_storage(settings: ServiceSettings) -> Storage:
    """Migrate the database, open the photo store and delete the files a crash left unreferenced.

    Blocking. Used by the service at start-up and by batch jobs, which write to the same store: a
    process that holds the worker lock keeps the others from deleting its files between file and commit.
    The store is swept only when a worker died without closing since the last sweep (see
    :class:`serving.photos.workers.WorkerLock`), and only once it is known to be this database's
    (:func:`claim_photos`).

    Raises:
        UnsafeConfigurationError: the photo store belongs to another database.
    """
    engine = engine_from_settings(settings)
    lock: WorkerLock | None = None
    try:
        migrate(engine)
        sessions = session_factory(engine)
        photos = open_photos(settings)
        claim_photos(photos, sessions)
        lock = WorkerLock(settings.data_dir / ".workers.lock")
        alone = lock.acquire()
        removed = 0
        try:
            if lock.sweep_needed():  # else every worker since the last sweep closed cleanly: no orphan
                # Alone among this host's workers; a shared store's other hosts may be between file and commit.
                grace = 0.0 if alone and not photos.shared else settings.orphan_grace_s
                started = time.time()
                removed = photos.remove_orphans(_referenced(sessions), older_than_s=grace)
                lock.swept(started - grace)
            lock.mark()
        finally:
            lock.share()
        if removed:
            logger.warning("orphan photos removed", extra={"count": removed})
    except BaseException:
        engine.dispose()
        if lock is not None:
            lock.release()
        raise
    return Storage(engine=engine, sessions=sessions, photos=photos, worker_lock=lock)


def claim_photos(photos: PhotoBackend, sessions: sessionmaker[Session]) -> None:
    """Check that the photo store is this database's, recording it in a store that names none yet.

    A store's sweep deletes the photos no report of its database refers to: a store that two
    databases used (a second host or a move to PostgreSQL pointed at a new, empty database with the
    same bucket or folder) would lose the other's photos at the next sweep.

    Raises:
        UnsafeConfigurationError: the store records another database's id.
    """
    with sessions() as session:
        ours = session.scalars(select(Installation.uid)).one()
    owner = photos.claim(ours)
    if owner != ours:
        raise UnsafeConfigurationError(
            f"the photo store {photos.location} holds the photos of another vipare database (id {owner}); this "
            f"database's id is {ours}. A photo store serves one database: point VIPARE_DATABASE_URL at the database "
            f"those photos belong to, or VIPARE_PHOTO_STORE (or VIPARE_DATA_DIR) at a store of this database's own. "
            f"If that other database is gone for good, delete the store's {OWNER_FILE} entry to give the store "
            "to this one: its next sweep then deletes the photos no report of this database refers to."
        )


def _referenced(sessions: sessionmaker[Session]) -> Callable[[Sequence[str]], set[str]]:
    def referenced(shas: Sequence[str]) -> set[str]:
        with sessions() as session:
            # A photo whose reports are all marked deleted is an interrupted purge's (serving.retention).
            kept = Report.photo_deleted_at.is_(None)
            return set(session.scalars(select(Report.sha256).where(Report.sha256.in_(list(shas)), kept)))

    return referenced

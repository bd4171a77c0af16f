"""The database: engine, sessions, migrations, and the one way to write.

SQLite by default (a file under the data directory), PostgreSQL through ``VIPARE_DATABASE_URL``
(``postgresql+psycopg://...``, psycopg 3 from the ``[postgres]`` extra; a plain ``postgresql://`` URL
means the same); queries stay portable (no spatial extension: positions are plain ``lat``/``lon`` columns).

SQLite connections are set up for a service: WAL journal (readers never block the writer),
``synchronous=FULL`` (a committed report survives a power cut, not only a crash), foreign keys on,
a busy timeout, and SQLAlchemy emits ``BEGIN`` itself so that reads are transactional too (the
``sqlite3`` module's legacy mode would run SELECTs outside the transaction).

Writers take turns where they could meet: :func:`write_session` starts every write transaction by
taking its locks, so that "look for a nearby open incident, else open one" cannot race with itself.
On SQLite it updates one row of ``write_locks``, which takes the database's write lock before
anything is read (so no transaction ever has to upgrade a stale read snapshot): one writer at a time,
as SQLite allows. On PostgreSQL a transaction that names its places (the cells of
:mod:`serving.cells` around the reports it groups) locks those cells only, with advisory locks, so
that writers at distant places run side by side; any other write transaction locks everything
(:data:`EVERYTHING_LOCK_KEY`, which place writers hold shared).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, func, inspect, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from serving.config import ServiceSettings
from serving.models import WRITE_LOCK_NAME, ApiKey, WriteLock
from serving.private_files import keep_private

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "MIGRATIONS_DIR",
    "EVERYTHING_LOCK_KEY",
    "MIGRATION_LOCK_KEY",
    "SCHEMA_REVISION",
    "active_key_count",
    "alembic_config",
    "current_revision",
    "engine_from_settings",
    "head_revision",
    "make_engine",
    "migrate",
    "session_factory",
    "write_session",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SCHEMA_REVISION = "0011"
"""The revision :mod:`serving.models` matches: the newest in ``serving/migrations`` (a test checks it)."""
SQLITE_BEGIN_OPTION = "vipare_sqlite_begin"
SQLITE_MMAP_BYTES = 256 * 1024 * 1024
"""How much of an SQLite database each connection reads through memory-mapped I/O (``PRAGMA mmap_size``):
pages are read from the system's file cache without a copy per read, which a national store's exports and
lists, reading hundreds of thousands of pages, gain from. Writes still go through SQLite's journal as before."""
MIGRATION_LOCK_KEY = 0x7669_7061_7265  # "vipare" in ASCII
"""The PostgreSQL advisory lock :func:`migrate` holds (advisory locks are per database), so that processes
starting together on a new database migrate one after the other."""
EVERYTHING_LOCK_KEY = MIGRATION_LOCK_KEY + 1
"""The PostgreSQL advisory lock of every write transaction: exclusive, or shared by those that lock their places.
Cells' own keys are their numbers (below 2**36), apart from both."""


def make_engine(
    url: str,
    *,
    busy_timeout_ms: int = 10_000,
    pool_size: int = 5,
    max_overflow: int = 10,
    pool_timeout_s: float = 30.0,
) -> Engine:
    """Create the engine for ``url``; for an SQLite file, create its folder and set it up (see module doc).

    A ``postgresql://`` URL without a driver uses psycopg 3 (SQLAlchemy's default would be psycopg2).

    Args:
        url: SQLAlchemy database URL.
        busy_timeout_ms: SQLite: how long a writer waits for the database's write lock.
        pool_size: server databases: connections the pool keeps open.
        max_overflow: server databases: connections opened beyond ``pool_size`` when all are in use.
        pool_timeout_s: server databases: how long a checkout waits for a free connection, in seconds.

    The pool options are not applied to SQLite, which keeps SQLAlchemy's pool for it: its connections
    are file handles in this process, not a server's limited sessions, and its writers take turns on
    the database's lock (``busy_timeout_ms``) however many connections are open.

    Raises:
        ModuleNotFoundError: the URL's driver is not installed; the message names the extra to install.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        try:
            return create_engine(
                parsed, pool_pre_ping=True, pool_size=pool_size, max_overflow=max_overflow, pool_timeout=pool_timeout_s
            )
        except ModuleNotFoundError as exc:
            extra = " (pip install 'vipare[postgres]')" if parsed.drivername == "postgresql+psycopg" else ""
            raise ModuleNotFoundError(
                f"the database URL's driver {parsed.get_driver_name()!r} is not installed{extra}: {exc}", name=exc.name
            ) from exc
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN (see _on_begin)
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        _use_wal(cursor, busy_timeout_ms / 1000.0)
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA mmap_size={SQLITE_MMAP_BYTES}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get(SQLITE_BEGIN_OPTION, "")  # IMMEDIATE: write lock now
        connection.exec_driver_sql(f"BEGIN {mode}".rstrip())

    return engine


def _use_wal(cursor: Any, timeout_s: float) -> None:
    """Switch the database file to WAL (persistent), unless it already is.

    The switch needs an exclusive lock and SQLite refuses it at once, without waiting, while another
    connection is migrating a new database: retry until ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def engine_from_settings(settings: ServiceSettings) -> Engine:
    """The engine for ``settings.resolved_database_url`` with the settings' pool, once the data folder is private.

    The folder is made private by :func:`keep_private`.
    """
    keep_private(settings.data_dir)
    return make_engine(
        settings.resolved_database_url,
        busy_timeout_ms=settings.sqlite_busy_timeout_ms,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout_s=settings.db_pool_timeout_s,
    )


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit (responses are built from them)."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def write_session(sessions: sessionmaker[Session], *, places: Sequence[int] | None = None) -> Iterator[Session]:
    """A session in a write transaction holding its locks (module doc); commits on success, rolls back on error.

    Args:
        sessions: the session factory.
        places: the cells (:mod:`serving.cells`) of every incident the transaction may read or write,
            for one that only groups reports around their positions; None (any other write) locks everything.
    """
    with sessions() as session, session.begin():
        if session.get_bind().dialect.name == "postgresql":
            if places is None:
                session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": EVERYTHING_LOCK_KEY})
            else:
                session.execute(text("SELECT pg_advisory_xact_lock_shared(:key)"), {"key": EVERYTHING_LOCK_KEY})
                session.execute(  # one statement, the cells in ascending order: no deadlock between writers
                    text("SELECT count(pg_advisory_xact_lock(cell)) FROM unnest(CAST(:cells AS bigint[])) AS cell"),
                    {"cells": sorted(set(places))},
                )
        else:
            session.execute(
                update(WriteLock).where(WriteLock.name == WRITE_LOCK_NAME).values(counter=WriteLock.counter + 1)
            )
        yield session


def alembic_config(url: str | None = None) -> Config:
    """Alembic configuration pointing at ``serving/migrations`` (no ini file needed)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the database to ``revision`` (default: the latest), in one transaction.

    The transaction first takes the write lock on SQLite, an advisory lock (:data:`MIGRATION_LOCK_KEY`)
    on PostgreSQL, so that workers starting together on a new database migrate one after the other
    instead of failing on each other's changes; the later ones find it at ``revision``. A database
    already at :data:`SCHEMA_REVISION` is left alone without loading Alembic, as when a
    batch job or a service worker opens an existing store.
    """
    if revision == "head" and current_revision(engine) == SCHEMA_REVISION:
        return
    from alembic import command

    config = alembic_config()
    with engine.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"}).begin() as connection:
        if connection.dialect.name == "postgresql":  # released at commit or rollback
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None before the first migration."""
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def head_revision() -> str | None:
    """The latest revision in ``serving/migrations``, as Alembic reads it."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def active_key_count(session: Session) -> int:
    """How many API keys are not revoked."""
    return session.scalar(select(func.count()).select_from(ApiKey).where(ApiKey.revoked_at.is_(None))) or 0

"""Where the tests' databases live: SQLite files by default, PostgreSQL with ``VIPARE_TEST_DATABASE_URL``.

Unset, every store a test makes keeps its database where the service does by default: an SQLite
file in its data folder. Set to a PostgreSQL server URL whose user may create databases, e.g. the
one ``tests/pg_cluster.sh start DIR`` prints::

    VIPARE_TEST_DATABASE_URL=postgresql+psycopg://postgres@/postgres?host=/tmp/pg

each data folder a test uses gets a fresh database of its own on that server instead, created
through the URL's database (the admin connection) when the folder is first opened, and dropped when
the test, module or session that opened it ends (``tests/conftest.py``). The one seam is
:meth:`serving.config.ServiceSettings.resolved_database_url`, which ``tests/conftest.py`` routes
through :func:`url_for` for settings that name no ``database_url``: apps, CLI commands and batch
jobs of the test process follow it; processes a test starts get :func:`database_env` of the folder.

Checks of the SQLite file itself (its journal mode, its ``-wal`` file) apply where :data:`ON_POSTGRES`
is false; the rest of those tests runs on both.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = [
    "ON_POSTGRES",
    "SERVER_URL",
    "database_env",
    "drop_databases_from",
    "open_count",
    "store_url",
    "url_for",
]

SERVER_URL = os.environ.get("VIPARE_TEST_DATABASE_URL") or None
"""The PostgreSQL server the tests' databases are made on; None: SQLite files."""
ON_POSTGRES = SERVER_URL is not None

_by_folder: dict[Path, str] = {}
"""Data folder -> URL of its database."""
_opened: list[tuple[str, Path]] = []
"""(database name, its data folder) in the order they were created: a stack the fixtures pop."""
_admin: Engine | None = None


def _admin_engine() -> Engine:
    """An autocommit engine on the server URL's own database (CREATE/DROP DATABASE cannot run in a transaction)."""
    global _admin
    if _admin is None:
        from serving.db import make_engine

        assert SERVER_URL is not None
        _admin = make_engine(SERVER_URL).execution_options(isolation_level="AUTOCOMMIT")
    return _admin


def _create_database(folder: Path) -> str:
    """A new, empty database on the server for the data folder ``folder``; returns its URL."""
    from sqlalchemy.engine import make_url

    assert SERVER_URL is not None, "VIPARE_TEST_DATABASE_URL is not set"
    name = f"vipare_test_{os.getpid()}_{hashlib.sha256(str(folder).encode()).hexdigest()[:16]}"
    with _admin_engine().connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # a killed run's, same pid
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    _opened.append((name, folder))
    return make_url(SERVER_URL).set(database=name).render_as_string(hide_password=False)


def url_for(folder: Path) -> str:
    """The URL of the database of the data folder ``folder``, created on first use."""
    folder = folder.resolve()
    if folder not in _by_folder:
        _by_folder[folder] = _create_database(folder)
    return _by_folder[folder]


def store_url(folder: Path) -> str:
    """The URL of the database a store in the data folder ``folder`` uses: its SQLite file, or :func:`url_for`."""
    if ON_POSTGRES:
        return url_for(folder)
    from serving.config import SQLITE_FILE

    return f"sqlite:///{(folder / SQLITE_FILE).resolve()}"


def database_env(folder: Path) -> dict[str, str]:
    """``VIPARE_DATABASE_URL`` of ``folder``'s database for a process a test starts; empty on SQLite."""
    return {"VIPARE_DATABASE_URL": url_for(folder)} if ON_POSTGRES else {}


def open_count() -> int:
    """How many databases are open now: a mark for :func:`drop_databases_from`."""
    return len(_opened)


def drop_databases_from(mark: int) -> None:
    """Drop the databases created since :func:`open_count` returned ``mark`` (their connections are ended).

    With ``mark`` 0, also close the admin connection: nothing of the tests is left on the server.
    """
    global _admin
    while len(_opened) > mark:
        name, folder = _opened.pop()
        _by_folder.pop(folder, None)
        with _admin_engine().connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    if mark == 0 and _admin is not None:
        _admin.dispose()
        _admin = None

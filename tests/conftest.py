"""With ``VIPARE_TEST_DATABASE_URL`` set, each data folder's database is a fresh one on that PostgreSQL server.

See :mod:`tests.database`: the fixtures below route the service's settings to it and drop every
database at the end of the test, module or session that created it. Unset (the default), they do nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import database


def _dropping() -> Iterator[None]:
    mark = database.open_count()
    yield
    database.drop_databases_from(mark)


if database.ON_POSTGRES:

    @pytest.fixture(scope="session", autouse=True)
    def _postgres_databases() -> Iterator[None]:
        """Settings without a ``database_url`` use their data folder's database (:func:`tests.database.url_for`)."""
        from serving.config import ServiceSettings

        def resolved_database_url(self: ServiceSettings) -> str:
            return self.database_url or database.url_for(Path(self.data_dir))

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(ServiceSettings, "resolved_database_url", property(resolved_database_url))
            yield from _dropping()

    @pytest.fixture(scope="module", autouse=True)
    def _module_databases() -> Iterator[None]:
        """Drop the databases a module's fixtures created, when the module ends."""
        yield from _dropping()

    @pytest.fixture(autouse=True)
    def _test_databases() -> Iterator[None]:
        """Drop the databases a test and its own fixtures created, when the test ends."""
        yield from _dropping()

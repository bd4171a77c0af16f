"""The exports' values written by the database (serving.sql_text) are what Python writes, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Column, Engine, Float, Integer, MetaData, String, Table, insert, select

from serving.db import make_engine
from serving.models import UTCDateTime
from serving.sql_text import FORMULA_START, csv_quoted, csv_row, decimal_text, formula_safe, iso_text
from tests.database import store_url

metadata = MetaData()
values = Table(
    "sql_text_values", metadata,
    Column("id", Integer, primary_key=True),
    Column("number", Float),
    Column("at", UTCDateTime),
    Column("text", String(100)),
)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(store_url(tmp_path))
    metadata.create_all(engine)
    yield engine
    engine.dispose()


def _numbers() -> list[float]:
    rng = random.Random(2026)
    halfway = [k / 256 for k in range(-2049, 2049, 2)] + [k / 32 for k in range(-65, 65, 2)]  # exact binary ties
    return [
        *(rng.uniform(-180, 180) for _ in range(3000)),
        *(float(np.float32(rng.random())) for _ in range(2000)),  # a model's scores are float32
        *halfway, *(49 + h for h in halfway[:500]), 0.0, 2.5,  # no -0.0: SQLite stores it as 0
        3.5, -2.5, 1e-9, -1e-9, 179.99999999, 0.125,
    ]


def test_numbers_are_written_as_python_writes_them(engine: Engine) -> None:
    numbers = _numbers()
    with engine.begin() as connection:
        connection.execute(insert(values), [{"id": i, "number": v} for i, v in enumerate(numbers)])
    for decimals in (0, 2, 4, 7):
        for comma in (False, True):
            with engine.connect() as connection:
                written = connection.execute(
                    select(decimal_text(values.c.number, decimals, comma=comma)).order_by(values.c.id)
                ).scalars().all()
            expected = [f"{v:.{decimals}f}" for v in numbers]
            if comma:
                expected = [e.replace(".", ",") for e in expected]
            wrong = [(v, w, e) for v, w, e in zip(numbers, written, expected, strict=True) if w != e]
            assert not wrong, (decimals, comma, wrong[:10])


def test_timestamps_are_written_as_isoformat_in_utc(engine: Engine) -> None:
    times = [
        datetime(2026, 12, 1, 8, 30, tzinfo=UTC),
        datetime(2026, 12, 1, 8, 30, 0, 250000, tzinfo=UTC),
        datetime(2024, 2, 29, 23, 59, 59, 1, tzinfo=UTC),
        datetime(1999, 1, 2, 3, 4, 5, 999999, tzinfo=UTC),
        None,
    ]
    with engine.begin() as connection:
        connection.execute(insert(values), [{"id": i, "at": t} for i, t in enumerate(times)])
    with engine.connect() as connection:
        written = connection.execute(select(iso_text(values.c.at)).order_by(values.c.id)).scalars().all()
    assert written == [None if t is None else t.isoformat().replace("+00:00", "Z") for t in times]


def test_typed_text_that_starts_like_a_formula_gets_a_quote(engine: Engine) -> None:
    texts = [*(f"{c}1+1" for c in FORMULA_START), "sacs devant la porte", "a=b", "", None, "'déjà'"]
    with engine.begin() as connection:
        connection.execute(insert(values), [{"id": i, "text": t} for i, t in enumerate(texts)])
    with engine.connect() as connection:
        written = connection.execute(select(formula_safe(values.c.text)).order_by(values.c.id)).scalars().all()
    assert written == [*(f"'{c}1+1" for c in FORMULA_START), "sacs devant la porte", "a=b", None, None, "'déjà'"]


def _awkward_texts() -> list[str | None]:
    """Cells a person may type: separators, quotes, line breaks of every kind, accents, spaces; and NULL."""
    rng = random.Random(2027)
    alphabet = ['a', 'é', ' ', ',', ';', '"', "'", '\r', '\n', '\t', '=', '%', '_', '\\']
    return [
        None, "", "plain", "a,b", "a;b", 'say "hi"', '"', '""', "line\nbreak", "cr\rhere", "crlf\r\nend",
        " lead", "trail ", "100%_done", "déjà vu", "\\", *(
            "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))) for _ in range(400)
        ),
    ]


@pytest.mark.parametrize("separator", [",", ";"])
def test_rows_are_written_as_the_csv_module_writes_them(engine: Engine, separator: str) -> None:
    texts = _awkward_texts()
    with engine.begin() as connection:
        connection.execute(insert(values), [{"id": i, "text": t} for i, t in enumerate(texts)])
    cells = [(values.c.id, False), (values.c.text, True), (values.c.number, False), (values.c.text, True)]
    with engine.connect() as connection:
        written = connection.execute(select(csv_row(cells, separator)).order_by(values.c.id)).scalars().all()
    expected, in_python = [], []
    for i, text in enumerate(texts):
        buffer = io.StringIO()
        csv.writer(buffer, delimiter=separator, lineterminator="\r\n").writerow([i, text, None, text])
        expected.append(buffer.getvalue().removesuffix("\r\n"))
        in_python.append(separator.join([str(i), csv_quoted(text, separator), "", csv_quoted(text, separator)]))
    wrong = [(t, w, e) for t, w, e in zip(texts, written, expected, strict=True) if w != e]
    assert not wrong, wrong[:10]
    assert in_python == expected
    assert sum('"' in line for line in written) > 100  # the quoting was exercised, not only plain cells

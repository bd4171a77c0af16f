"""Values written as text by the database itself, as the exports write them.

A national CSV export formats millions of timestamps and numbers: written by SQLite or PostgreSQL
in the query that reads them, they cost nothing to the service's Python, which then hands each block
of rows to :mod:`csv` as it comes (:func:`serving.bulk_exports.csv_text`). Each construct renders
the same text on both databases, and the same as Python writes it (tested against Python on random
values, ``tests/serving/test_sql_text.py``):

- :class:`iso_text`: a stored timestamp as ``datetime.isoformat()`` of the UTC time plus ``Z``;
- :class:`decimal_text`: a number with a fixed count of decimals, as ``f"{value:.{decimals}f}"``
  (correctly rounded, a value exactly halfway to the even digit), with a decimal comma on demand;
- :func:`formula_safe`: text a person typed, with a ``'`` before a leading ``=``, ``+``, ``-``, ``@``,
  tab or carriage return, so that no spreadsheet reads it as a formula (OWASP's CSV injection).

NULL stays NULL in each: :mod:`csv` writes it as an empty cell. :func:`csv_row` goes one step
further: a row's cells joined into its CSV text, quoted as :mod:`csv` quotes them, so that Python
only joins the lines of a block (tested against :mod:`csv`, ``tests/serving/test_sql_text.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, String, case, cast, func, literal, or_
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

__all__ = ["FORMULA_START", "CsvCell", "csv_quoted", "csv_row", "decimal_text", "formula_safe", "iso_text"]

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet read a cell as a formula."""


class iso_text(FunctionElement[str]):  # noqa: N801 (a SQL function, named as one)
    """A stored timestamp as ISO 8601 text in UTC with a ``Z``, microseconds only when there are some
    (``2026-12-01T08:30:00Z``, ``2026-12-01T08:30:00.250000Z``), as Python's ``isoformat`` writes them.

    Timestamps are stored as naive UTC (:class:`serving.models.UTCDateTime`): SQLite keeps them as
    ``YYYY-MM-DD HH:MM:SS.ffffff`` text, PostgreSQL as ``timestamp``.
    """

    type = String()
    inherit_cache = True


@compiles(iso_text, "sqlite")
def _iso_sqlite(element: iso_text, compiler: SQLCompiler, **kw: Any) -> str:
    stored = compiler.process(element.clauses, **kw)
    return f"(replace(replace({stored}, ' ', 'T'), '.000000', '') || 'Z')"


@compiles(iso_text, "postgresql")
def _iso_postgresql(element: iso_text, compiler: SQLCompiler, **kw: Any) -> str:
    stored = compiler.process(element.clauses, **kw)
    return f"""(replace(to_char({stored}, 'YYYY-MM-DD"T"HH24:MI:SS.US'), '.000000', '') || 'Z')"""


class decimal_text(FunctionElement[str]):  # noqa: N801 (a SQL function, named as one)
    """A number with ``decimals`` decimals (0 to 9), a decimal comma when ``comma``, as ``f"{value:.{decimals}f}"``
    (on SQLite for values below 9e18 / 10 ** decimals: coordinates, scores)."""

    type = String()
    inherit_cache = False  # the decimals and the mark are part of the SQL text

    def __init__(
        self, value: ColumnElement[Any] | InstrumentedAttribute[Any], decimals: int, *, comma: bool = False
    ) -> None:
        if not 0 <= decimals <= 9:
            raise ValueError(f"decimals must be within [0, 9], got {decimals}")
        self.decimals, self.comma = decimals, comma
        super().__init__(value)


def _with_mark(element: decimal_text, text: str) -> str:
    return f"replace({text}, '.', ',')" if element.comma else text


@compiles(decimal_text, "sqlite")
def _decimal_sqlite(element: decimal_text, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite's printf rounds a value exactly halfway (0.65625 to 4 decimals) away from zero where Python
    # rounds to the even digit: such a value, always exact in binary, is written as its even neighbour.
    value = compiler.process(element.clauses, **kw)
    d, scale = element.decimals, f"{10 ** element.decimals}.0"
    scaled = f"(abs({value}) * {scale})"
    whole = f"CAST({scaled} AS INTEGER)"
    even = f"(CASE WHEN {value} < 0 THEN -{whole} ELSE {whole} END / {scale})"
    text = (f"CASE WHEN {scaled} - {whole} = 0.5 AND {whole} % 2 = 0 THEN printf('%.{d}f', {even}) "
            f"ELSE printf('%.{d}f', {value}) END")
    return _with_mark(element, f"({text})")


@compiles(decimal_text, "postgresql")
def _decimal_postgresql(element: decimal_text, compiler: SQLCompiler, **kw: Any) -> str:
    # to_char formats a double with C's printf: correctly rounded, as Python. FM drops the padding.
    value = compiler.process(element.clauses, **kw)
    pattern = "FM999999999999990" + ("." + "0" * element.decimals if element.decimals else "")
    return _with_mark(element, f"to_char(CAST({value} AS double precision), '{pattern}')")


def formula_safe(value: ColumnElement[Any] | InstrumentedAttribute[Any]) -> ColumnElement[str | None]:
    """``value`` with a ``'`` before it when it starts like a formula (:data:`FORMULA_START`); NULL or empty: NULL."""
    first = func.substr(value, 1, 1)
    return case(
        (func.coalesce(value, "") == "", None),
        (first.in_([literal(c) for c in FORMULA_START]), literal("'") + value),
        else_=value,
    )


CsvCell = tuple[ColumnElement[Any] | InstrumentedAttribute[Any], bool]
"""A cell of :func:`csv_row`: its value, and whether it may hold a separator, a quote or a line break
(text a person typed, a link, a decimal comma): only those are checked for quoting."""

_QUOTE = '"'


def _quote_specials(separator: str) -> tuple[str, ...]:
    return separator, _QUOTE, "\r", "\n"


def csv_row(cells: Sequence[CsvCell], separator: str) -> ColumnElement[str]:
    """The cells as one CSV row's text, without its line end, as :mod:`csv`'s writer writes them
    (``QUOTE_MINIMAL``): separated by ``separator``, NULL as an empty cell, a cell that holds the
    separator, a double quote, a carriage return or a line feed put in double quotes, its own
    double quotes doubled (:func:`csv_quoted` in Python)."""
    texts: list[ColumnElement[str]] = []
    for value, free in cells:
        text: ColumnElement[str] = func.coalesce(cast(value, String), "")
        if free:
            text = case(
                (or_(*(text.like(f"%{c}%") for c in _quote_specials(separator))),
                 literal(_QUOTE) + func.replace(text, _QUOTE, _QUOTE * 2, type_=String) + _QUOTE),
                else_=text,
            )
        texts.append(text)
    row = texts[0]
    for text in texts[1:]:
        row = row + literal(separator) + text
    return row


def csv_quoted(value: str | None, separator: str) -> str:
    """One cell as :func:`csv_row` writes it in SQL, in Python (for cells the database does not have)."""
    if value is None:
        return ""
    if any(c in value for c in _quote_specials(separator)):
        return _QUOTE + value.replace(_QUOTE, _QUOTE * 2) + _QUOTE
    return value

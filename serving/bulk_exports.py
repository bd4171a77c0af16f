"""Exports of many incidents: the CSV and GeoJSON texts, read and sent in blocks.

:func:`csv_text` and :func:`geojson_text` read the matching incidents a block at a time (the facts
of a block's incidents in one query each: their status times, latest photo, latest note, addresses)
and yield one piece of text per block. ``GET /v1/exports/incidents.csv`` streams them as they come;
a national export, which takes minutes, runs as a job (:mod:`serving.export_jobs`) that writes them
to a file.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from sqlalchemy import CTE, Select, String, case, cast, func, literal, null, select, text

from serving.export_jobs import Progress
from serving.exports import (
    COORDINATE_DECIMALS,
    CSV_BLOCK_ROWS,
    CSV_COLUMNS,
    CSV_LINE_END,
    CsvFormat,
    csv_header,
    incident_addresses,
    incident_feature,
)
from serving.incidents import Status
from serving.models import NOTED, STATUS_TIMES, Incident, Report
from serving.queries import IncidentFilter, batches, iter_incidents
from serving.sql_text import CsvCell, csv_quoted, csv_row, decimal_text, formula_safe, iso_text

if TYPE_CHECKING:
    from serving.addresses import Address
    from serving.service import Service

__all__ = [
    "PHOTO_LINK_END", "SCORE_DECIMALS", "csv_row_statement", "csv_text", "geojson_text", "photo_link",
]

SCORE_DECIMALS = 4


PHOTO_LINK_END = "/image/annotated"


def photo_link(service: Service, report_id: int) -> str:
    """The link other systems use for a report's photo (with boxes): under the public URL when set.

    An integrator fetches it with its key, as a header or as ``?api_key=``.
    """
    return service.settings.link(f"/v1/reports/{report_id}{PHOTO_LINK_END}")


def csv_text(service: Service, flt: IncidentFilter, fmt: CsvFormat, progress: Progress | None = None) -> Iterator[str]:
    """The matching incidents as CSV (:data:`serving.exports.CSV_COLUMNS`), most recently seen first, in blocks;
    ``progress`` gets each block's number of incidents.

    One query writes each row's text but the addresses (:func:`csv_row_statement`): Python joins a block's
    lines as they come. With an address index, each block's addresses are found in one lookup and written
    between the two parts of each row the query wrote.
    """
    geocoder = service.geocoder
    statement = csv_row_statement(flt, fmt, service.settings.link("/v1/reports/"), addresses=geocoder is not None)
    sep = fmt.separator

    def blocks() -> Iterator[str]:
        yield csv_header(fmt)
        with service.sessions() as session:
            if session.get_bind().dialect.name == "postgresql":
                # Its plan costs enough for PostgreSQL to compile the query's expressions to machine code
                # first (JIT), which takes longer than a département's export itself: not for this one.
                session.execute(text("SET LOCAL jit = off"))
            connection = session.connection().execution_options(yield_per=CSV_BLOCK_ROWS)  # plain rows, no ORM
            for rows in connection.execute(statement).partitions():
                if geocoder is None:
                    yield "".join([row[0] for row in rows])
                else:
                    found = geocoder.addresses([row[2] for row in rows], [row[3] for row in rows])
                    yield "".join([
                        f"{row[0]}{sep}{sep.join([csv_quoted(c, sep) for c in _address_cells(address)])}{sep}{row[1]}"
                        for row, address in zip(rows, found, strict=True)
                    ])
                if progress is not None:
                    progress(len(rows))

    return blocks()


_ADDRESS = CSV_COLUMNS.index("street")
_ADDRESS_CELLS = 4
_NO_ADDRESS = (None,) * _ADDRESS_CELLS


def _address_cells(address: Address | None) -> tuple[str | None, ...]:
    if address is None:
        return _NO_ADDRESS
    return address.street, address.house_number, address.postcode, address.city


def csv_row_statement(flt: IncidentFilter, fmt: CsvFormat, photos_at: str, *, addresses: bool = False) -> Select[Any]:
    """The CSV's query: one row per matching incident (``flt``), most recently seen first, its text written by
    the database (:func:`serving.sql_text.csv_row`), its cells in :data:`~serving.exports.CSV_COLUMNS` order, the
    decimal mark of the coordinates and the score ``fmt``'s, the photo links starting with ``photos_at``
    (``settings.link("/v1/reports/")``, before the report id).

    Without ``addresses``: one column, each row's whole line (its address cells empty, its CRLF end
    included). With ``addresses``: the row's text before its address cells and after them (with the line
    end), then ``lat`` and ``lon`` as numbers, for the address lookup.
    """
    matching = _matching(flt, photos_at)
    cells = _csv_cells(matching, fmt, links_plain=csv_quoted(photos_at, fmt.separator) == photos_at)
    sep, end = fmt.separator, literal(CSV_LINE_END)
    if addresses:
        before, after = csv_row(cells[:_ADDRESS], sep), csv_row(cells[_ADDRESS + _ADDRESS_CELLS :], sep) + end
        columns: list[Any] = [before, after, matching.c.lat, matching.c.lon]
    else:
        columns = [csv_row(cells, sep) + end]
    return select(*columns).order_by(matching.c.last_seen.desc(), matching.c.id.desc())


def _matching(flt: IncidentFilter, photos_at: str) -> CTE:
    """The matching incidents' values for the CSV, each read or written once: the stored ones, and the texts
    that may need quoting (the photo link, the note, the size, the crew), which :func:`_csv_cells` then
    checks and quotes without writing them again.

    When it last entered each status is on the incident's row (:data:`serving.models.STATUS_TIMES`); its
    latest photo still kept and its latest note are read by correlated subqueries from indexes (``reports
    (incident_id, photo_deleted_at, id)`` and ``ix_reports_noted``). Materialised, so that both databases
    run each subquery once per incident, not once for each time the cells' text refers to it.
    """
    photo = (select(func.max(Report.id))
             .where(Report.incident_id == Incident.id, Report.photo_deleted_at.is_(None)).scalar_subquery())
    note = (select(Report.note).where(Report.incident_id == Incident.id, *NOTED)
            .order_by(Report.id.desc()).limit(1).scalar_subquery())
    size, estimate = func.nullif(Incident.size, ""), func.nullif(Incident.size_estimate, "")
    columns = (
        Incident.id, Incident.label, Incident.status, Incident.lat, Incident.lon, Incident.first_seen,
        Incident.last_seen, *(getattr(Incident, STATUS_TIMES[status.value]) for status in Status),
        Incident.merged_into_id, Incident.report_count, Incident.recurrence_count, Incident.recurrence_of_id,
        Incident.max_score,
        (literal(photos_at) + cast(photo, String) + literal(PHOTO_LINK_END)).label("photo_url"),
        formula_safe(note).label("note"),
        func.coalesce(size, estimate).label("size"),
        case((size.is_not(None), "manager"), (estimate.is_not(None), "estimate")).label("size_source"),
        Incident.scheduled_for,
        formula_safe(Incident.crew).label("crew"),
    )
    return select(*columns).where(*flt.conditions()).cte("matching").prefix_with("MATERIALIZED")


def _csv_cells(matching: CTE, fmt: CsvFormat, *, links_plain: bool) -> list[CsvCell]:
    """The CSV's cells from :func:`_matching`, each with whether it may need quoting (a
    :data:`~serving.sql_text.CsvCell`): not the sizes (S, M or L), nor the photo links when
    ``links_plain`` (their start, the service's address, holds nothing to quote; the rest is digits)."""
    m = matching.c
    comma = fmt.decimal_comma
    decimal_quoted = comma and fmt.separator == ","  # 49,1193 between commas
    return [
        (m.id, False),
        (m.label, True),
        (m.status, False),
        (decimal_text(m.lat, COORDINATE_DECIMALS, comma=comma), decimal_quoted),
        (decimal_text(m.lon, COORDINATE_DECIMALS, comma=comma), decimal_quoted),
        *((null().label(name), False) for name in ("street", "house_number", "postcode", "city")),
        (iso_text(m.first_seen), False),
        (iso_text(m.last_seen), False),
        *((iso_text(m[STATUS_TIMES[status.value]]), False) for status in Status),
        (m.merged_into_id, False),
        (m.report_count, False),
        (m.recurrence_count, False),
        (m.recurrence_of_id, False),
        (decimal_text(m.max_score, SCORE_DECIMALS, comma=comma), decimal_quoted),
        (m.photo_url, not links_plain),
        (m.note, True),
        (m.size, False),
        (m.size_source, False),
        (iso_text(m.scheduled_for), False),
        (m.crew, True),
    ]


def geojson_text(service: Service, flt: IncidentFilter, progress: Progress | None = None) -> Iterator[str]:
    """The matching incidents as one GeoJSON FeatureCollection, in blocks; ``progress`` as for :func:`csv_text`."""
    yield '{"type":"FeatureCollection","features":['
    first = True
    with service.sessions() as session:
        for batch in batches(iter_incidents(session, flt)):
            features = [
                incident_feature(incident, address).model_dump_json()
                for incident, address in zip(batch, incident_addresses(service.geocoder, batch), strict=True)
            ]
            yield ("" if first else ",") + ",".join(features)
            first = False
            if progress is not None:
                progress(len(batch))
    yield "]}"



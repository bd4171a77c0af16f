"""Exports of many incidents: the CSV and GeoJSON texts, read and sent in blocks.

:func:`csv_text` and :func:`geojson_text` read the matching incidents a block at a time (the facts
of a block's incidents in one query each: their status times, latest photo, latest note, addresses)
and yield one piece of text per block. ``GET /v1/exports/incidents.csv`` streams them as they come;
a national export, which takes minutes, runs as a job (:mod:`serving.export_jobs`) that writes them
to a file.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, String, case, cast, func, literal, null, select, text

from serving.export_jobs import Progress
from serving.exports import (
    COORDINATE_DECIMALS,
    CSV_BLOCK_ROWS,
    CSV_COLUMNS,
    CsvFormat,
    csv_blocks,
    incident_addresses,
    incident_feature,
)
from serving.incidents import Status
from serving.models import NOTED, STATUS_TIMES, Incident, Report
from serving.queries import IncidentFilter, batches, iter_incidents
from serving.sql_text import decimal_text, formula_safe, iso_text

if TYPE_CHECKING:
    from serving.addresses import Address
    from serving.service import Service

__all__ = ["PHOTO_LINK_END", "SCORE_DECIMALS", "csv_statement", "csv_text", "geojson_text", "photo_link"]

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

    One query writes every cell but the addresses (:func:`csv_statement`); each block of its rows goes to
    :mod:`csv` as it comes. With an address index, each block's addresses are found in one lookup.
    """
    geocoder = service.geocoder
    statement = csv_statement(flt, fmt, service.settings.link("/v1/reports/"), positions=geocoder is not None)

    def blocks() -> Iterator[Sequence[Sequence[object]]]:
        with service.sessions() as session:
            if session.get_bind().dialect.name == "postgresql":
                # Its plan costs enough for PostgreSQL to compile the query's expressions to machine code
                # first (JIT), which takes longer than a département's export itself: not for this one.
                session.execute(text("SET LOCAL jit = off"))
            connection = session.connection().execution_options(yield_per=CSV_BLOCK_ROWS)  # plain rows, no ORM
            for rows in connection.execute(statement).partitions():
                if geocoder is None:
                    yield rows
                else:
                    found = geocoder.addresses([row[-2] for row in rows], [row[-1] for row in rows])
                    yield [(*row[:_ADDRESS], *_address_cells(address), *row[_ADDRESS + 4 : -2])
                           for row, address in zip(rows, found, strict=True)]
                if progress is not None:
                    progress(len(rows))

    return csv_blocks(blocks(), fmt=fmt)


_ADDRESS = CSV_COLUMNS.index("street")
_NO_ADDRESS = (None, None, None, None)


def _address_cells(address: Address | None) -> tuple[str | None, ...]:
    if address is None:
        return _NO_ADDRESS
    return address.street, address.house_number, address.postcode, address.city


def csv_statement(flt: IncidentFilter, fmt: CsvFormat, photos_at: str, *, positions: bool = False) -> Select[Any]:
    """The CSV's query: one row per matching incident, its cells in :data:`~serving.exports.CSV_COLUMNS` order
    written by the database (:mod:`serving.sql_text`), the address cells NULL.

    When it last entered each status is on the incident's row (:data:`serving.models.STATUS_TIMES`); its
    latest photo still kept and its latest note are read by correlated subqueries from indexes (``reports
    (incident_id, photo_deleted_at, id)`` and ``ix_reports_noted``).

    Args:
        flt: which incidents.
        fmt: the decimal mark of the coordinates and the score.
        photos_at: the photo links' start, before the report id (``settings.link("/v1/reports/")``).
        positions: add ``lat`` and ``lon`` as numbers at the end (for the address lookup).
    """
    comma = fmt.decimal_comma

    photo = (select(func.max(Report.id))
             .where(Report.incident_id == Incident.id, Report.photo_deleted_at.is_(None)).scalar_subquery())
    note = (select(Report.note).where(Report.incident_id == Incident.id, *NOTED)
            .order_by(Report.id.desc()).limit(1).scalar_subquery())
    size, estimate = func.nullif(Incident.size, ""), func.nullif(Incident.size_estimate, "")
    cells: list[Any] = [
        Incident.id,
        Incident.label,
        Incident.status,
        decimal_text(Incident.lat, COORDINATE_DECIMALS, comma=comma),
        decimal_text(Incident.lon, COORDINATE_DECIMALS, comma=comma),
        *(null().label(name) for name in ("street", "house_number", "postcode", "city")),
        iso_text(Incident.first_seen),
        iso_text(Incident.last_seen),
        *(iso_text(getattr(Incident, STATUS_TIMES[status.value])) for status in Status),
        Incident.merged_into_id,
        Incident.report_count,
        Incident.recurrence_count,
        Incident.recurrence_of_id,
        decimal_text(Incident.max_score, SCORE_DECIMALS, comma=comma),
        literal(photos_at) + cast(photo, String) + literal(PHOTO_LINK_END),
        formula_safe(note),
        func.coalesce(size, estimate),
        case((size.is_not(None), "manager"), (estimate.is_not(None), "estimate")),
        iso_text(Incident.scheduled_for),
        formula_safe(Incident.crew),
    ]
    if positions:
        cells += [Incident.lat, Incident.lon]
    return select(*cells).where(*flt.conditions()).order_by(Incident.last_seen.desc(), Incident.id.desc())


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



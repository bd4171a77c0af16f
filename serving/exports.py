"""Incidents in the shapes other systems read: GeoJSON, CSV, Open311 GeoReport v2.

GeoJSON follows RFC 7946: a Point's coordinates are ``[lon, lat]`` in WGS 84, rounded to 7 decimals
(about 1 cm). CSV columns are :data:`CSV_COLUMNS`: one row per incident, one timestamp column per
status (when the incident last entered it). Open311 GeoReport v2 (https://wiki.open311.org/GeoReport_v2/)
is served read-only, JSON only: one service per deposit class; requests are incidents; ``open`` while
new, confirmed or scheduled.

CSV comes in two flavours (:class:`CsvFormat`): the default for scripts (comma, decimal point, no BOM)
and :data:`FRENCH_EXCEL` (semicolon, decimal comma, a UTF-8 byte order mark so that Excel reads the
accents right); both end lines with CRLF (RFC 4180, and what Excel writes). A text cell a person typed
(the report's note) that starts like a formula (``=``, ``+``, ``-``, ``@``) is prefixed with ``'``, so
that a spreadsheet shows it instead of running it.

Each shape carries the incident's nearest address (:func:`incident_addresses`) when the service has an
address index (:mod:`serving.addresses`): GeoJSON's ``address`` property, the CSV's street,
house_number, postcode and city, Open311's ``address`` (the label) and ``zipcode``. Without an index,
or with no address within the maximum distance, they are null or empty. The address is found when
the incident is shown, not stored: importing a newer BAN file updates every incident.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row

from serving.incidents import OPEN_STATUSES, Status
from serving.models import Incident
from serving.schemas import AddressOut, IncidentFeature, IncidentProperties, PointGeometry
from vipare.taxonomy import CLASSES

if TYPE_CHECKING:  # loaded only when an index is configured (serving.service)
    from serving.addresses import Address, ReverseGeocoder

__all__ = [
    "CSV_BLOCK_ROWS",
    "CSV_LINE_END",
    "CSV_COLUMNS",
    "FRENCH_EXCEL",
    "OPEN311_SERVICES",
    "SCRIPT_CSV",
    "CsvFormat",
    "csv_blocks",
    "csv_header",
    "csv_lines",
    "incident_addresses",
    "incident_feature",
    "open311_request",
    "open311_status",
]

COORDINATE_DECIMALS = 7

CSV_COLUMNS: tuple[str, ...] = (
    "id",
    "class",
    "status",
    "lat",
    "lon",
    "street",
    "house_number",
    "postcode",
    "city",
    "first_seen",
    "last_seen",
    "new_at",
    "confirmed_at",
    "scheduled_at",
    "cleaned_at",
    "rejected_at",
    "duplicate_at",
    "merged_into",
    "report_count",
    "recurrence_count",
    "recurrence_of",
    "best_score",
    "photo_url",
    "note",
    "size",
    "size_source",
    "scheduled_for",
    "crew",
)

OPEN311_SERVICES: tuple[dict[str, Any], ...] = tuple(
    {
        "service_code": c.name,
        "service_name": c.name.replace("_", " ").capitalize(),
        "description": c.description,
        "metadata": False,
        "type": "realtime",
        "keywords": "illegal dumping, waste, cleansing",
        "group": "street cleansing",
    }
    for c in CLASSES
    if c.deposit
)
"""One Open311 service per deposit class of the taxonomy."""


@dataclass(frozen=True)
class CsvFormat:
    """How a CSV file is written: the default suits scripts, :data:`FRENCH_EXCEL` a French Excel."""

    separator: str = ","
    """Between cells: ``,`` or ``;``."""
    decimal_comma: bool = False
    """Numbers with a decimal comma (``49,1193``) instead of a point."""
    bom: bool = False
    """Start with a UTF-8 byte order mark (Excel then reads UTF-8, accents included)."""

    def number(self, value: float, decimals: int) -> str:
        """``value`` with ``decimals`` decimals, in this format's decimal mark."""
        text = f"{value:.{decimals}f}"
        return text.replace(".", ",") if self.decimal_comma else text


SCRIPT_CSV = CsvFormat()
"""The default: commas, decimal points, no BOM."""
FRENCH_EXCEL = CsvFormat(separator=";", decimal_comma=True, bom=True)
"""What a French Excel opens with a double click: semicolons, decimal commas, UTF-8 with a BOM."""

def _iso(value: datetime | None) -> str:
    """ISO 8601 in UTC with a ``Z`` (as :class:`serving.sql_text.iso_text` writes it in SQL); a naive value is UTC."""
    if value is None:
        return ""
    return value.isoformat() + "Z" if value.tzinfo is None else value.isoformat().replace("+00:00", "Z")


def incident_addresses(
    geocoder: ReverseGeocoder | None, incidents: Sequence[Incident | Row[Any]]
) -> list[Address | None]:
    """The nearest address of each incident, in one vectorised lookup; all None without a geocoder."""
    if geocoder is None or not incidents:
        return [None] * len(incidents)
    return geocoder.addresses([i.lat for i in incidents], [i.lon for i in incidents])


def _address_out(address: Address | None) -> AddressOut | None:
    if address is None:
        return None
    return AddressOut(
        label=address.label, house_number=address.house_number, street=address.street, postcode=address.postcode,
        city=address.city, distance_m=round(address.distance_m, 1),
    )


def incident_feature(
    incident: Incident, address: Address | None = None, latest_report: int | None = None
) -> IncidentFeature:
    """An incident as a GeoJSON Feature (``[lon, lat]``), with its nearest address and the thumbnail of its
    latest photo still kept, when given."""
    return IncidentFeature(
        id=incident.id,
        geometry=PointGeometry(
            coordinates=(round(incident.lon, COORDINATE_DECIMALS), round(incident.lat, COORDINATE_DECIMALS))
        ),
        properties=IncidentProperties(
            id=incident.id,
            status=Status(incident.status),
            label=incident.label,
            family=incident.family,
            first_seen=incident.first_seen,
            last_seen=incident.last_seen,
            report_count=incident.report_count,
            recurrence_count=incident.recurrence_count,
            recurrence_of=incident.recurrence_of_id,
            merged_into=incident.merged_into_id,
            max_score=round(incident.max_score, 4),
            updated_at=incident.updated_at,
            to_review=incident.to_review,
            scheduled_for=incident.scheduled_for,
            crew=incident.crew,
            thumbnail=None if latest_report is None else f"/v1/reports/{latest_report}/thumbnail",
            size=incident.size or incident.size_estimate,
            size_source="manager" if incident.size else "estimate" if incident.size_estimate else None,
            address=_address_out(address),
        ),
    )


CSV_LINE_END = "\r\n"
"""How every CSV line of vipare ends (RFC 4180)."""
CSV_BLOCK_ROWS = 1000
"""Rows per piece of text :func:`csv_lines` yields: a streamed response's pieces each cost a hop between
threads, so a national export goes in blocks, not a row at a time."""


def csv_lines(
    rows: Iterable[Sequence[object]], *, fmt: CsvFormat = SCRIPT_CSV, header: Sequence[str] = CSV_COLUMNS
) -> Iterator[str]:
    """The header, then the rows, as CSV text in ``fmt`` (CRLF line ends; the BOM first when asked),
    in pieces of :data:`CSV_BLOCK_ROWS` lines; a None cell is written empty."""
    rows = iter(rows)
    return csv_blocks(iter(lambda: list(islice(rows, CSV_BLOCK_ROWS)), []), fmt=fmt, header=header)


def csv_header(fmt: CsvFormat = SCRIPT_CSV, header: Sequence[str] = CSV_COLUMNS) -> str:
    """A CSV file's start: the BOM when ``fmt`` asks for it, then the header line."""
    buffer = io.StringIO()
    buffer.write("\ufeff" if fmt.bom else "")
    csv.writer(buffer, delimiter=fmt.separator, lineterminator=CSV_LINE_END).writerow(header)
    return buffer.getvalue()


def csv_blocks(
    blocks: Iterable[Iterable[Sequence[object]]], *, fmt: CsvFormat = SCRIPT_CSV, header: Sequence[str] = CSV_COLUMNS
) -> Iterator[str]:
    """As :func:`csv_lines`, one piece of text per block of rows (the header goes with the first)."""
    buffer = io.StringIO()
    buffer.write(csv_header(fmt, header))
    writer = csv.writer(buffer, delimiter=fmt.separator, lineterminator=CSV_LINE_END)
    for block in blocks:
        writer.writerows(block)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():  # no rows at all: the header alone
        yield buffer.getvalue()


def open311_status(status: str) -> str:
    """Open311's two statuses: ``open`` or ``closed``."""
    return "open" if Status(status) in OPEN_STATUSES else "closed"


def open311_request(
    incident: Incident, *, status_notes: str | None, media_url: str | None, address: Address | None = None
) -> dict[str, Any]:
    """An incident as an Open311 GeoReport v2 service request; ``address`` fills its address and zipcode."""
    notes = status_notes
    if incident.status == Status.DUPLICATE.value and incident.merged_into_id is not None:
        notes = f"duplicate of {incident.merged_into_id}" + (f": {status_notes}" if status_notes else "")
    return {
        "service_request_id": str(incident.id),
        "status": open311_status(incident.status),
        "status_notes": notes,
        "service_name": incident.label.replace("_", " ").capitalize(),
        "service_code": incident.label,
        "description": f"{incident.label.replace('_', ' ')} ({incident.status}), "
        f"reported by {incident.report_count} photo(s)",
        "agency_responsible": None,
        "service_notice": None,
        "requested_datetime": _iso(incident.first_seen),
        "updated_datetime": _iso(incident.updated_at),
        "expected_datetime": _iso(incident.scheduled_for) if incident.scheduled_for is not None else None,
        "address": None if address is None else address.label,
        "address_id": None,
        "zipcode": None if address is None else address.postcode,
        "lat": round(incident.lat, COORDINATE_DECIMALS),
        "long": round(incident.lon, COORDINATE_DECIMALS),
        "media_url": media_url,
    }

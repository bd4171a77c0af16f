"""Incidents in the shapes other systems read: GeoJSON, CSV, Open311 GeoReport v2.

GeoJSON follows RFC 7946: a Point's coordinates are ``[lon, lat]`` in WGS 84, rounded to 7 decimals
(about 1 cm). CSV columns are :data:`CSV_COLUMNS`: one row per incident, one timestamp column per
status (when the incident last entered it). Open311 GeoReport v2 (https://wiki.open311.org/GeoReport_v2/)
is served read-only, JSON only: one service per deposit class; requests are incidents; ``open`` while
new, confirmed or scheduled.

Each shape carries the incident's nearest address (:func:`incident_addresses`) when the service has an
address index (:mod:`serving.addresses`): GeoJSON's ``address`` property, the CSV's street,
house_number, postcode and city, Open311's ``address`` (the label) and ``zipcode``. Without an index,
or with no address within the maximum distance, they are null or empty. The address is found when
the incident is shown, not stored: importing a newer BAN file updates every incident.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from serving.incidents import OPEN_STATUSES, Status
from serving.models import Incident
from serving.schemas import AddressOut, IncidentFeature, IncidentProperties, PointGeometry
from vipare.taxonomy import CLASSES

if TYPE_CHECKING:  # loaded only when an index is configured (serving.service)
    from serving.addresses import Address, ReverseGeocoder

__all__ = [
    "CSV_COLUMNS",
    "OPEN311_SERVICES",
    "csv_lines",
    "csv_row",
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


def _iso(value: datetime | None) -> str:
    return value.isoformat().replace("+00:00", "Z") if value is not None else ""


def incident_addresses(geocoder: ReverseGeocoder | None, incidents: Sequence[Incident]) -> list[Address | None]:
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


def incident_feature(incident: Incident, address: Address | None = None) -> IncidentFeature:
    """An incident as a GeoJSON Feature (``[lon, lat]``), with its nearest address when given."""
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
            size=incident.size or incident.size_estimate,
            size_source="manager" if incident.size else "estimate" if incident.size_estimate else None,
            address=_address_out(address),
        ),
    )


def csv_row(incident: Incident, times: Mapping[str, datetime], address: Address | None = None) -> list[str]:
    """One CSV row in :data:`CSV_COLUMNS` order; ``times`` maps a status to when the incident last entered it.

    The address columns are empty without ``address``.
    """
    return [
        str(incident.id),
        incident.label,
        incident.status,
        f"{incident.lat:.{COORDINATE_DECIMALS}f}",
        f"{incident.lon:.{COORDINATE_DECIMALS}f}",
        *(("", "", "", "") if address is None else
          (address.street, address.house_number or "", address.postcode, address.city)),
        _iso(incident.first_seen),
        _iso(incident.last_seen),
        *(_iso(times.get(status.value)) for status in Status),
        str(incident.merged_into_id or ""),
        str(incident.report_count),
        str(incident.recurrence_count),
        str(incident.recurrence_of_id or ""),
    ]


def csv_lines(rows: Iterable[list[str]]) -> Iterator[str]:
    """The header, then each row, as CSV text lines (RFC 4180, CRLF line ends)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for row in _with_header(rows):
        writer.writerow(row)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()


def _with_header(rows: Iterable[list[str]]) -> Iterator[list[str]]:
    yield list(CSV_COLUMNS)
    yield from rows


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

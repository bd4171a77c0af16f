"""Exports of many incidents: the CSV and GeoJSON texts, read and sent in blocks.

:func:`csv_text` and :func:`geojson_text` read the matching incidents a block at a time (the facts
of a block's incidents in one query each: their status times, latest photo, latest note, addresses)
and yield one piece of text per block. ``GET /v1/exports/incidents.csv`` streams them as they come;
a national export, which takes minutes, runs as a job (:mod:`serving.export_jobs`) that writes them
to a file.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from serving.export_jobs import Progress
from serving.exports import CsvFormat, csv_lines, csv_row, incident_addresses, incident_feature
from serving.queries import (
    IncidentFilter,
    batches,
    iter_incident_rows,
    iter_incidents,
    latest_notes,
    latest_reports,
    state_times,
)

if TYPE_CHECKING:
    from serving.service import Service

__all__ = ["csv_text", "geojson_text", "photo_link"]


def photo_link(service: Service, report_id: int) -> str:
    """The link other systems use for a report's photo (with boxes): under the public URL when set.

    An integrator fetches it with its key, as a header or as ``?api_key=``.
    """
    return service.settings.link(f"/v1/reports/{report_id}/image/annotated")


def csv_text(service: Service, flt: IncidentFilter, fmt: CsvFormat, progress: Progress | None = None) -> Iterator[str]:
    """The matching incidents as CSV (:data:`serving.exports.CSV_COLUMNS`), in blocks; ``progress`` gets each
    block's number of incidents."""

    def rows() -> Iterator[list[str]]:
        with service.sessions() as session:
            for batch in iter_incident_rows(session, flt):
                ids = [i.id for i in batch]
                times, photos = state_times(session, ids), latest_reports(session, ids)
                notes = latest_notes(session, ids)
                addresses = incident_addresses(service.geocoder, batch)
                for incident, address in zip(batch, addresses, strict=True):
                    photo = photos.get(incident.id)
                    yield csv_row(
                        incident, times[incident.id], address, fmt=fmt, note=notes.get(incident.id),
                        photo_url=photo_link(service, photo) if photo is not None else None,
                    )
                if progress is not None:
                    progress(len(batch))

    return csv_lines(rows(), fmt=fmt)


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



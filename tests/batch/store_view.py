"""What a batch left in a store, as plain values that two stores can be compared by."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from serving.config import ServiceSettings
from serving.db import engine_from_settings, session_factory
from serving.models import Incident, Report
from serving.photos.store import PhotoStore

__all__ = ["report_rows", "store_view"]


def report_rows(data_dir: Path) -> list[tuple[str, str]]:
    """``(client_ref, sha256)`` of every report, in insertion order."""
    engine = engine_from_settings(ServiceSettings(data_dir=data_dir))
    try:
        with session_factory(engine)() as session:
            return [(r.client_ref, r.sha256) for r in session.scalars(select(Report).order_by(Report.id))]
    finally:
        engine.dispose()


def store_view(data_dir: Path, *, digits: int = 9) -> dict[str, Any]:
    """Reports by (camera, sha256) and incidents by their reports, without ids or wall-clock times.

    Returns:
        ``{"reports": {(client_ref, sha256): (...)}, "incidents": {frozenset of report keys: (...)},
        "photos": set of stored sha256, "photo_files": count}``.
    """
    engine = engine_from_settings(ServiceSettings(data_dir=data_dir))
    try:
        with session_factory(engine)() as session:
            reports = list(session.scalars(select(Report)))
            keys = {r.id: (r.client_ref, r.sha256) for r in reports}
            view_reports = {
                keys[r.id]: (
                    r.camera_id, r.dumping, round(r.score, 6), r.label, round(r.lat, digits), round(r.lon, digits),
                    r.location_source, r.observed_at, r.captured_at, r.incident_action,
                    tuple((d["label"], round(d["score"], 5), tuple(round(v, 2) for v in d["box"]))
                          for d in r.detections),
                )
                for r in reports
            }
            members: dict[int, set[tuple[str, str]]] = {}
            for r in reports:
                if r.incident_id is not None:
                    members.setdefault(r.incident_id, set()).add(keys[r.id])
            view_incidents = {
                frozenset(members.get(i.id, set())): (
                    i.family, i.label, i.status, round(i.lat, digits), round(i.lon, digits), i.first_seen,
                    i.last_seen, i.report_count, round(i.max_score, 6), i.recurrence_count,
                )
                for i in session.scalars(select(Incident))
            }
        photos = PhotoStore(ServiceSettings(data_dir=data_dir).photo_dir)
        files = list(photos.files())
        return {
            "reports": view_reports,
            "incidents": view_incidents,
            "photos": {p.name.split(".", 1)[0] for p in files},
            "photo_files": len(files),
        }
    finally:
        engine.dispose()

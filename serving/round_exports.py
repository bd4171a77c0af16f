"""A planned round in the files a phone's navigation app opens: GPX 1.1 and GeoJSON.

GPX (https://www.topografix.com/GPX/1/1/) is written with gpxpy: one route (``<rte>``) whose points
(``<rtept>``) are the depot, the stops in visiting order and, for a closed round, the depot again;
and one waypoint (``<wpt>``) per stop, so apps that show waypoints but not routes still mark every
stop. A point's name is the stop's label (its id when no label is given), its description its place
in the round ("Stop 3 of 12").

GeoJSON follows RFC 7946: ``[lon, lat]`` in WGS 84, rounded to :data:`COORDINATE_DECIMALS` (about
1 cm). The FeatureCollection holds the path as a LineString (when the round has a stop), then the
depot (``order`` 0) and each stop (``order`` 1, 2, ...) as Points.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gpxpy.gpx

from serving.rounds import RoundPlan, StopId

__all__ = ["COORDINATE_DECIMALS", "DEPOT_NAME", "round_geojson", "round_gpx"]

COORDINATE_DECIMALS = 7
"""Decimals kept of a longitude or latitude in degrees (1e-7 degrees is about 1 cm)."""

DEPOT_NAME = "Depot"
"""The depot's name in the files, unless the caller gives another."""


def round_gpx(
    plan: RoundPlan,
    labels: Mapping[StopId, str] | None = None,
    *,
    name: str = "Round",
    depot_name: str = DEPOT_NAME,
) -> str:
    """The round as a GPX 1.1 document.

    Args:
        plan: the planned round.
        labels: a name per stop id, e.g. ``"#1234 mattress"``; stops missing from it are named by id.
        name: the route's name, e.g. ``"Crew 3, 2026-03-02"``.
        depot_name: the depot's name.

    Returns:
        The GPX XML text.
    """
    gpx = gpxpy.gpx.GPX()
    gpx.creator = "vipare"
    gpx.name = name
    route = gpxpy.gpx.GPXRoute(name=name)
    count = len(plan.stops)
    route.points.append(_route_point(plan.depot, depot_name, "Start"))
    for number, stop in enumerate(plan.stops, start=1):
        label = _label(stop.id, labels)
        description = f"Stop {number} of {count}"
        route.points.append(_route_point((stop.lon, stop.lat), label, description))
        lon, lat = _rounded((stop.lon, stop.lat))
        gpx.waypoints.append(gpxpy.gpx.GPXWaypoint(latitude=lat, longitude=lon, name=label, description=description))
    if plan.closed and plan.stops:
        route.points.append(_route_point(plan.depot, depot_name, "End"))
    gpx.routes.append(route)
    xml: str = gpx.to_xml(version="1.1")
    return xml


def round_geojson(
    plan: RoundPlan,
    labels: Mapping[StopId, str] | None = None,
    *,
    depot_name: str = DEPOT_NAME,
) -> dict[str, Any]:
    """The round as a GeoJSON FeatureCollection (RFC 7946, ``[lon, lat]``).

    Args:
        plan: the planned round.
        labels: a name per stop id; stops missing from it are named by id.
        depot_name: the depot's name.

    Returns:
        A dict ready for ``json.dumps``: a LineString feature (``kind`` "path", with ``length_m`` in
        metres and ``closed``) when the round has a stop, then Point features: the depot (``kind``
        "depot", ``order`` 0) and the stops (``kind`` "stop", ``order`` from 1, ``id``, ``name``,
        ``leg_m``: metres from the place before).
    """
    features: list[dict[str, Any]] = []
    if plan.stops:
        features.append(
            _feature(
                {"type": "LineString", "coordinates": [list(_rounded(place)) for place in plan.path()]},
                {"kind": "path", "closed": plan.closed, "length_m": round(plan.length_m, 1), "stops": len(plan.stops)},
            )
        )
    features.append(_point(plan.depot, {"kind": "depot", "order": 0, "name": depot_name}))
    for number, (stop, leg_m) in enumerate(zip(plan.stops, plan.legs_m, strict=False), start=1):
        properties = {"kind": "stop", "order": number, "id": stop.id, "name": _label(stop.id, labels),
                      "leg_m": round(leg_m, 1)}
        features.append(_point((stop.lon, stop.lat), properties))
    return {"type": "FeatureCollection", "features": features}


def _label(stop_id: StopId, labels: Mapping[StopId, str] | None) -> str:
    """The stop's label, or its id as text."""
    return labels.get(stop_id, str(stop_id)) if labels is not None else str(stop_id)


def _rounded(place: tuple[float, float]) -> tuple[float, float]:
    """``(lon, lat)`` rounded to :data:`COORDINATE_DECIMALS`."""
    return round(place[0], COORDINATE_DECIMALS), round(place[1], COORDINATE_DECIMALS)


def _route_point(place: tuple[float, float], name: str, description: str) -> gpxpy.gpx.GPXRoutePoint:
    """A GPX route point at ``(lon, lat)``."""
    lon, lat = _rounded(place)
    return gpxpy.gpx.GPXRoutePoint(latitude=lat, longitude=lon, name=name, description=description)


def _feature(geometry: dict[str, Any], properties: dict[str, Any]) -> dict[str, Any]:
    """A GeoJSON Feature."""
    return {"type": "Feature", "geometry": geometry, "properties": properties}


def _point(place: tuple[float, float], properties: dict[str, Any]) -> dict[str, Any]:
    """A GeoJSON Point feature at ``(lon, lat)``."""
    return _feature({"type": "Point", "coordinates": list(_rounded(place))}, properties)

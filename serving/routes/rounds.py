"""``/v1/rounds``: a crew's day, its scheduled incidents in a visiting order from the depot.

The incidents are those scheduled (the "scheduled" transition's ``scheduled_for`` and ``crew``) on
that day in the city's time zone (``VIPARE_TIMEZONE``), for that crew. :func:`serving.rounds.plan_round`
orders them; the answer is JSON (for the printable page), GPX 1.1 or GeoJSON (for a phone's
navigation app).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from serving.auth import Permission, Principal
from serving.errors import ErrorBody, ServiceError
from serving.exports import incident_addresses
from serving.incidents import Status
from serving.models import Incident
from serving.round_exports import round_geojson, round_gpx
from serving.rounds import Stop, StopId, plan_round
from serving.routes.deps import ServiceDep, SessionDep, require

__all__ = ["RoundOut", "router"]

router = APIRouter(tags=["rounds"])


class NoDepotError(ServiceError):
    """A round needs a depot: none set (VIPARE_DEPOT_LAT/LON) and none given."""

    status_code, code = 422, "no_depot"


class RoundStop(BaseModel):
    """One stop of a round, in visiting order."""

    order: int = Field(description="1 for the first stop after the depot.")
    incident: int
    lat: float
    lon: float
    label: str = Field(description="A name for navigation apps: '#id class, address'.")
    class_name: str = Field(description="The incident's class (dumped_waste, overflowing_bin).")
    size: str | None = Field(description="S, M or L: a manager's, else the estimate from the photos.")
    address: str | None
    scheduled_for: datetime | None
    leg_m: float = Field(description="Great-circle metres from the previous place (the depot for the first stop).")


class RoundOut(BaseModel):
    """A crew's round for one day."""

    day: date
    crew: str | None
    depot: tuple[float, float] = Field(description="[lon, lat] of the depot.")
    stops: list[RoundStop]
    back_m: float = Field(description="The last leg, from the last stop back to the depot, great-circle metres.")
    length_m: float = Field(description="The whole round, back to the depot, great-circle metres.")


@router.get(
    "/v1/rounds",
    response_model=RoundOut,
    responses={422: {"model": ErrorBody, "description": "No depot set and none given, or an invalid parameter."}},
    summary="A crew's round for one day",
)
def get_round(
    session: SessionDep,
    service: ServiceDep,
    _principal: Annotated[Principal, Depends(require(Permission.INCIDENT_READ))],
    day: Annotated[date, Query(description="The day, YYYY-MM-DD, in the city's time zone.")],
    crew: Annotated[str | None, Query(max_length=100, description="The crew; none: every crew.")] = None,
    depot_lat: Annotated[float | None, Query(ge=-90, le=90)] = None,
    depot_lon: Annotated[float | None, Query(ge=-180, le=180)] = None,
    format: Annotated[Literal["json", "gpx", "geojson"], Query(description="json, gpx or geojson.")] = "json",  # noqa: A002
) -> Any:
    """The incidents scheduled on ``day`` for ``crew``, in the order that makes the round shortest from the
    depot and back (as the crow flies), with each leg's length. GPX and GeoJSON open in navigation apps.
    """
    lat = depot_lat if depot_lat is not None else service.settings.depot_lat
    lon = depot_lon if depot_lon is not None else service.settings.depot_lon
    if lat is None or lon is None:
        raise NoDepotError("A round starts at the depot: give depot_lat and depot_lon, or set VIPARE_DEPOT_LAT and "
                           "VIPARE_DEPOT_LON.")
    zone = ZoneInfo(service.settings.timezone)
    start = datetime.combine(day, time(0), zone)
    end = datetime.combine(day + timedelta(days=1), time(0), zone)
    query = select(Incident).where(
        Incident.status == Status.SCHEDULED.value, Incident.scheduled_for >= start, Incident.scheduled_for < end
    )
    if crew:
        query = query.where(Incident.crew == crew)
    incidents = {incident.id: incident for incident in session.scalars(query.order_by(Incident.id))}
    plan = plan_round((lon, lat), [Stop(i.id, i.lon, i.lat) for i in incidents.values()])
    addresses = dict(zip(incidents, incident_addresses(service.geocoder, list(incidents.values())), strict=True))
    labels: dict[StopId, str] = {
        i: f"#{i} {incidents[i].label.replace('_', ' ')}" + (f", {a.label}" if (a := addresses[i]) else "")
        for i in incidents
    }
    name = f"{crew or 'all crews'}, {day.isoformat()}"
    if format == "gpx":
        return Response(round_gpx(plan, labels, name=name), media_type="application/gpx+xml",
                        headers={"Content-Disposition": f'attachment; filename="round-{day.isoformat()}.gpx"'})
    if format == "geojson":
        return JSONResponse(round_geojson(plan, labels), media_type="application/geo+json")
    stops = []
    for k, stop in enumerate(plan.stops):
        incident_id = int(stop.id)
        address = addresses[incident_id]
        stops.append(RoundStop(
            order=k + 1, incident=incident_id, lat=stop.lat, lon=stop.lon, label=labels[stop.id],
            class_name=incidents[incident_id].label,
            size=incidents[incident_id].size or incidents[incident_id].size_estimate,
            address=None if address is None else address.label, scheduled_for=incidents[incident_id].scheduled_for,
            leg_m=round(plan.legs_m[k], 1),
        ))
    back = plan.legs_m[len(plan.stops)] if plan.closed and plan.stops else 0.0
    return RoundOut(day=day, crew=crew, depot=(lon, lat), stops=stops, back_m=round(back, 1),
                    length_m=round(plan.length_m, 1))

"""``/v1/incidents``: the map (GeoJSON), one incident with its reports and history, status changes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy.orm import Session, selectinload
from starlette.datastructures import URL

from serving.auth import Permission, Principal
from serving.db import write_session
from serving.errors import ErrorBody, NotFoundError
from serving.exports import incident_addresses, incident_feature
from serving.incidents import (
    OPEN_STATUSES,
    InvalidMergeError,
    InvalidTransitionError,
    Status,
    transition,
    unmerge,
)
from serving.models import Incident, Report, utcnow
from serving.queries import Bbox, IncidentFilter, count_incidents, latest_reports, list_incidents, parse_bbox
from serving.reports.view import report_out
from serving.reviews import mark_negatives
from serving.routes.deps import IdPath, Limit, Offset, ServiceDep, SessionDep, require
from serving.schemas import (
    COMMENT_MAX,
    BulkOutcome,
    BulkTransitionIn,
    FeatureCollection,
    IncidentDetail,
    Link,
    Timestamp,
    TransitionIn,
    TransitionOut,
)

if TYPE_CHECKING:
    from serving.addresses import ReverseGeocoder

__all__ = ["GeoJSONResponse", "incident_filter", "router"]


class GeoJSONResponse(JSONResponse):
    """JSON with the GeoJSON media type (RFC 7946)."""

    media_type = "application/geo+json"


router = APIRouter(
    tags=["incidents"],
    responses={
        401: {"model": ErrorBody, "description": "No API key, or an unknown or revoked one."},
        403: {"model": ErrorBody, "description": "The key's role may not do this."},
    },
)


def incident_filter(
    bbox: Annotated[
        str | None,
        Query(
            description="min_lon,min_lat,max_lon,max_lat in decimal degrees (WGS 84)", examples=["6.1,49.1,6.2,49.2"]
        ),
    ] = None,
    status: Annotated[list[Status] | None, Query(description="Any of these statuses (repeat the parameter).")] = None,
    class_: Annotated[
        list[str] | None, Query(alias="class", description="Any of these classes, e.g. dumped_waste.")
    ] = None,
    since: Annotated[
        Timestamp | None, Query(description="Seen at or after this time (ISO 8601 with offset).")
    ] = None,
    until: Annotated[Timestamp | None, Query(description="Seen at or before this time.")] = None,
    size: Annotated[
        list[Literal["S", "M", "L"]] | None,
        Query(description="Any of these sizes (a manager's, else the estimate; repeat the parameter)."),
    ] = None,
) -> IncidentFilter:
    """The filters shared by the map, the exports."""
    box: Bbox | None = None
    if bbox is not None:
        try:
            box = parse_bbox(bbox)
        except ValueError as exc:
            raise RequestValidationError(
                [{"type": "value_error", "loc": ("query", "bbox"), "msg": str(exc), "input": bbox}]
            ) from None
    return IncidentFilter(
        bbox=box, statuses=tuple(status or ()), labels=tuple(class_ or ()), since=since, until=until,
        sizes=tuple(size or ()),
    )


FilterDep = Annotated[IncidentFilter, Depends(incident_filter)]


@router.get(
    "/v1/incidents",
    response_model=FeatureCollection,
    response_class=GeoJSONResponse,
    summary="Incidents on a map (GeoJSON)",
)
def get_incidents(
    request: Request,
    session: SessionDep,
    service: ServiceDep,
    flt: FilterDep,
    _principal: Annotated[Principal, Depends(require(Permission.INCIDENT_READ))],
    limit: Limit = None,
    offset: Offset = 0,
) -> Any:
    """Incidents matching the filters, most recently seen first, as a GeoJSON FeatureCollection.

    Coordinates are ``[lon, lat]``. ``numberMatched`` counts all matches; ``links`` holds the next and
    previous pages. Each incident carries its nearest ``address`` when the service has an address index.
    """
    size = min(limit or service.settings.page_size, service.settings.max_page_size)
    matched = count_incidents(session, flt)
    page = list_incidents(session, flt, limit=size, offset=offset)
    latest = latest_reports(session, [i.id for i in page])
    features = [
        incident_feature(i, a, latest.get(i.id))
        for i, a in zip(page, incident_addresses(service.geocoder, page), strict=True)
    ]
    settings = service.settings

    def page_link(url: URL, rel: str) -> Link:  # under the public URL, never the request's Host
        return Link(href=settings.link(f"{url.path}?{url.query}" if url.query else url.path), rel=rel)

    links = [page_link(request.url, "self")]
    if offset + len(features) < matched:
        links.append(page_link(request.url.include_query_params(offset=offset + size, limit=size), "next"))
    if offset > 0:
        previous = max(0, offset - size)
        links.append(page_link(request.url.include_query_params(offset=previous, limit=size), "prev"))
    collection = FeatureCollection(
        features=features, numberMatched=matched, numberReturned=len(features), links=links
    )
    return GeoJSONResponse(collection.model_dump(mode="json"))


def incident_detail(session: Session, incident_id: int, geocoder: ReverseGeocoder | None = None) -> IncidentDetail:
    """An incident with its reports and history, and its nearest address when ``geocoder`` has one.

    Raises:
        NotFoundError: no such incident.
    """
    incident = session.get(
        Incident,
        incident_id,
        options=[
            selectinload(Incident.reports).selectinload(Report.incident),
            selectinload(Incident.reports).selectinload(Report.reviews),
            selectinload(Incident.transitions),
            selectinload(Incident.after_photos).selectinload(Report.reviews),
        ],
    )
    if incident is None:
        raise NotFoundError(f"There is no incident #{incident_id}.")
    after = [r for r in incident.after_photos if r.erased_at is None]
    kept = [r.id for r in incident.reports if r.photo_deleted_at is None]
    feature = incident_feature(incident, incident_addresses(geocoder, [incident])[0], max(kept, default=None))
    return IncidentDetail(
        id=feature.id,
        geometry=feature.geometry,
        properties=feature.properties,
        reports=[report_out(r) for r in incident.reports],
        after_photos=[report_out(r) for r in after],
        cleaned_proposed=bool(after) and Status(incident.status) in OPEN_STATUSES and not after[-1].dumping,
        history=[
            TransitionOut(
                id=t.id,
                from_status=Status(t.from_status) if t.from_status else None,
                to_status=Status(t.to_status),
                at=t.at,
                actor=t.actor,
                comment=t.comment,
                merged_into=t.merged_into_id,
            )
            for t in incident.transitions
        ],
    )


@router.get(
    "/v1/incidents/{incident_id}",
    response_model=IncidentDetail,
    responses={404: {"model": ErrorBody, "description": "No such incident."}},
    summary="One incident, its reports and history",
)
def get_incident(
    incident_id: IdPath,
    session: SessionDep,
    service: ServiceDep,
    _principal: Annotated[Principal, Depends(require(Permission.INCIDENT_READ))],
) -> IncidentDetail:
    """The incident as a GeoJSON Feature, with every report that joined it and every status change."""
    return incident_detail(session, incident_id, service.geocoder)


@router.post(
    "/v1/incidents/{incident_id}/transitions",
    status_code=201,
    response_model=IncidentDetail,
    responses={
        404: {"model": ErrorBody, "description": "No such incident."},
        409: {
            "model": ErrorBody,
            "description": "The incident's status does not allow this change; or the merge target is not open "
            "(merge_target_closed) or too far away without force (merge_too_far).",
        },
        422: {"description": "Invalid body, or an unusable merge target (code invalid_merge)."},
    },
    summary="Change an incident's status",
)
def post_transition(
    incident_id: IdPath,
    body: TransitionIn,
    service: ServiceDep,
    principal: Annotated[Principal, Depends(require(Permission.INCIDENT_TRANSITION))],
) -> IncidentDetail:
    """Move the incident to ``to`` (confirmed, scheduled, cleaned, rejected, duplicate), recording who,
    when and ``comment``. ``duplicate`` needs ``merged_into``, an open incident within ``merge_max_distance_m``
    (100 m; ``force`` merges farther, the distance recorded in the history); the incident's reports move there.
    ``rejected`` (a false alarm) marks the photos of its reports without a review as negatives (a review
    "no deposit" by you, source ``rejection``) unless ``negatives`` is false.
    """
    with write_session(service.sessions) as session:
        incident = session.get(Incident, incident_id)
        if incident is None:
            raise NotFoundError(f"There is no incident #{incident_id}.")
        row = transition(
            session, incident, body.to, actor=principal.actor, actor_key_id=principal.key_id,
            comment=body.comment, merged_into_id=body.merged_into,
            merge_max_distance_m=service.settings.merge_max_distance_m, force=body.force,
            scheduled_for=body.scheduled_for, crew=body.crew,
        )
        if body.to is Status.REJECTED and body.negatives:
            mark_negatives(
                session, incident, reviewer=principal.actor, reviewer_key_id=principal.key_id, note=body.comment,
                at=row.at,
            )
    with service.sessions() as session:
        return incident_detail(session, incident_id, service.geocoder)


@router.post(
    "/v1/incidents/{incident_id}/unmerge",
    status_code=201,
    response_model=IncidentDetail,
    responses={
        404: {"model": ErrorBody, "description": "No such incident."},
        409: {"model": ErrorBody, "description": "The incident is not a duplicate."},
    },
    summary="Undo a merge",
)
def post_unmerge(
    incident_id: IdPath,
    service: ServiceDep,
    principal: Annotated[Principal, Depends(require(Permission.INCIDENT_TRANSITION))],
    comment: Annotated[str | None, Body(embed=True, max_length=COMMENT_MAX)] = None,
) -> IncidentDetail:
    """A duplicate gets back the reports the merge moved and the status it had before; the incident it
    was merged into loses them again (counts, times and position recomputed). Recorded in its history.
    """
    with write_session(service.sessions) as session:
        incident = session.get(Incident, incident_id)
        if incident is None:
            raise NotFoundError(f"There is no incident #{incident_id}.")
        unmerge(session, incident, actor=principal.actor, actor_key_id=principal.key_id, comment=comment)
    with service.sessions() as session:
        return incident_detail(session, incident_id, service.geocoder)


@router.post("/v1/incidents/transitions", response_model=list[BulkOutcome], summary="Change several incidents")
def post_bulk_transition(
    body: BulkTransitionIn,
    service: ServiceDep,
    principal: Annotated[Principal, Depends(require(Permission.INCIDENT_TRANSITION))],
) -> list[BulkOutcome]:
    """The same change (confirm, schedule with a date and a crew, clean, reject) for each of ``ids``, each
    recorded in its history. An incident the change does not fit (its status, or no such incident) is
    left as it is and says why; the others change. Not for ``duplicate`` (merges go one at a time).
    """
    if body.to is Status.DUPLICATE or body.merged_into is not None:
        raise InvalidMergeError("merges go one incident at a time: POST /v1/incidents/{id}/transitions")
    outcomes: list[BulkOutcome] = []
    with write_session(service.sessions) as session:
        for incident_id in dict.fromkeys(body.ids):  # once each, in the order given
            incident = session.get(Incident, incident_id)
            if incident is None:
                outcomes.append(BulkOutcome(id=incident_id, done=False, status=None,
                                            error=f"There is no incident #{incident_id}."))
                continue
            try:
                with session.begin_nested():
                    row = transition(
                        session, incident, body.to, actor=principal.actor, actor_key_id=principal.key_id,
                        comment=body.comment, scheduled_for=body.scheduled_for, crew=body.crew,
                    )
                    if body.to is Status.REJECTED and body.negatives:
                        mark_negatives(session, incident, reviewer=principal.actor,
                                       reviewer_key_id=principal.key_id, note=body.comment, at=row.at)
            except InvalidTransitionError as exc:
                session.refresh(incident)
                outcomes.append(BulkOutcome(id=incident_id, done=False, status=Status(incident.status), error=str(exc)))
                continue
            outcomes.append(BulkOutcome(id=incident_id, done=True, status=Status(incident.status)))
    return outcomes


class SizeIn(BaseModel):
    """A manager's size of a deposit; null goes back to the estimate from the photos."""

    model_config = ConfigDict(extra="forbid")

    size: Literal["S", "M", "L"] | None


@router.put(
    "/v1/incidents/{incident_id}/size",
    response_model=IncidentDetail,
    responses={404: {"model": ErrorBody, "description": "No such incident."}},
    summary="Set a deposit's size",
)
def put_size(
    incident_id: IdPath,
    body: SizeIn,
    service: ServiceDep,
    principal: Annotated[Principal, Depends(require(Permission.INCIDENT_TRANSITION))],
) -> IncidentDetail:
    """S (a bag or two), M (a pile), L (a truckload), as the manager sees it on the photos or on site; it wins over
    the service's estimate (see ``serving/sizes.py``) in the list, filters, exports and rounds.
    """
    with write_session(service.sessions) as session:
        incident = session.get(Incident, incident_id)
        if incident is None:
            raise NotFoundError(f"There is no incident #{incident_id}.")
        incident.size = body.size
        incident.updated_at = utcnow()
    with service.sessions() as session:
        return incident_detail(session, incident_id, service.geocoder)

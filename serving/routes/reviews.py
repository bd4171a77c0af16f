"""``/v1/reports/{id}/review`` and ``/reviews``: managers say what is in a report's photo (:mod:`serving.reviews`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from serving.auth import Permission, Principal
from serving.db import write_session
from serving.errors import ErrorBody
from serving.reports.view import review_out
from serving.reviews import review_report, reviews_of
from serving.routes.deps import IdPath, ServiceDep, SessionDep, require
from serving.schemas import ReviewIn, ReviewOut

__all__ = ["router"]

router = APIRouter(
    tags=["reviews"],
    responses={
        401: {"model": ErrorBody, "description": "No API key, or an unknown or revoked one."},
        403: {"model": ErrorBody, "description": "The key's role may not review (managers and admins may)."},
        404: {"model": ErrorBody, "description": "No such report."},
    },
)

Reviewer = Annotated[Principal, Depends(require(Permission.REPORT_REVIEW))]


@router.post(
    "/v1/reports/{report_id}/review",
    status_code=201,
    response_model=ReviewOut,
    responses={
        422: {
            "model": ErrorBody,
            "description": "The review does not fit the photo (code invalid_review): a box outside the photo, an "
            "unknown class, no detection of that index, deposit true without a deposit box or false with one; "
            "or an invalid body. Nothing is written.",
        },
    },
    summary="Review a report's photo",
)
def post_review(report_id: IdPath, body: ReviewIn, service: ServiceDep, principal: Reviewer) -> ReviewOut:
    """Say what is in the photo: keep a detection (``{"detection": 0}``), change its class or box
    (``{"detection": 0, "label": "bin"}``), draw a missing box (``{"label": "dumped_waste", "xyxy": [x1, y1, x2,
    y2]}``, pixels of the upright photo), delete one (leave it out), or say there is no deposit (``"deposit":
    false``, a false alarm, with no boxes or only normal bins).

    The review becomes the report's current labels (``review`` in the report; the model's ``detections``
    stay as they were) and is recorded in its incident's history. An incident stays ``to_review`` while a
    report sent anyway of it has no review.
    """
    with write_session(service.sessions) as session:
        review = review_report(
            session, report_id, deposit=body.deposit, boxes=body.boxes, note=body.note,
            reviewer=principal.actor, reviewer_key_id=principal.key_id,
        )
        return review_out(review)


@router.get("/v1/reports/{report_id}/reviews", response_model=list[ReviewOut], summary="A report's reviews")
def get_reviews(report_id: IdPath, session: SessionDep, _principal: Reviewer) -> list[ReviewOut]:
    """Every review of the report's photo, oldest first: the last one is its current labels."""
    return [review_out(review) for review in reviews_of(session, report_id)]

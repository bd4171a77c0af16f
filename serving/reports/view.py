"""Reading stored reports for the API: look one up, check who may read it, and shape its answer.

Nothing here writes: :mod:`serving.reports.upload` and :mod:`serving.reports.store` do.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from serving.auth import Permission, Principal
from serving.grouping import IncidentAction
from serving.incidents import Status
from serving.models import Report, ReportReview
from serving.schemas import IncidentRef, ReportLinks, ReportOut, ReviewBox, ReviewOut
from vipare.results import Detection, ImageInfo, Location, ModelInfo, Verdict

__all__ = ["can_read", "find_report", "load_report", "report_out", "review_out"]


def find_report(session: Session, client_ref: str, sha256: str) -> Report | None:
    """The report of this photo from this client, if any."""
    return session.scalar(select(Report).where(Report.client_ref == client_ref, Report.sha256 == sha256))


def load_report(session: Session, report_id: int) -> Report | None:
    """A report with its incident and reviews loaded."""
    return session.scalar(
        select(Report)
        .options(selectinload(Report.incident), selectinload(Report.reviews))
        .where(Report.id == report_id)
    )


def can_read(principal: Principal, report: Report) -> bool:
    """Managers read every report; agents (and the local caller) their own."""
    if principal.can(Permission.REPORT_READ_ALL):
        return True
    return principal.can(Permission.REPORT_READ_OWN) and report.client_ref == principal.client_ref


def review_out(review: ReportReview) -> ReviewOut:
    """The API's view of a review."""
    return ReviewOut(
        id=review.id,
        report_id=review.report_id,
        reviewer=review.reviewer,
        reviewed_at=review.reviewed_at,
        deposit=review.deposit,
        boxes=[ReviewBox.model_validate(box) for box in review.boxes],
        source="rejection" if review.source == "rejection" else "review",
        note=review.note,
    )


def report_out(report: Report) -> ReportOut:
    """The API's view of a report (its incident must be loaded; its reviews are, best, too)."""
    incident = None
    if report.incident_id is not None and report.incident is not None:
        incident = IncidentRef(
            id=report.incident_id,
            status=Status(report.incident.status),
            action=IncidentAction(report.incident_action or IncidentAction.JOINED),
            url=f"/v1/incidents/{report.incident_id}",
        )
    base = f"/v1/reports/{report.id}"
    return ReportOut(
        id=report.id,
        received_at=report.received_at,
        observed_at=report.observed_at,
        submitted_by=report.submitted_by,
        camera_id=report.camera_id,
        note=report.note,
        image=ImageInfo.model_validate(report.image),
        detections=[Detection.model_validate(d) for d in report.detections],
        verdict=Verdict.model_validate(report.verdict),
        location=Location.model_validate(report.location),
        model=ModelInfo.model_validate(report.model),
        incident=incident,
        agent_says_deposit=report.agent_says_deposit,
        after_of=report.after_of,
        review=review_out(report.reviews[-1]) if report.reviews else None,
        photo_deleted_at=report.photo_deleted_at,
        erased_at=report.erased_at,
        links=ReportLinks(self=base, image=f"{base}/image", annotated_image=f"{base}/image/annotated"),
    )

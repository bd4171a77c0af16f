"""Which photos an export takes, and the labels each one gets.

Each report with a review, labelled by its current review (the latest row; the model's detections
stay out of it). With ``include_unreviewed``, reports nobody reviewed come too, labelled by the
model's detections and marked ``"labels": "model"`` in the manifest, except the photos an agent sent
anyway where the model saw nothing (only a review settles who is right). A review that says "no
deposit" (a false alarm, or a photo of a rejected incident) gives an empty label file: a negative.
Filters: observed time (``since``/``until``, inclusive) and a bounding box. A photo sent by several
clients (one sha256, several reports) appears once, labelled by its most recent review. A report
whose photo is no longer kept (past retention, or erased: :mod:`serving.retention`) is left out.

Boxes are ``xyxy`` in pixels of the upright photo (``Report.image`` width and height give its size);
:mod:`serving.dataset.layout` turns them into label lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Select, and_, func, not_, or_, select
from sqlalchemy.orm import Session

from serving.errors import NotFoundError
from serving.geo import lat_lon_box
from serving.models import Report, ReportReview
from serving.queries import Bbox
from vipare.size import Size

__all__ = [
    "ExportFilter",
    "LabelBox",
    "NothingToExportError",
    "Sample",
    "nothing_message",
    "select_samples",
]

_WHAT_TO_DO = (
    "Review photos first: in the manager page (/manager), or with POST /v1/reports/{id}/review; "
    "or export the model's own detections of unreviewed photos too (--include-unreviewed, "
    "include_unreviewed=true)."
)


class NothingToExportError(NotFoundError):
    """No photo matches: nothing was written. The message says what to do."""

    code = "nothing_to_export"


@dataclass(frozen=True)
class ExportFilter:
    """Which reports an export takes.

    Attributes:
        since: observed at or after this time (timezone-aware), or None.
        until: observed at or before this time, or None.
        bbox: inside this box (``min_lon > max_lon`` crosses the antimeridian), or None.
        include_unreviewed: also the reports nobody reviewed, labelled by the model's detections.
    """

    since: datetime | None = None
    until: datetime | None = None
    bbox: Bbox | None = None
    include_unreviewed: bool = False

    def __post_init__(self) -> None:
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"{name} must be timezone-aware (give a UTC offset)")
        if self.since is not None and self.until is not None and self.since > self.until:
            raise ValueError("since is after until: nothing could match")

    def as_json(self) -> dict[str, Any]:
        """The filters as the manifest records them."""
        box = self.bbox
        return {
            "since": None if self.since is None else self.since.isoformat(),
            "until": None if self.until is None else self.until.isoformat(),
            "bbox": None if box is None else [box.min_lon, box.min_lat, box.max_lon, box.max_lat],
            "include_unreviewed": self.include_unreviewed,
        }


@dataclass(frozen=True)
class LabelBox:
    """One box to write: its class and where it is.

    Attributes:
        label: class name (a project class is written, another is dropped).
        xyxy: x1, y1, x2, y2 in pixels of the upright photo.
    """

    label: str
    xyxy: tuple[float, float, float, float]


@dataclass(frozen=True)
class Sample:
    """One photo of an export, with its labels and what the manifest says about it.

    Attributes:
        report_id: the report (the lowest id among reports of the same photo with the chosen labels).
        sha256: the photo's identity (sha256 of the uploaded file, the store's file name).
        photo_ext: the stored file's extension.
        size: the upright photo's size, the pixels the boxes are in.
        lat: latitude, decimal degrees.
        lon: longitude, decimal degrees.
        observed_at: when the photo was taken (or received), UTC.
        incident_id: the incident it joined, or None.
        model_sha256: the model that analysed it.
        labels: ``review`` (a manager's review) or ``model`` (the model's detections, never reviewed).
        boxes: what to write in the label file; empty: a photo without deposit.
        deposit: the review's (or the model's) verdict.
        reviewer: who reviewed it, or None.
        reviewed_at: when, or None.
        review_source: ``review`` or ``rejection`` (its incident was rejected), or None.
        same_photo: other reports of the same photo, left out of the export.
    """

    report_id: int
    sha256: str
    photo_ext: str
    size: Size
    lat: float
    lon: float
    observed_at: datetime
    incident_id: int | None
    model_sha256: str
    labels: Literal["review", "model"]
    boxes: tuple[LabelBox, ...]
    deposit: bool
    reviewer: str | None = None
    reviewed_at: datetime | None = None
    review_source: str | None = None
    same_photo: tuple[int, ...] = ()

    @property
    def stem(self) -> str:
        """The file name of its image and label, without extension."""
        return f"report-{self.report_id}"


def _statement(flt: ExportFilter) -> Select[Report, ReportReview]:  # the review is None for unreviewed reports
    latest = (
        select(ReportReview.report_id, func.max(ReportReview.id).label("review_id"))
        .group_by(ReportReview.report_id)
        .subquery()
    )
    statement = (
        select(Report, ReportReview)
        .outerjoin(latest, latest.c.report_id == Report.id)
        .outerjoin(ReportReview, ReportReview.id == latest.c.review_id)
        .where(Report.photo_deleted_at.is_(None))
        .order_by(Report.id)
    )
    if not flt.include_unreviewed:
        statement = statement.where(latest.c.review_id.is_not(None))
    else:
        # A photo sent anyway where the model saw nothing: agent and model disagree, only a review settles it.
        disputed = and_(Report.agent_says_deposit.is_(True), Report.dumping.is_(False))
        statement = statement.where(or_(latest.c.review_id.is_not(None), not_(disputed)))
    if flt.since is not None:
        statement = statement.where(Report.observed_at >= flt.since)
    if flt.until is not None:
        statement = statement.where(Report.observed_at <= flt.until)
    if flt.bbox is not None:
        b = flt.bbox
        statement = statement.where(lat_lon_box(Report.lat, Report.lon, b.min_lon, b.min_lat, b.max_lon, b.max_lat))
    return statement


def _sample(report: Report, review: ReportReview | None) -> Sample:
    size = Size(int(report.image["width"]), int(report.image["height"]))
    common: dict[str, Any] = {
        "report_id": report.id,
        "sha256": report.sha256,
        "photo_ext": report.photo_ext,
        "size": size,
        "lat": report.lat,
        "lon": report.lon,
        "observed_at": report.observed_at,
        "incident_id": report.incident_id,
        "model_sha256": report.model_sha256,
    }
    if review is None:
        boxes = tuple(LabelBox(str(d["label"]), _xyxy(d["box"])) for d in report.detections)
        return Sample(**common, labels="model", boxes=boxes, deposit=report.dumping)
    return Sample(
        **common,
        labels="review",
        boxes=tuple(LabelBox(str(b["label"]), _xyxy(b["xyxy"])) for b in review.boxes),
        deposit=review.deposit,
        reviewer=review.reviewer,
        reviewed_at=review.reviewed_at,
        review_source=review.source,
    )


def _xyxy(values: Sequence[float]) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in values)
    return x1, y1, x2, y2


def _preference(sample: Sample) -> tuple[bool, datetime, int]:
    # Among reports of one photo: a review beats the model, a later review an earlier one, then the first report.
    reviewed_at = sample.reviewed_at or sample.observed_at
    return (sample.labels == "review", reviewed_at, -sample.report_id)


def select_samples(session: Session, flt: ExportFilter) -> list[Sample]:
    """The photos an export takes, in report order, one per photo (sha256).

    Args:
        session: a read session; the export reads one snapshot of the database through it.
        flt: which reports.

    Returns:
        One sample per distinct photo; the other reports of the same photo are in ``same_photo``.
    """
    by_photo: dict[str, list[Sample]] = {}
    for report, review in session.execute(_statement(flt)):
        by_photo.setdefault(report.sha256, []).append(_sample(report, review))
    chosen: list[Sample] = []
    for samples in by_photo.values():
        best = max(samples, key=_preference)
        others = tuple(sorted(s.report_id for s in samples if s is not best))
        chosen.append(replace(best, same_photo=others) if others else best)
    return sorted(chosen, key=lambda s: s.report_id)


def nothing_message(session: Session, flt: ExportFilter) -> str:
    """Why no photo matches ``flt``, and what to do: the message of a :class:`NothingToExportError`."""
    reviewed = session.scalar(select(func.count(func.distinct(ReportReview.report_id)))) or 0
    if flt.include_unreviewed:
        return "No report matches the filters: widen them (since, until, bbox)."
    if reviewed == 0:
        return f"No photo has been reviewed yet, so there is nothing to export. {_WHAT_TO_DO}"
    return f"None of the {reviewed} reviewed photos matches the filters: widen them (since, until, bbox). {_WHAT_TO_DO}"

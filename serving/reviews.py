"""Reviews: what a manager says is in a report's photo, kept apart from what the model said.

A review (:class:`~serving.models.ReportReview`) is a list of boxes, each a project class and an
``xyxy`` box in pixels of the upright photo (the detections' convention), with the index of the
detection it was kept from or none for a box the manager drew, and ``deposit``: whether the photo
shows a deposit. Keeping a detection as it is, changing its class or box, deleting it (leaving it
out), drawing a missing box and saying "no deposit in this photo" (a false alarm) are all one
review. The latest review of a report is its current labels, earlier ones its history; the model's
detections stay untouched in ``Report.detections``.

:func:`review_report` checks a review against the photo and stores it, in this order, so that a bad
one writes nothing:

1. the report exists (else :class:`~serving.errors.NotFoundError`);
2. every box: a project class, inside the photo, from an existing detection (each at most once) or
   drawn with its class and box; ``deposit`` true needs a box of a deposit class, false allows
   only boxes of other classes (else :class:`~serving.errors.InvalidReviewError`, saying what to send);
3. the review row, and in the history of the report's incident a transition row whose from and to
   are its current status and whose comment says what the review found; the incident stays
   ``to_review`` while a report sent anyway of it has no review (:func:`serving.grouping.needs_review`).

Rejecting an incident as a false alarm marks the photos of its unreviewed reports as negatives
(:func:`mark_negatives`): a review "no deposit" by the rejecting manager, source ``rejection``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from serving.errors import InvalidReviewError, NotFoundError
from serving.grouping import needs_review
from serving.models import Incident, Report, ReportReview, Transition, utcnow
from serving.schemas import ReviewBoxIn
from vipare.taxonomy import class_names, is_deposit

__all__ = [
    "REJECTION",
    "REVIEW",
    "check_review",
    "mark_negatives",
    "review_report",
    "review_summary",
    "reviews_of",
]

REVIEW = "review"
"""Source of a review a manager made of the photo."""
REJECTION = "rejection"
"""Source of the review "no deposit" left on an unreviewed photo by its incident's rejection."""


def _classes() -> str:
    names = class_names()
    return ", ".join(f"{n} (deposit)" if is_deposit(n) else f"{n} (not a deposit)" for n in names)


def check_review(report: Report, deposit: bool, boxes: Sequence[ReviewBoxIn]) -> list[dict[str, Any]]:
    """The boxes of a review as stored, after checking them against the report's photo and detections.

    Args:
        report: the report reviewed (its ``image`` facts give the upright photo's size).
        deposit: whether the manager says the photo shows a deposit.
        boxes: the boxes sent: a kept detection (``detection``, with ``label`` or ``xyxy`` to change
            them) or a drawn box (``label`` and ``xyxy``).

    Returns:
        One ``{"label", "xyxy", "detection"}`` per box, in order; ``xyxy`` in pixels of the upright photo.

    Raises:
        InvalidReviewError: a box is unusable, or ``deposit`` disagrees with the boxes; the message
            says which box and what to send.
    """
    width, height = int(report.image["width"]), int(report.image["height"])
    detections = report.detections
    names = class_names()
    kept: set[int] = set()
    stored: list[dict[str, Any]] = []
    for n, box in enumerate(boxes):
        where = f"boxes[{n}]"
        if box.detection is not None:
            if box.detection >= len(detections):
                have = f"0 to {len(detections) - 1}" if detections else "none: draw the box instead (no detection)"
                raise InvalidReviewError(
                    f"{where}: report #{report.id} has no detection {box.detection}; its detections are numbered "
                    f"{have}."
                )
            if box.detection in kept:
                raise InvalidReviewError(f"{where}: detection {box.detection} is kept twice; send it once.")
            kept.add(box.detection)
            detection = detections[box.detection]
            label = box.label if box.label is not None else str(detection["label"])
            xyxy = box.xyxy if box.xyxy is not None else tuple(float(v) for v in detection["box"])
        else:
            if box.label is None or box.xyxy is None:
                raise InvalidReviewError(
                    f"{where}: a drawn box (no detection) needs its label and its xyxy; to keep a detection, send "
                    "its index as detection."
                )
            label, xyxy = box.label, box.xyxy
        if label not in names:
            raise InvalidReviewError(f"{where}: unknown class {label!r}; send one of {_classes()}.")
        x1, y1, x2, y2 = xyxy
        inside = all(math.isfinite(v) for v in xyxy) and 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
        if not inside:
            raise InvalidReviewError(
                f"{where}: the box {list(xyxy)} is not inside the photo; send x1, y1, x2, y2 in pixels of the upright "
                f"photo ({width} x {height}) with 0 <= x1 < x2 <= {width} and 0 <= y1 < y2 <= {height}."
            )
        stored.append({"label": label, "xyxy": [float(v) for v in xyxy], "detection": box.detection})
    deposits = [box["label"] for box in stored if is_deposit(box["label"])]
    if deposit and not deposits:
        raise InvalidReviewError(
            "deposit is true but no box is of a deposit class: keep or draw the deposit's box (class "
            + " or ".join(n for n in names if is_deposit(n))
            + "), or send deposit false if the photo shows none."
        )
    if not deposit and deposits:
        raise InvalidReviewError(
            f"deposit is false (no deposit in this photo) but boxes hold {', '.join(sorted(set(deposits)))}: leave "
            "those boxes out (only normal bins may stay), or send deposit true."
        )
    return stored


def review_summary(report_id: int, deposit: bool, boxes: Sequence[dict[str, Any]], note: str | None) -> str:
    """The history comment of a review: ``review of report #N:`` then the boxes per class, or ``no deposit``."""
    counts = Counter(box["label"] for box in boxes)
    per_class = ", ".join(f"{count} {label}" for label, count in sorted(counts.items()))
    found = per_class if deposit else "no deposit" + (f" ({per_class})" if per_class else "")
    return f"review of report #{report_id}: {found}" + (f"; {note}" if note else "")


def review_report(
    session: Session,
    report_id: int,
    *,
    deposit: bool,
    boxes: Sequence[ReviewBoxIn],
    note: str | None,
    reviewer: str,
    reviewer_key_id: int | None,
    at: datetime | None = None,
) -> ReportReview:
    """Check and store a review of a report's photo (see the module doc); the caller commits.

    Args:
        session: a session in a write transaction (:func:`serving.db.write_session`).
        report_id: the report reviewed.
        deposit: whether the photo shows a deposit.
        boxes: the boxes kept and drawn (:func:`check_review`).
        note: free text, also in the history comment.
        reviewer: who reviews, as the history's actor (``Principal.actor``).
        reviewer_key_id: the reviewer's key id, if any.
        at: when; now when omitted.

    Returns:
        The stored review (flushed: it has its id).

    Raises:
        NotFoundError: no such report.
        InvalidReviewError: the review does not fit the photo (nothing is written).
    """
    report = session.get(Report, report_id)
    if report is None:
        raise NotFoundError(f"There is no report #{report_id}.")
    stored = check_review(report, deposit, boxes)
    at = at or utcnow()
    review = ReportReview(
        report_id=report.id, reviewer=reviewer, reviewer_key_id=reviewer_key_id, reviewed_at=at,
        deposit=deposit, boxes=stored, source=REVIEW, note=note,
    )
    session.add(review)
    incident = session.get(Incident, report.incident_id) if report.incident_id is not None else None
    if incident is not None:
        session.add(
            Transition(
                incident_id=incident.id, from_status=incident.status, to_status=incident.status, at=at,
                actor=reviewer, actor_key_id=reviewer_key_id,
                comment=review_summary(report.id, deposit, stored, note),
            )
        )
        session.flush()
        incident.to_review = needs_review(session, incident.id)
    session.flush()
    return review


def mark_negatives(
    session: Session,
    incident: Incident,
    *,
    reviewer: str,
    reviewer_key_id: int | None,
    note: str | None = None,
    at: datetime | None = None,
) -> list[ReportReview]:
    """Mark the photos of an incident's unreviewed reports as negatives: a review "no deposit" each.

    Called when the incident is rejected as a false alarm; the caller commits. Reports already
    reviewed keep their reviews. The incident is no longer ``to_review`` afterwards.

    Args:
        session: a session in a write transaction.
        incident: the incident rejected.
        reviewer: the rejecting manager, as the history's actor.
        reviewer_key_id: their key id, if any.
        note: the rejection's comment.
        at: when; now when omitted.

    Returns:
        The reviews added, by report id.
    """
    at = at or utcnow()
    unreviewed = session.scalars(
        select(Report)
        .where(Report.incident_id == incident.id, ~select(ReportReview.id).where(ReportReview.report_id == Report.id)
               .exists())
        .order_by(Report.id)
    )
    added = [
        ReportReview(
            report_id=report.id, reviewer=reviewer, reviewer_key_id=reviewer_key_id, reviewed_at=at,
            deposit=False, boxes=[], source=REJECTION, note=note,
        )
        for report in unreviewed
    ]
    session.add_all(added)
    session.flush()
    incident.to_review = needs_review(session, incident.id)
    return added


def reviews_of(session: Session, report_id: int) -> list[ReportReview]:
    """A report's reviews, oldest first (the last one is its current labels).

    Raises:
        NotFoundError: no such report.
    """
    if session.get(Report, report_id) is None:
        raise NotFoundError(f"There is no report #{report_id}.")
    return list(session.scalars(select(ReportReview).where(ReportReview.report_id == report_id)
                                .order_by(ReportReview.id)))

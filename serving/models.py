"""Database tables (SQLAlchemy 2 ORM). The schema itself is created by the Alembic migrations.

Portable on purpose: plain ``lat``/``lon`` float columns with a composite index (no PostGIS) and a
grid cell per incident (:mod:`serving.cells`) for the lookups around one place, JSON columns for
what vipare returns about a photo, and timestamps stored as UTC.

::

    api_keys      who may call the service (hashed secrets, a role, a camera's position)
    cameras       the registry of street cameras: id, surveyed position, heading, description
    camera_keys   which camera an API key belongs to (at most one per key)
    incidents     one deposit at one place: status, position, first/last seen, counts
    reports       one uploaded photo: detections, verdict, location, model identity, its incident
    transitions   every status change of an incident: from, to, who, when, comment
    report_reviews  what a manager says is in a report's photo, apart from the model's detections
    model_promotions  every model the service was told to use; the latest is the current one
    write_locks   one row every write transaction updates first on SQLite, so writers take turns
    scheduled_passes  when each periodic pass of the service (the daily purge) last ran
    installation  one row: this database's own id, which the photo store it uses records
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
    false,
    literal_column,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from serving.cells import cell_of

__all__ = [
    "ApiKey",
    "Base",
    "Camera",
    "CameraKey",
    "Incident",
    "Installation",
    "NOTED",
    "ModelPromotion",
    "OriginalRead",
    "Report",
    "ReportReview",
    "STATUS_TIMES",
    "ScheduledPass",
    "Transition",
    "UTCDateTime",
    "WriteLock",
    "utcnow",
]

WRITE_LOCK_NAME = "writes"


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as naive UTC and read back as timezone-aware UTC, the same on every database."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; store timezone-aware ones")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    """Declarative base with named constraints (Alembic's batch mode on SQLite needs the names)."""

    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class WriteLock(Base):
    """Rows updated first by every write transaction: writers then queue on SQLite and PostgreSQL alike."""

    __tablename__ = "write_locks"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    counter: Mapped[int] = mapped_column(Integer, default=0)


class ApiKey(Base):
    """An API key. Only the key's public prefix and the sha256 of its secret are stored."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # A fixed camera's surveyed position, used when its frames carry no GPS.
    camera_lat: Mapped[float | None] = mapped_column(Float, default=None)
    camera_lon: Mapped[float | None] = mapped_column(Float, default=None)
    camera_accuracy_m: Mapped[float | None] = mapped_column(Float, default=None)


class Incident(Base):
    """One deposit at one place, fed by the reports that joined it."""

    __tablename__ = "incidents"
    __table_args__ = (
        # The managers' map: a box, sorted as their list is (serving.queries.list_incidents), from the index alone.
        Index(None, "lat", "lon", "to_review", "last_seen", "id"),
        Index(None, "status", "last_seen"),
        # Around one place (serving.grouping): the cleaned incidents by cleaning time, the open ones by last sighting.
        Index(None, "cell", "family", "status", "cleaned_at"),
        Index(None, "cell", "family", "status", "last_seen"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    family: Mapped[str] = mapped_column(String(32))
    label: Mapped[str] = mapped_column(String(32), index=True)
    status: Mapped[str] = mapped_column(String(16))
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    # The grid cell of (lat, lon) (serving.cells), set on every write that moves the incident.
    cell: Mapped[int | None] = mapped_column(BigInteger, default=None)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    max_score: Mapped[float] = mapped_column(Float)
    report_count: Mapped[int] = mapped_column(Integer, default=0)
    recurrence_of_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id"), default=None)
    recurrence_count: Mapped[int] = mapped_column(Integer, default=0)
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id"), default=None)
    # When it last entered each status (STATUS_TIMES), kept by every transition that changes the status.
    new_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    cleaned_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    rejected_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    duplicate_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # Set by the "scheduled" transition: when, and by which crew (Open311 expected_datetime).
    scheduled_for: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True, default=None)
    crew: Mapped[str | None] = mapped_column(String(100), default=None)
    # S, M or L (serving.sizes): a manager's, and the service's estimate from the photos.
    size: Mapped[str | None] = mapped_column(String(1), default=None)
    size_estimate: Mapped[str | None] = mapped_column(String(1), default=None)
    # A manager should look first: a report sent anyway (the model saw nothing) is not reviewed yet.
    to_review: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    reports: Mapped[list[Report]] = relationship(
        back_populates="incident", order_by="Report.id", foreign_keys="Report.incident_id"
    )
    transitions: Mapped[list[Transition]] = relationship(
        back_populates="incident", order_by="Transition.id", foreign_keys="Transition.incident_id"
    )
    after_photos: Mapped[list[Report]] = relationship(
        order_by="Report.id", foreign_keys="Report.after_of", viewonly=True
    )


@event.listens_for(Incident, "before_insert")
@event.listens_for(Incident, "before_update")
def _place_in_cell(_mapper: Any, _connection: Any, incident: Incident) -> None:
    """Keep ``incidents.cell`` the cell of the incident's position (inserts and updates through the ORM)."""
    incident.cell = cell_of(incident.lat, incident.lon)


_NOTED_SQL = "note IS NOT NULL AND note != ''"


class Report(Base):
    """One uploaded photo and what vipare said about it. The photo file is named by ``sha256``."""

    __tablename__ = "reports"
    __table_args__ = (
        UniqueConstraint("client_ref", "sha256"),
        # Each incident's latest photo still kept (serving.queries.latest_reports, the CSV export), from the
        # index alone.
        Index(None, "incident_id", "photo_deleted_at", "id"),
        # Each incident's latest note (the CSV export): only the few reports with a note are in it.
        Index(
            "ix_reports_noted", "incident_id", "id", sqlite_where=text(_NOTED_SQL), postgresql_where=text(_NOTED_SQL)
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_ref: Mapped[str] = mapped_column(String(40))
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"), index=True, default=None)
    submitted_by: Mapped[str] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    photo_ext: Mapped[str] = mapped_column(String(8))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    observed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    captured_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    camera_id: Mapped[str | None] = mapped_column(String(100), default=None)
    note: Mapped[str | None] = mapped_column(Text, default=None)
    # The agent sent it as a deposit whatever the model said.
    agent_says_deposit: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    dumping: Mapped[bool] = mapped_column(Boolean)
    score: Mapped[float] = mapped_column(Float)
    label: Mapped[str | None] = mapped_column(String(32), default=None)
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    location_source: Mapped[str] = mapped_column(String(16))
    model_sha256: Mapped[str] = mapped_column(String(64))
    image: Mapped[dict[str, Any]] = mapped_column(JSON)
    detections: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    verdict: Mapped[dict[str, Any]] = mapped_column(JSON)
    location: Mapped[dict[str, Any]] = mapped_column(JSON)
    model: Mapped[dict[str, Any]] = mapped_column(JSON)
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id"), index=True, default=None)
    incident_action: Mapped[str | None] = mapped_column(String(16), default=None)
    # A photo of the incident's place after cleaning (proof): it joins no incident (incident_id null).
    after_of: Mapped[int | None] = mapped_column(ForeignKey("incidents.id"), index=True, default=None)
    # The incident it belonged to before a merge moved it (an unmerge moves it back).
    merged_from: Mapped[int | None] = mapped_column(ForeignKey("incidents.id"), index=True, default=None)
    # The photo is no longer kept (retention ended, or the report was erased); the row stays.
    photo_deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True, default=None)
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    erased_by: Mapped[str | None] = mapped_column(String(240), default=None)  # the administrator

    incident: Mapped[Incident | None] = relationship(back_populates="reports", foreign_keys=[incident_id])
    reviews: Mapped[list[ReportReview]] = relationship(back_populates="report", order_by="ReportReview.id")


class Transition(Base):
    """One status change of an incident (its opening included): who, when, why."""

    __tablename__ = "transitions"
    # When each incident last entered each status (the CSV export), from the index alone.
    __table_args__ = (Index(None, "incident_id", "to_status", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), index=True)
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(240))
    actor_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"), default=None)
    comment: Mapped[str | None] = mapped_column(Text, default=None)
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id"), default=None)

    incident: Mapped[Incident] = relationship(back_populates="transitions", foreign_keys=[incident_id])


NOTED = (Report.note.is_not(None), Report.note != literal_column("''"))
"""The reports with a note, as ``ix_reports_noted`` holds them: a query with these conditions may read it (the
empty text is written in the SQL, not bound: SQLite reads a partial index only for conditions it can see)."""


STATUS_TIMES: dict[str, str] = {
    status: f"{status}_at" for status in ("new", "confirmed", "scheduled", "cleaned", "rejected", "duplicate")
}
"""Each status (:class:`serving.incidents.Status`) and the ``incidents`` column that says when the incident
last entered it."""


@event.listens_for(Session, "before_flush")
def _entered(session: Session, _context: Any, _instances: Any) -> None:
    """Keep each incident's status times (:data:`STATUS_TIMES`) as its new transitions say.

    Every transition that changes the status sets the time of the status entered; one that keeps it (a
    review, an erasure noted in the history) does not. Transitions are written through the ORM only.
    """
    for row in session.new:
        if isinstance(row, Transition) and row.to_status != row.from_status:
            incident = session.get(Incident, row.incident_id)
            if incident is not None:
                setattr(incident, STATUS_TIMES[row.to_status], row.at)


class ReportReview(Base):
    """What a manager says is in a report's photo. The latest row of a report is its current labels.

    ``boxes`` is a list of ``{"label": class name, "xyxy": [x1, y1, x2, y2], "detection": index or
    null}``: ``xyxy`` in pixels of the upright photo (the detections' convention), ``detection`` the
    index in ``Report.detections`` the box was kept from (its class possibly changed), null for a
    box the manager drew. ``deposit`` False with no boxes: a false alarm, the photo a negative.
    ``source``: ``review`` (a manager reviewed the photo) or ``rejection`` (its incident was rejected
    as a false alarm, which marks its unreviewed photos as negatives).
    """

    __tablename__ = "report_reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    report_id: Mapped[int] = mapped_column(ForeignKey("reports.id"), index=True)
    reviewer: Mapped[str] = mapped_column(String(240))
    reviewer_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"), default=None)
    reviewed_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    deposit: Mapped[bool] = mapped_column(Boolean)
    boxes: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    source: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text, default=None)

    report: Mapped[Report] = relationship(back_populates="reviews")


class ModelPromotion(Base):
    """A model the service was told to use: the latest row is the current model, earlier ones its history.

    ``file`` is where the service loads it from (a copy under the data folder, named by its sha256);
    rolling back promotes an earlier model again, as a new row.
    """

    __tablename__ = "model_promotions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    file: Mapped[str] = mapped_column(String(400))
    promoted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    promoted_by: Mapped[str] = mapped_column(String(240))
    previous_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    card: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    comment: Mapped[str | None] = mapped_column(Text, default=None)


class Camera(Base):
    """A street camera: fixed (with its surveyed position) or mobile (no position: its frames carry GPS).

    The id is short and safe in a folder name (``serving.cameras.CAMERA_ID_PATTERN``): batch jobs
    find a frame's camera by the folder it lies in.
    """

    __tablename__ = "cameras"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    lat: Mapped[float | None] = mapped_column(Float, default=None)
    lon: Mapped[float | None] = mapped_column(Float, default=None)
    accuracy_m: Mapped[float | None] = mapped_column(Float, default=None)
    heading_deg: Mapped[float | None] = mapped_column(Float, default=None)
    description: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CameraKey(Base):
    """Ties an API key to a registered camera: its uploads are that camera's frames."""

    __tablename__ = "camera_keys"

    key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"), primary_key=True)
    camera_id: Mapped[str] = mapped_column(ForeignKey("cameras.id"), index=True)


class Installation(Base):
    """This database: one row, written by the migration that made the table, never changed.

    ``uid`` names the database to its photo store (:func:`serving.storage.claim_photos`): a store's
    sweep deletes the photos no report of its database refers to, so a store must never serve two.
    """

    __tablename__ = "installation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uid: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ScheduledPass(Base):
    """A periodic pass of the service (the daily purge of photos): when it last started and finished.

    A worker claims a pass by setting ``started_at`` in a write transaction, so that with several
    workers one runs it and the others find it done.
    """

    __tablename__ = "scheduled_passes"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class OriginalRead(Base):
    """One read of a report's unblurred original (``VIPARE_KEEP_ORIGINALS_DAYS``): who, when and why.

    Written and committed before the original is served; kept when the original is gone.
    """

    __tablename__ = "original_reads"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    report_id: Mapped[int] = mapped_column(ForeignKey("reports.id"), index=True)
    read_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    reader: Mapped[str] = mapped_column(String(240))
    reader_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"), default=None)
    reason: Mapped[str] = mapped_column(Text)

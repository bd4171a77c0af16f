"""What the service sends and accepts, as pydantic models (they also make the OpenAPI schema).

A report reuses the library's own result types (:mod:`vipare.results`): detections, verdict,
location and model identity are exactly what :meth:`vipare.Pipeline.analyze` returned.
GeoJSON follows RFC 7946: coordinates are ``[lon, lat]``; collections carry the OGC API Features
members ``numberMatched``, ``numberReturned`` and ``links`` for paging.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from serving.auth import Role
from serving.grouping import IncidentAction
from serving.incidents import Status
from serving.text import FreeText, Name
from vipare.results import Detection, ImageInfo, Location, ModelInfo, Verdict

__all__ = [
    "AddressOut",
    "FeatureCollection",
    "IncidentDetail",
    "IncidentFeature",
    "IncidentProperties",
    "IncidentRef",
    "KeyCreate",
    "KeyCreated",
    "KeyOut",
    "Link",
    "ModelOut",
    "ReportForm",
    "ReportOut",
    "ReportPage",
    "ReviewBox",
    "ReviewBoxIn",
    "ReviewIn",
    "ReviewOut",
    "MAX_ID",
    "Timestamp",
    "TransitionIn",
    "TransitionOut",
]

NOTE_MAX = 2000
COMMENT_MAX = 2000
MAX_ID = 2**31 - 1
"""Largest id a database integer column holds on every backend (``Integer`` is 32-bit on PostgreSQL):
larger ones are refused with 422, not a 500."""


def _utc_in_range(value: datetime) -> datetime:
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is out of range") from None
    if not 1970 <= utc.year <= 9998:
        raise ValueError("the time must be between 1970 and 9998")
    return utc


Timestamp = Annotated[AwareDatetime, AfterValidator(_utc_in_range)]
"""A timezone-aware time (ISO 8601 with an offset), returned in UTC; years 1970 to 9998."""


class ReportForm(BaseModel):
    """The text fields sent with a photo (multipart/form-data, next to the file field ``photo``)."""

    model_config = ConfigDict(extra="forbid")

    lat: float | None = Field(None, description="Latitude, decimal degrees (WGS 84), from the phone's geolocation.")
    lon: float | None = Field(None, description="Longitude, decimal degrees (WGS 84).")
    accuracy_m: float | None = Field(None, description="Horizontal accuracy of lat/lon, metres.")
    position: Literal["device", "photo", "placed"] = Field(
        "device",
        description="Where lat/lon come from: the phone's fix (device), the photo's own EXIF GPS read by the "
        "client before it resized the photo (photo; stored as source exif), or a pin a person placed on a map "
        "(placed; it wins over the photo's EXIF GPS and is stored as source placed).",
    )
    captured_at: Timestamp | None = Field(
        None, description="When the photo was taken, ISO 8601 with a UTC offset (e.g. 2024-05-01T09:30:00+02:00)."
    )
    camera_id: Name | None = Field(
        None, min_length=1, max_length=100,
        description="Which camera took the frame; camera keys only (a key tied to a camera: that camera's id).",
    )
    note: FreeText | None = Field(
        None, max_length=NOTE_MAX, description="Free text from the agent (control characters are removed)."
    )
    after_of: int | None = Field(
        None, ge=1, le=MAX_ID,
        description="The photo shows this open incident's place after cleaning (a crew member's proof). It joins no "
        "incident; managers see it beside the incident's photos, and \"cleaned\" is proposed when the model sees "
        "no deposit in it. Taken within after_photo_max_m of the incident (settings), not with agent_says_deposit.",
    )
    agent_says_deposit: bool = Field(
        False,
        description="true: the agent says there is a deposit whatever the model finds. A photo the model sees "
        "nothing in is then stored and grouped as a deposit, its incident marked to_review for the managers. "
        "Sending again, with true, a photo already sent without it upgrades that report in place (200).",
    )


class IncidentRef(BaseModel):
    """The incident a report belongs to."""

    id: int
    status: Status
    action: IncidentAction = Field(
        description="opened: this report opened it; joined: it joined it; late: taken before its cleaning."
    )
    url: str


class ReportLinks(BaseModel):
    """Where to fetch more about a report."""

    self: str
    image: str = Field(description="The stored photo (no metadata but its orientation and colour profile).")
    annotated_image: str = Field(description="The photo with the detections drawn, as JPEG.")


class ReportOut(BaseModel):
    """One uploaded photo and what the service made of it."""

    id: int
    received_at: datetime
    observed_at: datetime = Field(
        description="When the photo was taken (captured_at, else EXIF GPS time, else EXIF time with offset), "
        "else when it was received; used to group reports into incidents."
    )
    submitted_by: str
    camera_id: str | None
    note: str | None
    image: ImageInfo
    detections: list[Detection]
    verdict: Verdict
    location: Location
    model: ModelInfo
    incident: IncidentRef | None = Field(
        description="None when the photo shows no deposit and the agent did not send it as one."
    )
    agent_says_deposit: bool = Field(False, description="The agent sent it as a deposit whatever the model found.")
    after_of: int | None = Field(None, description="The incident whose place this photo shows after its cleaning.")
    review: ReviewOut | None = Field(
        None,
        description="A manager's current labels of the photo (its latest review); the detections stay the model's.",
    )
    photo_deleted_at: datetime | None = Field(
        None,
        description="When the photo stopped being kept (past retention, or erased): its image links then answer "
        "410. The report itself stays.",
    )
    erased_at: datetime | None = Field(
        None, description="When an administrator erased the report's photo and personal fields (note, sender)."
    )
    links: ReportLinks


class ReviewBox(BaseModel):
    """One box of a review, as stored: a class, where it is, and the detection it was kept from."""

    label: str = Field(description="A class of the project (dumped_waste, overflowing_bin, bin).")
    xyxy: tuple[float, float, float, float] = Field(
        description="x1, y1, x2, y2 in pixels of the upright photo (the detections' convention)."
    )
    detection: int | None = Field(description="Index in the report's detections it was kept from; null: drawn.")


class ReviewBoxIn(BaseModel):
    """One box a manager keeps (``detection``, with its class or box changed or not) or draws (no ``detection``)."""

    model_config = ConfigDict(extra="forbid")

    label: str | None = Field(
        None, max_length=64,
        description="A class of the project: dumped_waste, overflowing_bin (deposits) or bin (a normal bin). "
        "Omitted: the kept detection's class.",
    )
    xyxy: tuple[float, float, float, float] | None = Field(
        None,
        description="x1, y1, x2, y2 in pixels of the upright photo, 0 <= x1 < x2 <= width, 0 <= y1 < y2 <= height. "
        "Omitted: the kept detection's box.",
    )
    detection: int | None = Field(
        None, ge=0, le=MAX_ID,
        description="Index (from 0) in the report's detections of the detection kept; null or omitted for a drawn "
        "box, which then needs label and xyxy.",
    )


class ReviewIn(BaseModel):
    """A manager's labels of a report's photo. Detections left out of ``boxes`` are deleted."""

    model_config = ConfigDict(extra="forbid")

    deposit: bool = Field(
        description="true: there is a deposit (at least one box of a deposit class); false: a false alarm, no "
        "deposit in this photo (only boxes of normal bins, or none)."
    )
    boxes: list[ReviewBoxIn] = Field(default_factory=list, max_length=300)
    note: FreeText | None = Field(None, max_length=COMMENT_MAX)


class ReviewOut(BaseModel):
    """A review of a report's photo: who said what is in it, and when."""

    id: int
    report_id: int
    reviewer: str
    reviewed_at: datetime
    deposit: bool
    boxes: list[ReviewBox]
    source: Literal["review", "rejection"] = Field(
        description="review: a manager reviewed the photo; rejection: its incident was rejected as a false alarm."
    )
    note: str | None


class ReportPage(BaseModel):
    """A page of reports, newest first."""

    items: list[ReportOut]
    total: int
    limit: int
    offset: int


class TransitionOut(BaseModel):
    """One entry of an incident's history."""

    id: int
    from_status: Status | None
    to_status: Status
    at: datetime
    actor: str
    comment: str | None
    merged_into: int | None


class TransitionIn(BaseModel):
    """A requested status change."""

    model_config = ConfigDict(extra="forbid")

    to: Status
    comment: FreeText | None = Field(None, max_length=COMMENT_MAX)
    merged_into: int | None = Field(
        None, ge=1, le=MAX_ID, description="For 'duplicate': the incident this one duplicates."
    )
    force: bool = Field(
        False,
        description="For 'duplicate': merge into a target farther than the service's merge_max_distance_m (100 m "
        "by default) all the same; the distance and the override are written in the history. Ignored otherwise.",
    )
    negatives: bool = Field(
        True,
        description="For 'rejected': mark the photos of its reports that have no review as negatives (a review "
        "'no deposit' by you), for training the next model; false leaves them unreviewed. Ignored otherwise.",
    )
    scheduled_for: Timestamp | None = Field(
        None, description="For 'scheduled': when the crew is to clean it (ISO 8601 with an offset); Open311's "
        "expected_datetime.",
    )
    crew: Name | None = Field(None, min_length=1, max_length=100, description="For 'scheduled': which crew.")


class BulkTransitionIn(TransitionIn):
    """One status change for several incidents (not 'duplicate': a merge is one incident at a time)."""

    ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] = Field(min_length=1, max_length=500)


class BulkOutcome(BaseModel):
    """What became of one incident of a bulk change."""

    id: int
    done: bool
    status: Status | None = Field(description="Its status after the change (None: no such incident).")
    error: str | None = Field(None, description="Why it was not changed.")


class AddressOut(BaseModel):
    """The address nearest to an incident, from the Base Adresse Nationale (see serving.addresses)."""

    label: str = Field(description="One line, e.g. '12 bis Rue des Jardins, 57000 Metz'.")
    house_number: str | None = Field(description="Number and repetition index, e.g. '12 bis'; null for a lieu-dit.")
    street: str = Field(description="Street name, or the lieu-dit's name.")
    postcode: str
    city: str = Field(description="The commune.")
    distance_m: float = Field(description="From the incident to the address, metres (to 0.1 m).")


class IncidentProperties(BaseModel):
    """An incident's properties in GeoJSON."""

    id: int
    status: Status
    label: str = Field(description="Class of the incident's best detection (dumped_waste, overflowing_bin).")
    family: str
    first_seen: datetime
    last_seen: datetime
    report_count: int
    recurrence_count: int = Field(description="Deposits found at this place after a cleaning, up to this one.")
    recurrence_of: int | None
    merged_into: int | None
    max_score: float
    updated_at: datetime
    to_review: bool = Field(
        False,
        description="A report has no review yet and needs one: sent anyway where the model saw no deposit, or a "
        "deposit seen with low confidence (a score within 0.10 of its threshold). Look first.",
    )
    scheduled_for: datetime | None = Field(None, description="When the crew is to clean it (set when scheduled).")
    crew: str | None = Field(None, description="Which crew is to clean it (set when scheduled).")
    size: Literal["S", "M", "L"] | None = Field(
        None, description="S (a bag or two), M (a pile), L (a truckload): a manager's, else estimated from the photos."
    )
    size_source: Literal["manager", "estimate"] | None = Field(None, description="Whose size it is.")
    thumbnail: str | None = Field(
        None, description="A small JPEG of the incident's latest photo still kept (the map's list); null in exports."
    )
    address: AddressOut | None = Field(
        None,
        description="The nearest address, when the service has an address index (VIPARE_ADDRESSES_PATH) and one "
        "lies within VIPARE_ADDRESS_MAX_DISTANCE_M (100 m by default); null otherwise.",
    )


class PointGeometry(BaseModel):
    """A GeoJSON point, ``[lon, lat]``."""

    type: Literal["Point"] = "Point"
    coordinates: tuple[float, float]


class IncidentFeature(BaseModel):
    """An incident as a GeoJSON Feature."""

    type: Literal["Feature"] = "Feature"
    id: int
    geometry: PointGeometry
    properties: IncidentProperties


class Link(BaseModel):
    """A link to another page."""

    href: str
    rel: str
    type: str = "application/geo+json"


class FeatureCollection(BaseModel):
    """Incidents as a GeoJSON FeatureCollection, with paging members."""

    type: Literal["FeatureCollection"] = "FeatureCollection"
    features: list[IncidentFeature]
    numberMatched: int  # noqa: N815 - OGC API Features member names
    numberReturned: int  # noqa: N815
    links: list[Link] = Field(default_factory=list)


class IncidentDetail(IncidentFeature):
    """An incident with its reports and its history."""

    reports: list[ReportOut]
    history: list[TransitionOut]
    after_photos: list[ReportOut] = Field(
        default_factory=list, description="Photos of the place taken after a cleaning (proof), oldest first."
    )
    cleaned_proposed: bool = Field(
        False,
        description="The incident is open and the model sees no deposit in its latest photo taken after cleaning.",
    )


class KeyCreate(BaseModel):
    """A key to create."""

    model_config = ConfigDict(extra="forbid")

    role: Role
    name: Name = Field(
        min_length=1, max_length=200,
        description="Who or what holds it; shown in histories (no control characters or text-direction marks).",
    )
    camera_lat: float | None = Field(None, description="Camera keys: the camera's surveyed latitude.")
    camera_lon: float | None = None
    camera_accuracy_m: float | None = None
    camera_id: Name | None = Field(
        None, max_length=32,
        description="Camera keys: the registered camera (/v1/cameras) the key belongs to. Its frames are then "
        "that camera's: placed at the registry's position, and counted once with those of batch jobs.",
    )

    @model_validator(mode="after")
    def _camera_fields(self) -> KeyCreate:
        given = [v is not None for v in (self.camera_lat, self.camera_lon)]
        if self.camera_id is not None and self.role is not Role.CAMERA:
            raise ValueError("only camera keys belong to a camera (camera_id)")
        if any(given) and self.role is not Role.CAMERA:
            raise ValueError("only camera keys carry a position (camera_lat, camera_lon)")
        if any(given) and not all(given):
            raise ValueError("give both camera_lat and camera_lon, or neither")
        return self


class KeyWho(BaseModel):
    """The key that sent a request: its role (None in the open local mode, where no key exists) and name."""

    role: Role | None
    name: str


class KeyOut(BaseModel):
    """A key, without its secret."""

    id: int
    prefix: str
    role: Role
    name: str
    created_at: datetime
    revoked_at: datetime | None
    camera_lat: float | None
    camera_lon: float | None
    camera_id: str | None = Field(None, description="The registered camera the key belongs to, if any.")


class KeyCreated(KeyOut):
    """A new key, with the secret shown this once."""

    key: str = Field(description="Send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'. Shown once.")


class ModelOut(BaseModel):
    """The model the service runs and the thresholds it applies."""

    model: ModelInfo
    conf_threshold: float = Field(description="The detector's score threshold: a detection scores above it.")
    iou_threshold: float = Field(description="The detector's class-aware NMS overlap threshold.")
    box_merge_iou: float = Field(
        description="Each kept box is the score-weighted mean of its class's candidates overlapping it by more "
        "than this IoU; 1: boxes as the network drew them."
    )
    max_detections: int = Field(description="Most detections the detector keeps per photo.")
    verdict_threshold: float | None = Field(
        description="The one verdict threshold set for every class (VIPARE_VERDICT_THRESHOLD); null when the model's "
        "own calibrated thresholds apply."
    )
    verdict_thresholds: dict[str, float] = Field(
        description="Per deposit class, the score at or above which a detection makes a photo count as dumping."
    )
    deposit_classes: list[str]
    class_families: dict[str, str]
    ready: bool


class OriginalReadOut(BaseModel):
    """One read of a report's unblurred original (:mod:`serving.originals`)."""

    id: int
    report_id: int
    read_at: datetime
    reader: str
    reason: str


class OriginalReadPage(BaseModel):
    """A page of the log of reads of unblurred originals, newest first."""

    items: list[OriginalReadOut]
    total: int
    limit: int
    offset: int


class ExportJobOut(BaseModel):
    """An export job (serving.export_jobs): what it writes, how far it went, where its file is."""

    id: str = Field(description="32 hexadecimal digits.")
    format: Literal["csv", "geojson"]
    status: Literal["running", "done", "failed"]
    query: str = Field(description="The filters and CSV format it was started with, as a query string.")
    created_by: str
    created_at: datetime
    updated_at: datetime = Field(description="Its last progress.")
    incidents: int = Field(description="Incidents written so far; all of them once done.")
    size_bytes: int | None = None
    finished_at: datetime | None = None
    error: str | None = Field(None, description="Why it failed; start it again.")
    status_url: str
    file_url: str | None = Field(None, description="Once done: the file, with the same key.")

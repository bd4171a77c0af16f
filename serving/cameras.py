"""The camera registry: which street cameras exist, where they stand and which way they look.

A camera is fixed (a surveyed position: frames without GPS are placed there) or mobile (no position:
a sweeper's or a truck's camera, whose frames carry their own GPS). Its id is short and safe in a
folder name (:data:`CAMERA_ID_PATTERN`), since batch jobs read it from ``SOURCE/<camera_id>/``.

Cameras come from ``vipare cameras add``, ``vipare cameras import FILE`` (CSV or YAML),
``vipare batch --cameras FILE`` and ``PUT /v1/cameras/{id}``; :func:`upsert_cameras` is the one
way they are written. A camera file holds, per camera::

    id           required; 1-32 of A-Z a-z 0-9 . _ -, starting with a letter or a digit
    lat, lon     decimal degrees (WGS 84); both or neither (a mobile camera)
    accuracy_m   how well the position is known, metres
    heading_deg  which way it looks, degrees clockwise from north, [0, 360)
    description  free text ("corner of rue X and rue Y, facing the bins")

CSV: a header row with these names (only ``id`` is required). YAML: a list of mappings, or a mapping
with a ``cameras`` list.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from serving.models import Camera, utcnow
from serving.text import FreeText
from vipare.errors import LocationError
from vipare.geotag import CameraPosition, client_position

__all__ = [
    "CAMERA_FIELDS",
    "CAMERA_ID_PATTERN",
    "CameraFields",
    "CameraFileError",
    "CameraSpec",
    "list_cameras",
    "load_camera_file",
    "position_of",
    "upsert_cameras",
]

CAMERA_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$"
"""A camera id: 1 to 32 characters, letters, digits, ``.``, ``_``, ``-``, not starting with a punctuation mark."""

CAMERA_FIELDS = ("id", "lat", "lon", "accuracy_m", "heading_deg", "description")
"""The columns of a camera file, in the order ``vipare cameras list`` prints them."""

DESCRIPTION_MAX = 500


class CameraFileError(ValueError):
    """A camera file that cannot be read; the message names the file, the line or item, and the problem."""


class CameraFields(BaseModel):
    """A camera's fields but its id (``PUT /v1/cameras/{id}`` takes the id from the path)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lat: float | None = Field(None, description="Latitude, decimal degrees (WGS 84); none for a mobile camera.")
    lon: float | None = Field(None, description="Longitude, decimal degrees (WGS 84).")
    accuracy_m: float | None = Field(None, ge=0, description="How well the position is known, metres.")
    heading_deg: float | None = Field(
        None, ge=0, lt=360, description="Which way the camera looks, degrees clockwise from north."
    )
    description: FreeText | None = Field(None, max_length=DESCRIPTION_MAX)

    @field_validator("lat", "lon", "accuracy_m", "heading_deg")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @model_validator(mode="after")
    def _position(self) -> CameraFields:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("give both lat and lon, or neither (a mobile camera whose frames carry GPS)")
        if self.lat is not None and self.lon is not None:
            try:
                client_position(self.lat, self.lon, self.accuracy_m)
            except LocationError as exc:
                raise ValueError(str(exc)) from None
        return self


class CameraSpec(CameraFields):
    """One camera as given by a person: the fields of a camera file, of ``vipare cameras add`` or of the API."""

    id: str = Field(pattern=CAMERA_ID_PATTERN, description="Short id, safe in a folder name.")

    @classmethod
    def of(cls, camera: Camera) -> CameraSpec:
        """The spec of a registered camera."""
        return cls(
            id=camera.id, lat=camera.lat, lon=camera.lon, accuracy_m=camera.accuracy_m,
            heading_deg=camera.heading_deg, description=camera.description,
        )


def position_of(camera: Camera | CameraSpec) -> CameraPosition | None:
    """The camera's position for :func:`vipare.geotag.resolve_location`, or None for a mobile camera."""
    if camera.lat is None or camera.lon is None:
        return None
    return CameraPosition(camera_id=camera.id, lat=camera.lat, lon=camera.lon, accuracy_m=camera.accuracy_m)


def upsert_cameras(session: Session, specs: Iterable[CameraSpec]) -> tuple[int, int]:
    """Add the cameras that are new and replace the fields of those already registered; the caller commits.

    Args:
        session: a session in a write transaction.
        specs: the cameras; a later spec with the same id wins.

    Returns:
        ``(added, updated)``; a camera given with the fields it already has counts as neither.
    """
    added = updated = 0
    for spec in {s.id: s for s in specs}.values():
        row = session.get(Camera, spec.id)
        fields = spec.model_dump(exclude={"id"})
        if row is None:
            now = utcnow()
            session.add(Camera(id=spec.id, created_at=now, updated_at=now, **fields))
            added += 1
        elif CameraSpec.of(row) != spec:
            for name, value in fields.items():
                setattr(row, name, value)
            row.updated_at = utcnow()
            updated += 1
    session.flush()
    return added, updated


def list_cameras(session: Session, ids: Sequence[str] | None = None) -> list[Camera]:
    """Registered cameras by id (those of ``ids`` only, when given)."""
    query = select(Camera).order_by(Camera.id)
    if ids is not None:
        query = query.where(Camera.id.in_(list(ids)))
    return list(session.scalars(query))


# --------------------------------------------------------------------------------------------------
# Camera files


def load_camera_file(path: Path) -> list[CameraSpec]:
    """Read cameras from a CSV (``.csv``) or YAML (``.yaml``, ``.yml``) file (see the module doc).

    Raises:
        CameraFileError: unreadable file, unknown suffix or column, or an invalid camera.
        OSError: the file cannot be opened.
    """
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8-sig")
    if suffix == ".csv":
        return _from_csv(text, path.name)
    if suffix in (".yaml", ".yml"):
        return _from_yaml(text, path.name)
    raise CameraFileError(f"{path.name}: a camera file is .csv or .yaml, not {suffix or 'without a suffix'}")


def _spec(raw: dict[str, Any], where: str) -> CameraSpec:
    try:
        return CameraSpec.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'camera'}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise CameraFileError(f"{where}: {problems}") from None


def _from_csv(text: str, name: str) -> list[CameraSpec]:
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in reader.fieldnames or []]
    unknown = [h for h in header if h not in CAMERA_FIELDS]
    if "id" not in header or unknown:
        raise CameraFileError(
            f"{name}: the header must name the columns {', '.join(CAMERA_FIELDS)} (id required)"
            + (f"; unknown: {', '.join(unknown)}" if unknown else "")
        )
    specs = []
    for row in reader:
        values = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
        specs.append(_spec({k: v for k, v in values.items() if v != ""}, f"{name} line {reader.line_num}"))
    return specs


def _from_yaml(text: str, name: str) -> list[CameraSpec]:
    try:
        import yaml
    except ImportError as exc:  # pragma: no cover - pyyaml comes with the dev and train extras
        raise CameraFileError(f"{name}: reading YAML needs PyYAML (pip install pyyaml), or use CSV") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CameraFileError(f"{name}: not valid YAML ({exc})") from None
    if isinstance(data, dict) and set(data) == {"cameras"}:
        data = data["cameras"]
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise CameraFileError(f"{name}: expected a list of cameras (mappings), or a mapping with a 'cameras' list")
    return [_spec({str(k): v for k, v in item.items()}, f"{name} camera #{n}") for n, item in enumerate(data, 1)]

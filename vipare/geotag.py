"""Where a photo was taken: EXIF GPS, the caller's coordinates, or a fixed camera's position.

Three sources, in order of precedence:

1. ``exif``: the photo's own GPS block, read by :func:`gps_from_exif`. A missing or malformed block
   is not an error, just no fix (``None``).
2. ``client``: coordinates the caller sends with the photo (the phone's geolocation), a
   :class:`ClientPosition`. Invalid coordinates raise :class:`~vipare.errors.LocationError`.
3. ``camera``: the surveyed position of the fixed street camera that took the frame, a
   :class:`CameraPosition`.

:func:`resolve_location` picks one and, when the photo has both an EXIF fix and client coordinates,
records how far apart they are and flags a conflict above a distance threshold.

All coordinates are WGS 84 decimal degrees; distances and accuracies are metres.
"""

from __future__ import annotations

import math
import numbers
import re
import struct
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from PIL import Image
from PIL.ExifTags import GPS, IFD
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core.core_schema import ValidatorFunctionWrapHandler

from vipare.errors import LocationError
from vipare.results import GpsFix, Location, LocationSource

__all__ = [
    "DOP_TO_METRES",
    "EARTH_RADIUS_M",
    "CameraPosition",
    "ClientPosition",
    "camera_position",
    "client_position",
    "gps_from_exif",
    "haversine_m",
    "resolve_location",
]

EARTH_RADIUS_M = 6_371_008.8
"""Mean Earth radius (IUGG), metres; haversine distances are good to about 0.5 %."""

DOP_TO_METRES = 5.0
"""Metres of horizontal error per unit of GPSDOP, when a photo has no GPSHPositioningError.

Horizontal error is roughly DOP x UERE (user-equivalent range error); 5 m is a typical UERE for a
phone's single-frequency GPS under open sky. EXIF does not say whether GPSDOP is HDOP or PDOP
(GPSMeasureMode hints at it), so the estimate is coarse: ``GpsFix.accuracy_from`` says ``"dop"``.
"""
MAX_ACCURACY_M = 50_000.0
"""Least precise position accepted from a client or camera: beyond it, the position says no more than the city."""

# Errors Pillow may raise while reading a damaged GPS IFD out of an Exif block.
_EXIF_READ_ERRORS = (
    OSError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    EOFError,
    SyntaxError,
    OverflowError,
    ZeroDivisionError,
    struct.error,
)

_DATE_STAMP = re.compile(r"^\s*(\d{4})[:\-](\d{2})[:\-](\d{2})\s*$")


# --------------------------------------------------------------------------------------------------
# EXIF GPS


def gps_from_exif(exif: Image.Exif | Mapping[int, Any] | None) -> GpsFix | None:
    """Read a GPS fix from a photo's EXIF.

    Latitude and longitude come from GPSLatitude/GPSLongitude (degrees, minutes, seconds as
    rationals; a single value is taken as decimal degrees) with their N/S and E/W references.
    Altitude comes from GPSAltitude, negative when GPSAltitudeRef is 1 (below sea level); no
    reference means above. ``accuracy_m`` is GPSHPositioningError (tag 31) when present, otherwise
    GPSDOP (tag 11) x :data:`DOP_TO_METRES`; ``accuracy_from`` says which. ``gps_time`` joins
    GPSDateStamp and GPSTimeStamp (UTC) and needs both.

    A missing or malformed position means no fix: zero denominators (Pillow reads them as NaN), a
    missing N/S or E/W reference, wrong value types, negative components, latitude beyond 90 or
    longitude beyond 180, and exactly 0, 0 ("null island", what some phones write without a fix).
    Malformed altitude, accuracy or time only drop that field. Never raises.

    Args:
        exif: the image's EXIF (``Image.getexif()``), or the GPS IFD itself as a mapping of tag
            number to value (``exif.get_ifd(IFD.GPSInfo)``), or None.

    Returns:
        The fix, or None when the photo has no usable position.
    """
    gps = _gps_ifd(exif)
    if not gps:
        return None
    lat = _coordinate(gps.get(GPS.GPSLatitude), gps.get(GPS.GPSLatitudeRef), "NS", 90.0)
    lon = _coordinate(gps.get(GPS.GPSLongitude), gps.get(GPS.GPSLongitudeRef), "EW", 180.0)
    if lat is None or lon is None or (lat == 0.0 and lon == 0.0):
        return None
    accuracy_from: Literal["hpositioning_error", "dop"] | None = None
    accuracy = _non_negative(gps.get(GPS.GPSHPositioningError))
    if accuracy is not None:
        accuracy_from = "hpositioning_error"
    else:
        dop = _non_negative(gps.get(GPS.GPSDOP))
        if dop is not None and dop > 0.0:
            accuracy, accuracy_from = dop * DOP_TO_METRES, "dop"
    try:
        return GpsFix(
            lat=lat,
            lon=lon,
            altitude_m=_altitude(gps.get(GPS.GPSAltitude), gps.get(GPS.GPSAltitudeRef)),
            accuracy_m=accuracy,
            accuracy_from=accuracy_from,
            gps_time=_gps_time(gps.get(GPS.GPSDateStamp), gps.get(GPS.GPSTimeStamp)),
        )
    except ValidationError:  # every field is checked above; kept so that malformed EXIF never raises
        return None


def _gps_ifd(exif: Image.Exif | Mapping[int, Any] | None) -> Mapping[int, Any] | None:
    if exif is None:
        return None
    if isinstance(exif, Image.Exif):  # an Exif is itself a Mapping: test it first
        try:
            return exif.get_ifd(IFD.GPSInfo)
        except _EXIF_READ_ERRORS:
            return None
    return exif if isinstance(exif, Mapping) else None


def _real(value: object) -> float | None:
    """A finite float from an EXIF number (IFDRational, int, float), else None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        result = float(value)
    except (ValueError, TypeError, OverflowError, ZeroDivisionError):
        return None
    return result if math.isfinite(result) else None


def _non_negative(value: object) -> float | None:
    result = _real(value)
    return result if result is not None and result >= 0.0 else None


def _ref(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        return None
    value = value.strip("\x00 ").upper()
    return value or None


def _coordinate(value: object, ref: object, refs: str, limit: float) -> float | None:
    """Decimal degrees from (degrees, minutes, seconds) and a reference letter, or None."""
    if isinstance(value, numbers.Real):
        value = (value,)
    if not isinstance(value, (tuple, list)) or not 1 <= len(value) <= 3:
        return None
    parts = [_non_negative(v) for v in value]
    if any(p is None for p in parts):
        return None
    degrees = sum(p / 60.0**i for i, p in enumerate(parts) if p is not None)
    letter = _ref(ref)
    if letter is None or letter[0] not in refs or degrees > limit:
        return None
    return -degrees if letter[0] == refs[1] else degrees


def _altitude(value: object, ref: object) -> float | None:
    altitude = _non_negative(value)
    if altitude is None:
        return None
    if isinstance(ref, (bytes, bytearray)):
        ref = ref[0] if ref else None
    elif isinstance(ref, str):
        ref = int(ref) if ref.strip("\x00 ").isdigit() else -1
    if ref is None or ref == 0:
        return altitude
    if ref == 1:
        return -altitude
    return None  # an unknown reference: the sign is unknown


def _gps_time(date_stamp: object, time_stamp: object) -> datetime | None:
    """UTC datetime from GPSDateStamp ("YYYY:MM:DD") and GPSTimeStamp (hours, minutes, seconds)."""
    if isinstance(date_stamp, bytes):
        date_stamp = date_stamp.decode("ascii", "replace")
    if not isinstance(date_stamp, str) or not isinstance(time_stamp, (tuple, list)) or len(time_stamp) != 3:
        return None
    match = _DATE_STAMP.match(date_stamp.strip("\x00"))
    hours, minutes, seconds = (_non_negative(v) for v in time_stamp)
    if match is None or hours is None or minutes is None or seconds is None:
        return None
    if hours >= 24 or minutes >= 60 or seconds >= 61:  # 60 is a leap second
        return None
    try:
        day = datetime(int(match[1]), int(match[2]), int(match[3]), tzinfo=UTC)
    except ValueError:
        return None
    return day + timedelta(hours=hours, minutes=minutes, seconds=seconds)


# --------------------------------------------------------------------------------------------------
# Positions supplied by callers


class _Position(BaseModel):
    """Validated WGS 84 position. Invalid input raises LocationError, never a pydantic ValidationError."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lat: float
    lon: float
    accuracy_m: float | None = None

    @model_validator(mode="wrap")
    @classmethod
    def _location_errors(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            position = handler(data)
        except ValidationError as exc:
            raise LocationError(f"{cls.__name__}: {_describe(exc)}") from None
        _check_position(position.lat, position.lon, position.accuracy_m)
        return position


class ClientPosition(_Position):
    """Coordinates sent by the caller with the photo, e.g. the phone's geolocation.

    Attributes:
        lat: latitude, decimal degrees in [-90, 90].
        lon: longitude, decimal degrees in [-180, 180].
        accuracy_m: horizontal accuracy the device reports, metres (optional, >= 0).
        origin: where the caller took them: ``device`` (the phone's fix), ``photo`` (the photo's own
            EXIF GPS, read by the caller before it resized the photo and so dropped its EXIF) or
            ``placed`` (a person put a pin on a map; it then wins over the photo's EXIF GPS).

    Raises:
        LocationError: a value is missing, not a number, NaN or infinite, out of range, or exactly
            0, 0 (the placeholder many apps send when they have no fix). Construct it directly or
            with :func:`client_position`; both raise LocationError, not pydantic's ValidationError.
    """

    origin: Literal["device", "photo", "placed"] = "device"


class CameraPosition(_Position):
    """The surveyed position of a fixed street camera.

    Attributes:
        camera_id: the camera's identifier, stored with the location.
        lat: latitude, decimal degrees in [-90, 90].
        lon: longitude, decimal degrees in [-180, 180].
        accuracy_m: how well the position is known, metres (optional, >= 0).

    Raises:
        LocationError: as :class:`ClientPosition`, or an empty ``camera_id``.
    """

    camera_id: str

    @model_validator(mode="after")
    def _camera_id_not_blank(self) -> CameraPosition:
        if not self.camera_id.strip():
            raise LocationError("CameraPosition: camera_id is empty; give the camera's identifier.")
        return self


def client_position(lat: float, lon: float, accuracy_m: float | None = None) -> ClientPosition:
    """Build a :class:`ClientPosition`, raising :class:`~vipare.errors.LocationError` when invalid."""
    return ClientPosition(lat=lat, lon=lon, accuracy_m=accuracy_m)


def camera_position(
    camera_id: str, lat: float, lon: float, accuracy_m: float | None = None
) -> CameraPosition:
    """Build a :class:`CameraPosition`, raising :class:`~vipare.errors.LocationError` when invalid."""
    return CameraPosition(camera_id=camera_id, lat=lat, lon=lon, accuracy_m=accuracy_m)


_RANGE_HINT = "send latitude in [-90, 90] and longitude in [-180, 180], in decimal degrees (WGS 84)"


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "position"
        problems.append(f"{field}: {error['msg']}")
    about_coordinates = any(error["loc"][:1] in (("lat",), ("lon",)) for error in exc.errors())
    return "; ".join(problems) + (f"; {_RANGE_HINT}." if about_coordinates else ".")


def _check_position(lat: float, lon: float, accuracy_m: float | None) -> None:
    for name, value in (("latitude", lat), ("longitude", lon)):
        if not math.isfinite(value):
            raise LocationError(f"The {name} is {value}, not a number; {_RANGE_HINT}.")
    if not -90.0 <= lat <= 90.0 or not -180.0 <= lon <= 180.0:
        swapped = abs(lon) <= 90.0 < abs(lat) <= 180.0
        hint = " (latitude and longitude look swapped)" if swapped else ""
        raise LocationError(f"The position {lat}, {lon} is out of range{hint}; {_RANGE_HINT}.")
    if lat == 0.0 and lon == 0.0:
        raise LocationError(
            "The position 0, 0 is the placeholder apps send without a GPS fix; leave the coordinates out "
            "when the device has no position."
        )
    if accuracy_m is not None and not (math.isfinite(accuracy_m) and 0.0 <= accuracy_m <= MAX_ACCURACY_M):
        raise LocationError(
            f"The accuracy {accuracy_m} m is invalid; send a number of metres from 0 to {MAX_ACCURACY_M:.0f}, or none."
        )


# --------------------------------------------------------------------------------------------------
# Choosing a location


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance between two WGS 84 points, metres, on a sphere of :data:`EARTH_RADIUS_M`."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi, dlambda = phi2 - phi1, math.radians(lon2 - lon1)
    a = math.sin(dphi / 2.0) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlambda / 2.0) ** 2
    return 2.0 * EARTH_RADIUS_M * math.asin(math.sqrt(min(1.0, a)))


def resolve_location(
    exif: GpsFix | None,
    client: ClientPosition | None = None,
    camera: CameraPosition | None = None,
    *,
    conflict_m: float,
) -> Location | None:
    """Choose a photo's location: the EXIF fix, else the client's coordinates, else the camera's position.

    A position a person placed on a map (``client.origin == "placed"``) comes first: it is the
    correction of whatever the photo or the phone said. Client coordinates taken from the photo's
    own EXIF GPS (``origin == "photo"``) keep the source ``exif``.

    When both an EXIF fix and client coordinates exist, the EXIF fix wins and the distance between
    the two is stored as ``disagreement_m``; ``conflict`` is True when it exceeds ``conflict_m`` (a
    photo taken elsewhere and uploaded later, or a spoofed position: worth a look, not a rejection).

    Args:
        exif: the photo's GPS fix (``DecodedImage.gps``), or None.
        client: coordinates sent with the photo, or None.
        camera: the fixed camera that took the frame, or None; its id is kept when its position is used.
        conflict_m: distance in metres above which EXIF and client disagree (``Settings.gps_conflict_m``).

    Returns:
        The chosen location with its source, or None when no source has a position.
    """
    if not (math.isfinite(conflict_m) and conflict_m >= 0.0):
        raise ValueError(f"conflict_m must be a distance in metres >= 0, got {conflict_m}")
    if client is not None and client.origin == "placed":
        disagreement = None if exif is None else haversine_m(exif.lat, exif.lon, client.lat, client.lon)
        return Location(
            lat=client.lat,
            lon=client.lon,
            source="placed",
            accuracy_m=client.accuracy_m,
            disagreement_m=disagreement,
            conflict=disagreement is not None and disagreement > conflict_m,
        )
    if exif is not None:
        disagreement = None
        if client is not None:
            disagreement = haversine_m(exif.lat, exif.lon, client.lat, client.lon)
        return Location(
            lat=exif.lat,
            lon=exif.lon,
            source="exif",
            accuracy_m=exif.accuracy_m,
            altitude_m=exif.altitude_m,
            gps_time=exif.gps_time,
            disagreement_m=disagreement,
            conflict=disagreement is not None and disagreement > conflict_m,
        )
    if client is not None:
        source: LocationSource = "exif" if client.origin == "photo" else "client"
        return Location(lat=client.lat, lon=client.lon, source=source, accuracy_m=client.accuracy_m)
    if camera is not None:
        return Location(
            lat=camera.lat,
            lon=camera.lon,
            source="camera",
            accuracy_m=camera.accuracy_m,
            camera_id=camera.camera_id,
        )
    return None

"""Geotagging: EXIF GPS parsing, caller and camera positions, and choosing a location."""

from __future__ import annotations

import io
import math
from datetime import UTC, datetime
from typing import Any

import pytest
from PIL import Image
from PIL.ExifTags import GPS
from PIL.TiffImagePlugin import IFDRational

from tests.imagegen import make_photo
from vipare.errors import LocationError
from vipare.geotag import (
    DOP_TO_METRES,
    EARTH_RADIUS_M,
    CameraPosition,
    ClientPosition,
    camera_position,
    client_position,
    gps_from_exif,
    haversine_m,
    resolve_location,
)
from vipare.results import GpsFix

R = IFDRational
METZ: dict[int, Any] = {  # 49.1193 N, 6.1757 E
    GPS.GPSLatitudeRef: "N",
    GPS.GPSLatitude: (R(49), R(7), R(94_800, 10_000)),
    GPS.GPSLongitudeRef: "E",
    GPS.GPSLongitude: (R(6), R(10), R(325_200, 10_000)),
}


def _gps(**changes: Any) -> dict[int, Any]:
    """METZ with tags replaced (by GPS tag name); None removes a tag."""
    tags: dict[int, Any] = dict(METZ)
    for name, value in changes.items():
        if value is None:
            tags.pop(GPS[name], None)
        else:
            tags[GPS[name]] = value
    return tags


# --------------------------------------------------------------------------------------------------
# gps_from_exif


@pytest.mark.parametrize(
    ("tags", "lat", "lon"),
    [
        (METZ, 49.1193, 6.1757),
        (_gps(GPSLatitudeRef="S", GPSLongitudeRef="W"), -49.1193, -6.1757),
        (_gps(GPSLatitudeRef="s\x00", GPSLongitudeRef=b"W"), -49.1193, -6.1757),  # case, NUL, bytes
        (_gps(GPSLatitude=R(491193, 10000), GPSLongitude=(6.1757,)), 49.1193, 6.1757),  # decimal degrees
        (_gps(GPSLatitude=(49, 7.158, 0)), 49.1193, 6.1757),  # decimal minutes, plain numbers
        (_gps(GPSLatitude=(R(90), R(0), R(0)), GPSLongitude=(R(180), R(0), R(0))), 90.0, 180.0),
    ],
    ids=["metz", "south-west", "loose-refs", "decimal-degrees", "decimal-minutes", "limits"],
)
def test_position(tags: dict[int, Any], lat: float, lon: float) -> None:
    fix = gps_from_exif(tags)
    assert fix is not None
    assert (fix.lat, fix.lon) == (pytest.approx(lat, abs=1e-6), pytest.approx(lon, abs=1e-6))


@pytest.mark.parametrize(
    "tags",
    [
        None,
        {},
        _gps(GPSLatitude=(R(49, 0), R(7), R(0))),  # zero denominator: Pillow gives nan
        _gps(GPSLongitude=(R(0, 0), R(0), R(0))),  # 0/0
        _gps(GPSLatitudeRef=None),  # missing reference
        _gps(GPSLongitudeRef=""),
        _gps(GPSLatitudeRef="X"),
        _gps(GPSLatitudeRef=7),
        _gps(GPSLatitude="49.1193"),  # wrong types
        _gps(GPSLatitude=(R(49), "7", R(0))),
        _gps(GPSLatitude=(True, R(7), R(0))),
        _gps(GPSLatitude=(R(49), R(7), R(0), R(0))),
        _gps(GPSLatitude=()),
        _gps(GPSLongitude=None),
        _gps(GPSLatitude=(R(91), R(0), R(0))),  # out of range
        _gps(GPSLatitude=(R(90), R(0), R(1))),
        _gps(GPSLongitude=(R(181), R(0), R(0))),
        _gps(GPSLatitude=(-49.0, 7.0, 0.0)),  # negative component
        _gps(GPSLatitude=(float("inf"), 0.0, 0.0)),
        _gps(GPSLatitude=(R(0), R(0), R(0)), GPSLongitude=(R(0), R(0), R(0))),  # null island
        _gps(GPSLatitudeRef="S", GPSLatitude=(0, 0, 0), GPSLongitudeRef="W", GPSLongitude=(0, 0, 0)),
        "not a mapping",
    ],
)
def test_malformed_position_means_no_gps(tags: Any) -> None:
    assert gps_from_exif(tags) is None


@pytest.mark.parametrize(
    ("altitude", "ref", "expected"),
    [
        (R(1250, 10), b"\x00", 125.0),
        (R(4305, 10), b"\x01", -430.5),  # below sea level
        (R(4305, 10), 1, -430.5),
        (R(4305, 10), "1", -430.5),
        (R(50), None, 50.0),  # no reference: above sea level
        (R(50), b"\x07", None),  # unknown reference: the sign is unknown
        (R(1, 0), b"\x00", None),  # zero denominator
        ("high", b"\x00", None),
    ],
)
def test_altitude(altitude: Any, ref: Any, expected: float | None) -> None:
    fix = gps_from_exif(_gps(GPSAltitude=altitude, GPSAltitudeRef=ref))
    assert fix is not None  # a bad altitude drops the altitude only
    assert fix.altitude_m == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize(
    ("hpos", "dop", "accuracy", "source"),
    [
        (R(4200, 1000), None, 4.2, "hpositioning_error"),
        (None, R(25, 10), 2.5 * DOP_TO_METRES, "dop"),
        (R(3), R(25, 10), 3.0, "hpositioning_error"),  # the measured error wins over the estimate
        (R(3, 0), R(2), 2.0 * DOP_TO_METRES, "dop"),  # a broken error falls back to DOP
        (None, R(0), None, None),  # DOP 0 is no information
        (None, None, None, None),
        (-1.0, "x", None, None),
    ],
)
def test_accuracy(hpos: Any, dop: Any, accuracy: float | None, source: str | None) -> None:
    fix = gps_from_exif(_gps(GPSHPositioningError=hpos, GPSDOP=dop))
    assert fix is not None
    assert fix.accuracy_m == (pytest.approx(accuracy) if accuracy is not None else None)
    assert fix.accuracy_from == source


@pytest.mark.parametrize(
    ("date", "time", "expected"),
    [
        ("2024:05:17", (R(12), R(3), R(45, 10)), datetime(2024, 5, 17, 12, 3, 4, 500000, tzinfo=UTC)),
        ("2024-05-17", (12, 3, 4), datetime(2024, 5, 17, 12, 3, 4, tzinfo=UTC)),
        ("2016:12:31", (23, 59, 60), datetime(2017, 1, 1, 0, 0, 0, tzinfo=UTC)),  # leap second
        (None, (12, 3, 4), None),  # time without date
        ("2024:05:17", None, None),
        ("2024:02:30", (12, 3, 4), None),
        ("2024:05:17", (24, 0, 0), None),
        ("2024:05:17", (R(12), R(3, 0), R(4)), None),
        ("yesterday", (12, 3, 4), None),
    ],
)
def test_gps_time(date: Any, time: Any, expected: datetime | None) -> None:
    fix = gps_from_exif(_gps(GPSDateStamp=date, GPSTimeStamp=time))
    assert fix is not None and fix.gps_time == expected


def test_reads_a_pillow_exif_object() -> None:
    data = make_photo("JPEG", lat=-33.8688, lon=151.2093, altitude=-3.0, hpos_error=6.5)
    fix = gps_from_exif(Image.open(io.BytesIO(data)).getexif())
    assert fix is not None and fix.lat == pytest.approx(-33.8688, abs=1e-6)
    assert fix.altitude_m == pytest.approx(-3.0) and fix.accuracy_m == pytest.approx(6.5)
    assert gps_from_exif(Image.open(io.BytesIO(make_photo("JPEG"))).getexif()) is None


# --------------------------------------------------------------------------------------------------
# Caller and camera positions


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lat": 91.0, "lon": 6.0}, "out of range"),
        ({"lat": 49.0, "lon": -180.5}, "out of range"),
        ({"lat": 151.2, "lon": -33.8}, "look swapped"),
        ({"lat": math.nan, "lon": 6.0}, "not a number"),
        ({"lat": 49.0, "lon": math.inf}, "not a number"),
        ({"lat": "north", "lon": 6.0}, "lat: Input should be a valid number"),
        ({"lat": 49.0}, "lon: Field required"),
        ({"lat": 0.0, "lon": 0.0}, "placeholder"),
        ({"lat": 49.0, "lon": 6.0, "accuracy_m": -5.0}, "accuracy"),
        ({"lat": 49.0, "lon": 6.0, "accuracy_m": math.nan}, "accuracy"),
        ({"lat": 49.0, "lon": 6.0, "accuracy_m": 1e308}, "from 0 to 50000"),
        ({"lat": 49.0, "lon": 6.0, "altitude": 3.0}, "Extra inputs"),
    ],
)
def test_invalid_client_position(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(LocationError, match=message):
        ClientPosition(**kwargs)


def test_valid_positions() -> None:
    client = client_position(49.1193, 6.1757, 12.0)
    assert (client.lat, client.lon, client.accuracy_m) == (49.1193, 6.1757, 12.0)
    assert ClientPosition.model_validate_json('{"lat": -33.8688, "lon": 151.2093}').accuracy_m is None
    camera = camera_position("cam-7", 49.1, 6.2)
    assert camera.camera_id == "cam-7"
    with pytest.raises(LocationError, match="camera_id is empty"):
        camera_position(" ", 49.1, 6.2)
    with pytest.raises(LocationError, match="out of range"):
        CameraPosition(camera_id="cam-7", lat=100, lon=6.2)
    with pytest.raises(Exception, match="frozen"):
        client.lat = 1.0  # type: ignore[misc]


# --------------------------------------------------------------------------------------------------
# Choosing a location


@pytest.mark.parametrize(
    ("lat1", "lon1", "lat2", "lon2", "metres"),
    [
        (49.1193, 6.1757, 49.1193, 6.1757, 0.0),
        (0.0, 0.0, 1.0, 0.0, math.pi / 180 * EARTH_RADIUS_M),
        (0.0, 179.5, 0.0, -179.5, math.pi / 180 * EARTH_RADIUS_M),  # across the antimeridian
        (90.0, 0.0, -90.0, 0.0, math.pi * EARTH_RADIUS_M),
        # Rosetta Code's reference: Nashville BNA - Los Angeles LAX, 2887.2599506 km with R = 6372.8 km
        (36.12, -86.67, 33.94, -118.40, 2_887_259.9506 * EARTH_RADIUS_M / 6_372_800.0),
    ],
)
def test_haversine(lat1: float, lon1: float, lat2: float, lon2: float, metres: float) -> None:
    assert haversine_m(lat1, lon1, lat2, lon2) == pytest.approx(metres, rel=1e-9, abs=1e-6)
    assert haversine_m(lat2, lon2, lat1, lon1) == pytest.approx(metres, rel=1e-9, abs=1e-6)


EXIF_FIX = GpsFix(
    lat=49.1193,
    lon=6.1757,
    altitude_m=-2.0,
    accuracy_m=4.0,
    accuracy_from="hpositioning_error",
    gps_time=datetime(2024, 5, 17, 12, 0, tzinfo=UTC),
)
CLIENT_NEAR = ClientPosition(lat=49.1202, lon=6.1757, accuracy_m=20.0)  # 100 m north
CLIENT_FAR = ClientPosition(lat=49.1283, lon=6.1757)  # 1 km north
CAMERA = CameraPosition(camera_id="cam-7", lat=49.11, lon=6.17, accuracy_m=2.0)
CLIENT_PLACED = ClientPosition(lat=49.1283, lon=6.1757, origin="placed")
CLIENT_FROM_PHOTO = ClientPosition(lat=49.1202, lon=6.1757, origin="photo")


@pytest.mark.parametrize(
    ("exif", "client", "camera", "source", "lat", "camera_id"),
    [
        (EXIF_FIX, CLIENT_NEAR, CAMERA, "exif", 49.1193, None),
        (EXIF_FIX, None, None, "exif", 49.1193, None),
        (None, CLIENT_NEAR, CAMERA, "client", 49.1202, None),
        (None, None, CAMERA, "camera", 49.11, "cam-7"),
        (None, None, None, None, None, None),
        (EXIF_FIX, CLIENT_PLACED, CAMERA, "placed", 49.1283, None),  # a pin a person placed wins
        (None, CLIENT_PLACED, CAMERA, "placed", 49.1283, None),
        (EXIF_FIX, CLIENT_FROM_PHOTO, None, "exif", 49.1193, None),  # the file's own EXIF first
        (None, CLIENT_FROM_PHOTO, CAMERA, "exif", 49.1202, None),  # the photo's GPS, read by the client
    ],
)
def test_precedence(
    exif: GpsFix | None,
    client: ClientPosition | None,
    camera: CameraPosition | None,
    source: str | None,
    lat: float | None,
    camera_id: str | None,
) -> None:
    location = resolve_location(exif, client, camera, conflict_m=250.0)
    if source is None:
        assert location is None
        return
    assert location is not None
    assert (location.source, location.lat, location.camera_id) == (source, lat, camera_id)


def test_exif_fields_are_carried() -> None:
    location = resolve_location(EXIF_FIX, conflict_m=250.0)
    assert location is not None
    assert (location.altitude_m, location.accuracy_m, location.gps_time) == (-2.0, 4.0, EXIF_FIX.gps_time)
    assert location.disagreement_m is None and location.conflict is False
    client = resolve_location(None, CLIENT_NEAR, conflict_m=250.0)
    assert client is not None and client.accuracy_m == 20.0 and client.disagreement_m is None
    camera = resolve_location(None, None, CAMERA, conflict_m=250.0)
    assert camera is not None and camera.accuracy_m == 2.0


@pytest.mark.parametrize(
    ("client", "conflict_m", "disagreement", "conflict"),
    [
        (CLIENT_NEAR, 250.0, 100.1, False),
        (CLIENT_FAR, 250.0, 1000.8, True),
        (CLIENT_NEAR, 50.0, 100.1, True),
        (CLIENT_FAR, 2000.0, 1000.8, False),
    ],
)
def test_conflict_flag(
    client: ClientPosition, conflict_m: float, disagreement: float, conflict: bool
) -> None:
    location = resolve_location(EXIF_FIX, client, conflict_m=conflict_m)
    assert location is not None and location.source == "exif"
    assert location.disagreement_m == pytest.approx(disagreement, abs=0.5)
    assert location.conflict is conflict


@pytest.mark.parametrize("conflict_m", [-1.0, math.nan, math.inf])
def test_conflict_distance_must_be_a_distance(conflict_m: float) -> None:
    with pytest.raises(ValueError, match="conflict_m"):
        resolve_location(EXIF_FIX, CLIENT_NEAR, conflict_m=conflict_m)


def test_a_placed_pin_keeps_how_far_it_is_from_the_photos_gps() -> None:
    location = resolve_location(EXIF_FIX, CLIENT_PLACED, conflict_m=250.0)
    assert location is not None and location.source == "placed"
    assert location.disagreement_m == pytest.approx(1000.8, abs=0.5) and location.conflict is True
    with pytest.raises(LocationError):
        ClientPosition(lat=49.0, lon=6.0, origin="guessed")  # type: ignore[arg-type]

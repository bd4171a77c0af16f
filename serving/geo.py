"""Positions as the incidents need them: a box as an SQL condition, the box around a point, longitudes.

Longitudes are compared and averaged across the antimeridian: a box with ``min_lon > max_lon``
crosses it, and the mean of 179.9 and -179.9 is 180 (brought back to -180), not 0.
"""

from __future__ import annotations

import math

from sqlalchemy import ColumnElement, and_, or_
from sqlalchemy.orm import InstrumentedAttribute

from vipare.geotag import EARTH_RADIUS_M

__all__ = ["box_around", "lat_lon_box", "lon_delta", "wrap_lon"]


def lat_lon_box(
    lat_col: InstrumentedAttribute[float],
    lon_col: InstrumentedAttribute[float],
    min_lon: float,
    min_lat: float,
    max_lon: float,
    max_lat: float,
) -> ColumnElement[bool]:
    """SQL condition: the point lies in the box; ``min_lon > max_lon`` means the box crosses the antimeridian."""
    lat_ok = lat_col.between(min_lat, max_lat)
    if min_lon <= max_lon:
        return and_(lat_ok, lon_col.between(min_lon, max_lon))
    return and_(lat_ok, or_(lon_col >= min_lon, lon_col <= max_lon))


def box_around(lat: float, lon: float, radius_m: float) -> tuple[float, float, float, float]:
    """(min_lon, min_lat, max_lon, max_lat) of a box holding every point within ``radius_m``."""
    dlat = math.degrees(radius_m / EARTH_RADIUS_M)
    cos_lat = math.cos(math.radians(min(89.9, abs(lat) + dlat)))
    dlon = min(180.0, dlat / cos_lat)
    min_lon, max_lon = lon - dlon, lon + dlon
    if dlon >= 180.0:
        min_lon, max_lon = -180.0, 180.0
    elif min_lon < -180.0:
        min_lon += 360.0
    elif max_lon > 180.0:
        max_lon -= 360.0
    return min_lon, max(-90.0, lat - dlat), max_lon, min(90.0, lat + dlat)


def lon_delta(from_lon: float, to_lon: float) -> float:
    """Signed shortest difference of longitudes, degrees in [-180, 180) (across the antimeridian too)."""
    return (to_lon - from_lon + 180.0) % 360.0 - 180.0


def wrap_lon(lon: float) -> float:
    """A longitude brought back into [-180, 180)."""
    return (lon + 180.0) % 360.0 - 180.0

"""A grid over the globe: the cell of a position, and the cells a place around a position covers.

Cells are :data:`CELL_DEGREES` square in degrees (about 111 m north-south, 73 m east-west at Metz),
numbered ``row * COLUMNS + column`` from the south-west corner; the numbers fit a signed 64-bit
integer. An incident's cell is stored with it (``incidents.cell``, kept up to date by
:mod:`serving.models`) and indexed, so that finding the incidents near a new report is an equality
lookup on a handful of cells on SQLite and PostgreSQL alike, whatever the number of incidents
elsewhere. The same numbers name the places a write transaction locks (:func:`serving.db.write_session`):
two transactions whose places share no cell cannot touch the same incidents.

A place wider than :data:`MAX_CELLS` cells (a grouping radius of kilometres) has no cells:
callers then fall back to a box on ``lat``/``lon`` and a lock on everything.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from serving.geo import box_around

__all__ = ["CELL_DEGREES", "COLUMNS", "MAX_CELLS", "ROWS", "cell_of", "cells_around", "cells_in_box", "cells_of_places"]

CELL_DEGREES = 0.001
_PER_DEGREE = 1000.0  # 1 / CELL_DEGREES, multiplied rather than divided: the same float on every platform
ROWS = 180_000
COLUMNS = 360_000
MAX_CELLS = 64
"""The most cells one place may cover (a 30 m radius covers four at most, outside polar regions)."""


def _row(lat: float) -> int:
    return min(ROWS - 1, max(0, math.floor((lat + 90.0) * _PER_DEGREE)))


def _column(lon: float) -> int:
    return min(COLUMNS - 1, max(0, math.floor((lon + 180.0) * _PER_DEGREE)))


def cell_of(lat: float, lon: float) -> int:
    """The cell holding a position (WGS 84 degrees, longitude in [-180, 180])."""
    return _row(lat) * COLUMNS + _column(lon)


def cells_in_box(min_lon: float, min_lat: float, max_lon: float, max_lat: float) -> list[int] | None:
    """Every cell a box touches, ascending; None above :data:`MAX_CELLS`.

    ``min_lon > max_lon`` crosses the antimeridian.
    """
    rows = range(_row(min_lat), _row(max_lat) + 1)
    if min_lon <= max_lon:
        columns = list(range(_column(min_lon), _column(max_lon) + 1))
    else:
        columns = [*range(_column(min_lon), COLUMNS), *range(0, _column(max_lon) + 1)]
    if len(rows) * len(columns) > MAX_CELLS:
        return None
    return sorted(row * COLUMNS + column for row in rows for column in columns)


def cells_around(lat: float, lon: float, radius_m: float) -> list[int] | None:
    """The cells holding every point within ``radius_m`` of a position, ascending; None above :data:`MAX_CELLS`."""
    return cells_in_box(*box_around(lat, lon, radius_m))


def cells_of_places(places: Iterable[tuple[float, float]], radius_m: float) -> list[int] | None:
    """The cells around several positions ``(lat, lon)``, ascending and distinct; None when one place has none."""
    cells: set[int] = set()
    for lat, lon in places:
        around = cells_around(lat, lon, radius_m)
        if around is None:
            return None
        cells.update(around)
    return sorted(cells)

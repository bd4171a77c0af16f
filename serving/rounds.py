"""A day's round: the order in which a crew visits its scheduled incidents, starting from a depot.

:func:`plan_round` is a pure function: a depot and stops, each ``(lon, lat)`` in WGS 84 degrees, in;
a :class:`RoundPlan` out (the visiting order, each leg's length and the total, in metres). The round
is closed (back to the depot) by default, or open (it ends at the last stop).

Distances are great-circle (haversine) metres on a sphere of :data:`vipare.geotag.EARTH_RADIUS_M`,
one numpy matrix for all pairs. A crew drives streets, not straight lines, but within a city the
detour factor varies little from leg to leg, so the order shortest as the crow flies is a good order
by road, and the planner needs no road network.

The algorithm is a local search, not an exact solver:

1. construction: nearest neighbour from the depot (ties to the stop given first);
2. local search, until no move shortens the round by more than :data:`TOLERANCE_M`:
   - 2-opt: reverse a stretch of the round (replaces two legs by two others);
   - Or-opt: move a run of 1 to :data:`OR_OPT_MAX_RUN` consecutive stops elsewhere in the round,
     either way round.
   Each step makes the best move of all, found as one numpy array of gains per kind of move, so one
   step costs O(n^2) array work;
3. iterated local search: :data:`KICKS` times, swap two stretches of the best round so far (a
   double-bridge kick, a change no single 2-opt move makes), search again, and keep the
   result if it is shorter. The kicks come from a generator seeded with :data:`KICK_SEED`, so the
   same input always gives the same round.

Why not OR-Tools: it would add a 30 MB wheel (ortools 9.15, plus protobuf, absl-py and
immutabledict) to the serve extra for one small feature, and its metaheuristics run until a time
limit, so the same day could be planned differently on a busier machine. The local search is
deterministic and small, and what it gives up is measured: ``python -m benchmarks.bench_round``
prints the planning time for 200 stops and the gap to the brute-force optimum on small rounds
(``--small-cases 300``: local search alone is optimal on 296 of 300 rounds of 3 to 9 stops and
3.75 % longer at worst, a round that sets off the wrong way from the depot; with the kicks, 299 and
under 0.01 %), and ``tests/serving/test_rounds.py`` holds ten rounds of up to nine stops within
5 % of their optimum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from vipare.geotag import EARTH_RADIUS_M

__all__ = [
    "KICKS",
    "KICK_SEED",
    "OR_OPT_MAX_RUN",
    "TOLERANCE_M",
    "RoundPlan",
    "Stop",
    "StopId",
    "distance_matrix_m",
    "plan_round",
]

StopId = int | str
"""What identifies a stop: an incident's id, or any other label unique within the round."""

TOLERANCE_M = 1e-6
"""A move is made only when it shortens the round by more than this, metres (floating-point noise)."""

OR_OPT_MAX_RUN = 3
"""The longest run of consecutive stops an Or-opt move carries elsewhere."""

KICKS = 20
"""How many double-bridge kicks follow the first local optimum, by default (each then searched again)."""

KICK_SEED = 0
"""The seed of the kicks' generator: the same input, the same round."""


@dataclass(frozen=True, slots=True)
class Stop:
    """A place to visit: ``lon`` and ``lat`` in WGS 84 degrees."""

    id: StopId
    lon: float
    lat: float


@dataclass(frozen=True, slots=True)
class RoundPlan:
    """A planned round.

    Attributes:
        depot: ``(lon, lat)`` of the depot, degrees.
        stops: the stops in visiting order.
        legs_m: each leg's great-circle length, metres: leg ``k`` ends at ``stops[k]``; a closed round
            has one more leg, from the last stop back to the depot. No stops: no legs.
        closed: whether the round returns to the depot.
    """

    depot: tuple[float, float]
    stops: tuple[Stop, ...]
    legs_m: tuple[float, ...]
    closed: bool

    @property
    def order(self) -> tuple[StopId, ...]:
        """The stops' ids in visiting order."""
        return tuple(stop.id for stop in self.stops)

    @property
    def length_m(self) -> float:
        """The round's total length, metres."""
        return math.fsum(self.legs_m)

    def path(self) -> list[tuple[float, float]]:
        """The places in the order driven, ``(lon, lat)`` degrees: the depot, the stops, the depot again if closed."""
        places = [self.depot, *((stop.lon, stop.lat) for stop in self.stops)]
        if self.closed and self.stops:
            places.append(self.depot)
        return places


def distance_matrix_m(lon: npt.ArrayLike, lat: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Great-circle distances between all pairs of points, metres.

    Args:
        lon: shape ``(n,)``, longitudes in degrees.
        lat: shape ``(n,)``, latitudes in degrees.

    Returns:
        Shape ``(n, n)``, symmetric, zero on the diagonal.
    """
    lam = np.radians(np.asarray(lon, dtype=np.float64))
    phi = np.radians(np.asarray(lat, dtype=np.float64))
    half_dphi = np.sin((phi[:, None] - phi[None, :]) / 2.0)
    half_dlam = np.sin((lam[:, None] - lam[None, :]) / 2.0)
    a = half_dphi**2 + np.cos(phi)[:, None] * np.cos(phi)[None, :] * half_dlam**2
    distances: npt.NDArray[np.float64] = 2.0 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
    return distances


def plan_round(
    depot: tuple[float, float],
    stops: Sequence[Stop],
    *,
    closed: bool = True,
    improve: bool = True,
    kicks: int = KICKS,
) -> RoundPlan:
    """Plan the order in which to visit ``stops`` from ``depot`` (the module docstring says how).

    Args:
        depot: ``(lon, lat)`` in WGS 84 degrees.
        stops: the places to visit, ids unique; positions may repeat.
        closed: True: the round ends back at the depot; False: it ends at the last stop.
        improve: False: nearest-neighbour construction only (a baseline to compare with).
        kicks: how many double-bridge kicks to try after the first local optimum; 0: none.

    Returns:
        The plan; the same input always gives the same plan.

    Raises:
        ValueError: a position is not finite or out of range, an id appears twice, or ``kicks`` < 0.
    """
    if kicks < 0:
        raise ValueError(f"kicks must be 0 or more, not {kicks}")
    _check_position("the depot", depot[0], depot[1])
    seen: set[StopId] = set()
    for stop in stops:
        _check_position(f"stop {stop.id!r}", stop.lon, stop.lat)
        if stop.id in seen:
            raise ValueError(f"stop id {stop.id!r} appears twice; give each stop of a round its own id")
        seen.add(stop.id)

    n = len(stops)
    lon = [depot[0], *(stop.lon for stop in stops)]
    lat = [depot[1], *(stop.lat for stop in stops)]
    distances = _with_end(distance_matrix_m(lon, lat), closed)
    tour = _nearest_neighbour(distances)
    if improve:
        tour = _iterated_local_search(distances, tour, kicks)
    legs = distances[tour[:-1], tour[1:]]
    if not closed or n == 0:
        legs = legs[:-1]  # the free end's leg (zero), or the depot-to-depot leg of an empty round
    return RoundPlan(
        depot=(float(depot[0]), float(depot[1])),
        stops=tuple(stops[i - 1] for i in tour[1:-1]),
        legs_m=tuple(float(leg) for leg in legs),
        closed=closed,
    )


def _check_position(what: str, lon: float, lat: float) -> None:
    """Raise ValueError naming ``what`` unless ``lon``, ``lat`` are finite WGS 84 degrees in range."""
    try:
        lon, lat = float(lon), float(lat)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: position ({lon!r}, {lat!r}) is not a pair of numbers (lon, lat)") from None
    if not (math.isfinite(lon) and math.isfinite(lat)):
        raise ValueError(f"{what}: position ({lon}, {lat}) is not finite; give (lon, lat) in degrees")
    if not -90.0 <= lat <= 90.0:
        raise ValueError(
            f"{what}: latitude {lat} is outside [-90, 90] degrees; positions are (lon, lat), longitude first"
        )
    if not -180.0 <= lon <= 180.0:
        raise ValueError(f"{what}: longitude {lon} is outside [-180, 180] degrees")


def _with_end(distances: npt.NDArray[np.float64], closed: bool) -> npt.NDArray[np.float64]:
    """The matrix with an end node appended: a copy of the depot (closed), or a free end at distance 0 (open).

    Node 0 is the depot, 1..n the stops, n + 1 the end; a tour is then a path from 0 to n + 1 whose
    two ends never move, and both cases are searched alike.
    """
    n = len(distances)
    out = np.zeros((n + 1, n + 1))
    out[:n, :n] = distances
    if closed:
        out[n, :n] = out[:n, n] = distances[0]
    return out


def _nearest_neighbour(distances: npt.NDArray[np.float64]) -> npt.NDArray[np.intp]:
    """Tour ``[0, ..., end]`` going each time to the nearest unvisited stop (ties: the lowest index)."""
    end = len(distances) - 1
    unvisited = np.ones(end + 1, dtype=bool)
    unvisited[[0, end]] = False
    tour = [0]
    for _ in range(end - 1):
        row = np.where(unvisited, distances[tour[-1]], np.inf)
        nearest = int(np.argmin(row))
        unvisited[nearest] = False
        tour.append(nearest)
    tour.append(end)
    return np.asarray(tour, dtype=np.intp)


def _length(distances: npt.NDArray[np.float64], tour: npt.NDArray[np.intp]) -> float:
    """The tour's length, metres."""
    return float(distances[tour[:-1], tour[1:]].sum())


def _iterated_local_search(
    distances: npt.NDArray[np.float64], tour: npt.NDArray[np.intp], kicks: int
) -> npt.NDArray[np.intp]:
    """Local search, then ``kicks`` times: a double-bridge kick, local search, kept if shorter."""
    best = _local_search(distances, tour)
    best_length = _length(distances, best)
    rng = np.random.default_rng(KICK_SEED)
    for _ in range(kicks if len(tour) >= 5 else 0):  # a kick needs three stops
        candidate = _local_search(distances, _double_bridge(best, rng))
        length = _length(distances, candidate)
        if length < best_length - TOLERANCE_M:
            best, best_length = candidate, length
    return best


def _double_bridge(tour: npt.NDArray[np.intp], rng: np.random.Generator) -> npt.NDArray[np.intp]:
    """``tour`` with two stretches of its interior swapped: A B C D -> A C B D (ends kept)."""
    p1, p2, p3 = np.sort(rng.choice(np.arange(1, len(tour) - 1), size=3, replace=False))
    return np.concatenate([tour[:p1], tour[p2:p3], tour[p1:p2], tour[p3:]])


def _local_search(distances: npt.NDArray[np.float64], tour: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
    """Apply the best 2-opt or Or-opt move until none shortens the tour by more than :data:`TOLERANCE_M`."""
    while True:
        change, i, j = _best_two_opt(distances, tour)
        best: tuple[float, str, int, int, int, bool] = (change, "2-opt", i, j, 0, False)
        for run in range(1, OR_OPT_MAX_RUN + 1):
            change, start, edge, reverse = _best_or_opt(distances, tour, run)
            if change < best[0]:
                best = (change, "or-opt", start, edge, run, reverse)
        change, kind, a, b, run, reverse = best
        if change >= -TOLERANCE_M:
            return tour
        tour = _reversed(tour, a, b) if kind == "2-opt" else _moved(tour, a, run, b, reverse)


def _best_two_opt(distances: npt.NDArray[np.float64], tour: npt.NDArray[np.intp]) -> tuple[float, int, int]:
    """The best 2-opt move: (change in length in metres, i, j) for reversing ``tour[i + 1 : j + 1]``.

    Edge ``k`` joins ``tour[k]`` and ``tour[k + 1]``; reversing between edges ``i < j`` replaces them
    by ``(tour[i], tour[j])`` and ``(tour[i + 1], tour[j + 1])``.
    """
    a, b = tour[:-1], tour[1:]
    edges = distances[a, b]
    change = distances[np.ix_(a, a)] + distances[np.ix_(b, b)] - edges[:, None] - edges[None, :]
    change = np.triu(change, k=2)  # j >= i + 2; the rest is no move (zero)
    flat = int(np.argmin(change))
    i, j = divmod(flat, len(edges))
    return float(change[i, j]), i, j


def _best_or_opt(
    distances: npt.NDArray[np.float64], tour: npt.NDArray[np.intp], run: int
) -> tuple[float, int, int, bool]:
    """The best move of ``run`` consecutive stops: (change in length in metres, start, edge, reversed).

    The stops ``tour[start : start + run]`` leave their place and go between ``tour[edge]`` and
    ``tour[edge + 1]``, reversed or not; the edges touching the run itself are not candidates.
    """
    last_start = len(tour) - 1 - run  # the end node stays put
    if last_start < 1:
        return 0.0, 0, 0, False
    starts = np.arange(1, last_start + 1)
    first, last = tour[starts], tour[starts + run - 1]
    before, after = tour[starts - 1], tour[starts + run]
    removal = distances[before, after] - distances[before, first] - distances[last, after]
    a, b = tour[:-1], tour[1:]
    edges = distances[a, b]
    forward = distances[np.ix_(first, a)] + distances[np.ix_(last, b)] - edges[None, :]
    backward = distances[np.ix_(last, a)] + distances[np.ix_(first, b)] - edges[None, :]
    insertion = np.minimum(forward, backward)
    edge_index = np.arange(len(edges))
    touching = (edge_index[None, :] >= starts[:, None] - 1) & (edge_index[None, :] <= starts[:, None] + run - 1)
    change = np.where(touching, np.inf, insertion + removal[:, None])
    flat = int(np.argmin(change))
    row, edge = divmod(flat, len(edges))
    if not np.isfinite(change[row, edge]):
        return 0.0, 0, 0, False
    return float(change[row, edge]), int(starts[row]), edge, bool(backward[row, edge] < forward[row, edge])


def _reversed(tour: npt.NDArray[np.intp], i: int, j: int) -> npt.NDArray[np.intp]:
    """``tour`` with ``tour[i + 1 : j + 1]`` reversed."""
    out = tour.copy()
    out[i + 1 : j + 1] = tour[i + 1 : j + 1][::-1]
    return out


def _moved(tour: npt.NDArray[np.intp], start: int, run: int, edge: int, reverse: bool) -> npt.NDArray[np.intp]:
    """``tour`` with ``tour[start : start + run]`` moved between ``tour[edge]`` and ``tour[edge + 1]``."""
    segment = tour[start : start + run]
    if reverse:
        segment = segment[::-1]
    rest = np.concatenate([tour[:start], tour[start + run :]])
    at = edge + 1 if edge < start else edge + 1 - run
    return np.concatenate([rest[:at], segment, rest[at:]])

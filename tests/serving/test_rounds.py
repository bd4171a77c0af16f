"""A day's round: distances, the planner against brute force, edge cases, and its GPX and GeoJSON."""

from __future__ import annotations

import itertools
import json
import math
import random
import xml.etree.ElementTree as ET

import gpxpy
import numpy as np
import pytest

from serving import round_exports, rounds
from serving.round_exports import round_geojson, round_gpx
from serving.rounds import RoundPlan, Stop, StopId, distance_matrix_m, plan_round
from vipare.geotag import EARTH_RADIUS_M

GPX_NS = {"gpx": "http://www.topografix.com/GPX/1/1"}
ONE_DEGREE_M = EARTH_RADIUS_M * math.pi / 180.0
BERLIN = (13.40, 52.52)


def test_all_names_exist() -> None:
    for module in (rounds, round_exports):
        assert all(hasattr(module, name) for name in module.__all__)


def city_case(seed: int, count: int) -> tuple[tuple[float, float], list[Stop]]:
    """A depot and ``count`` stops drawn uniformly over a 20 km x 11 km box around Berlin's centre."""
    rng = random.Random(seed)

    def place() -> tuple[float, float]:
        return BERLIN[0] + rng.uniform(-0.15, 0.15), BERLIN[1] + rng.uniform(-0.05, 0.05)

    return place(), [Stop(f"incident-{k}", *place()) for k in range(count)]


def brute_force_m(depot: tuple[float, float], stops: list[Stop], closed: bool) -> float:
    """The shortest round over every visiting order, metres."""
    distances = distance_matrix_m([depot[0], *(s.lon for s in stops)], [depot[1], *(s.lat for s in stops)])
    orders = np.array(list(itertools.permutations(range(1, len(stops) + 1))), dtype=np.intp)
    tours = np.hstack([np.zeros((len(orders), 1), dtype=np.intp), orders])
    if closed:
        tours = np.hstack([tours, np.zeros((len(orders), 1), dtype=np.intp)])
    return float(distances[tours[:, :-1], tours[:, 1:]].sum(axis=1).min())


# --- distances ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "metres"),
    [
        pytest.param((13.4, 52.5), (13.4, 52.5), 0.0, id="same-point"),
        pytest.param((0.0, 0.0), (0.0, 1.0), ONE_DEGREE_M, id="one-degree-of-latitude"),
        pytest.param((0.0, 0.0), (1.0, 0.0), ONE_DEGREE_M, id="one-degree-of-longitude-at-the-equator"),
        pytest.param((179.5, 0.0), (-179.5, 0.0), ONE_DEGREE_M, id="across-the-antimeridian"),
        # 55,597.0 m: the great circle, half a metre shorter than the arc along the parallel
        pytest.param((0.0, 60.0), (1.0, 60.0), 2 * EARTH_RADIUS_M * math.asin(0.5 * math.sin(math.radians(0.5))),
                     id="one-degree-of-longitude-at-60N"),
        pytest.param((0.0, 90.0), (0.0, -90.0), math.pi * EARTH_RADIUS_M, id="pole-to-pole"),
    ],
)
def test_distance_matrix(a: tuple[float, float], b: tuple[float, float], metres: float) -> None:
    distances = distance_matrix_m([a[0], b[0]], [a[1], b[1]])
    assert distances.shape == (2, 2)
    assert distances[0, 0] == distances[1, 1] == 0.0
    assert distances[0, 1] == distances[1, 0] == pytest.approx(metres, rel=1e-5, abs=1e-6)


# --- the planner against brute force ------------------------------------------------------------


@pytest.mark.parametrize(
    ("seed", "count", "closed"),
    [pytest.param(seed, 3 + seed % 7, seed % 2 == 0, id=f"seed{seed}-{3 + seed % 7}stops") for seed in range(10)],
)
def test_small_round_is_within_5_percent_of_the_optimum(seed: int, count: int, closed: bool) -> None:
    depot, stops = city_case(seed, count)
    plan = plan_round(depot, stops, closed=closed)

    assert sorted(plan.order) == sorted(stop.id for stop in stops)
    assert len(plan.legs_m) == count + (1 if closed else 0)
    assert plan.length_m <= 1.05 * brute_force_m(depot, stops, closed)


def test_legs_follow_the_order() -> None:
    depot, stops = city_case(42, 8)
    plan = plan_round(depot, stops)
    path = plan.path()
    distances = distance_matrix_m([p[0] for p in path], [p[1] for p in path])
    assert plan.legs_m == pytest.approx([distances[k, k + 1] for k in range(len(path) - 1)])
    assert plan.length_m == pytest.approx(sum(plan.legs_m))


def test_the_same_input_gives_the_same_round() -> None:
    depot, stops = city_case(7, 60)
    first, again = plan_round(depot, stops), plan_round(depot, list(stops))
    assert first == again


def test_local_search_shortens_the_nearest_neighbour_round() -> None:
    depot, stops = city_case(3, 80)
    assert plan_round(depot, stops).length_m < plan_round(depot, stops, improve=False).length_m


def test_an_open_round_is_no_longer_than_a_closed_one() -> None:
    depot, stops = city_case(5, 9)
    assert plan_round(depot, stops, closed=False).length_m <= plan_round(depot, stops).length_m


# --- edge cases ----------------------------------------------------------------------------------

EAST_1KM = BERLIN[0] + 1000.0 / (ONE_DEGREE_M * math.cos(math.radians(BERLIN[1])))


@pytest.mark.parametrize(
    ("stops", "closed", "order", "legs_m"),
    [
        pytest.param([], True, (), (), id="no-stops-closed"),
        pytest.param([], False, (), (), id="no-stops-open"),
        pytest.param([Stop(1, EAST_1KM, BERLIN[1])], True, (1,), (1000.0, 1000.0), id="one-stop-closed"),
        pytest.param([Stop(1, EAST_1KM, BERLIN[1])], False, (1,), (1000.0,), id="one-stop-open"),
        pytest.param([Stop(1, *BERLIN), Stop(2, *BERLIN)], True, (1, 2), (0.0, 0.0, 0.0), id="all-at-the-depot"),
        pytest.param(
            [Stop("a", EAST_1KM, BERLIN[1]), Stop("b", EAST_1KM, BERLIN[1]), Stop("c", EAST_1KM, BERLIN[1])],
            True, ("a", "b", "c"), (1000.0, 0.0, 0.0, 1000.0), id="same-place-thrice",
        ),
    ],
)
def test_edge_cases(stops: list[Stop], closed: bool, order: tuple[object, ...], legs_m: tuple[float, ...]) -> None:
    plan = plan_round(BERLIN, stops, closed=closed)
    assert plan.order == order
    assert plan.legs_m == pytest.approx(legs_m, rel=2e-3, abs=1e-6)  # 1 km east: good to a metre
    assert plan.closed is closed


def test_stops_on_a_line_are_visited_outwards() -> None:
    east = [Stop(k, BERLIN[0] + 0.01 * k, BERLIN[1]) for k in (3, 1, 4, 2)]
    assert plan_round(BERLIN, east, closed=False).order == (1, 2, 3, 4)
    assert plan_round(BERLIN, east, closed=False, improve=False).order == (1, 2, 3, 4)


@pytest.mark.parametrize(
    ("depot", "stops", "message"),
    [
        pytest.param((13.4, 95.0), [], "the depot: latitude 95.0 is outside", id="depot-latitude"),
        pytest.param((52.5, 13.4), [Stop(1, 13.4, 152.5)], "stop 1: latitude 152.5", id="swapped-lat-lon"),
        pytest.param(BERLIN, [Stop("x", 181.0, 52.5)], "stop 'x': longitude 181.0 is outside", id="longitude"),
        pytest.param(BERLIN, [Stop(1, math.nan, 52.5)], "stop 1: position (nan, 52.5) is not finite", id="nan"),
        pytest.param(BERLIN, [Stop(1, 13.4, math.inf)], "not finite", id="infinite"),
        pytest.param(BERLIN, [Stop(1, 13.4, 52.5), Stop(1, 13.5, 52.5)], "stop id 1 appears twice", id="same-id"),
        pytest.param(BERLIN, [Stop(1, "east", 52.5)], "is not a pair of numbers", id="not-a-number"),  # type: ignore[arg-type]
    ],
)
def test_invalid_input_is_refused(depot: tuple[float, float], stops: list[Stop], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan_round(depot, stops)


def test_negative_kicks_are_refused() -> None:
    with pytest.raises(ValueError, match="kicks"):
        plan_round(BERLIN, [], kicks=-1)


# --- GPX and GeoJSON -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def twelve() -> RoundPlan:
    depot, stops = city_case(12, 12)
    return plan_round(depot, stops)


def labels_of(plan: RoundPlan) -> dict[StopId, str]:
    return {stop.id: f"#{stop.id} mattress & <sofa>" for stop in plan.stops}


def test_gpx_of_twelve_stops_parses_in_order(twelve: RoundPlan) -> None:
    labels = labels_of(twelve)
    text = round_gpx(twelve, labels, name="Crew 3, 2026-03-02")
    root = ET.fromstring(text)

    assert root.tag == "{http://www.topografix.com/GPX/1/1}gpx"
    assert root.get("version") == "1.1"
    points = root.findall("gpx:rte/gpx:rtept", GPX_NS)
    names = [point.findtext("gpx:name", namespaces=GPX_NS) for point in points]
    assert names == ["Depot", *(labels[stop_id] for stop_id in twelve.order), "Depot"]
    positions = [(float(p.attrib["lon"]), float(p.attrib["lat"])) for p in points]
    assert np.allclose(positions, twelve.path(), rtol=0, atol=1e-7)
    assert len(root.findall("gpx:wpt", GPX_NS)) == 12

    parsed = gpxpy.parse(text)
    assert [point.name for point in parsed.routes[0].points] == names
    assert parsed.routes[0].name == "Crew 3, 2026-03-02"


def test_gpx_of_an_open_round_ends_at_the_last_stop() -> None:
    depot, stops = city_case(2, 4)
    plan = plan_round(depot, stops, closed=False)
    points = ET.fromstring(round_gpx(plan)).findall("gpx:rte/gpx:rtept", GPX_NS)
    assert [p.findtext("gpx:name", namespaces=GPX_NS) for p in points] == ["Depot", *plan.order]


def test_geojson_of_twelve_stops(twelve: RoundPlan) -> None:
    labels = labels_of(twelve)
    collection = json.loads(json.dumps(round_geojson(twelve, labels)))

    assert collection["type"] == "FeatureCollection"
    path, depot, *stops = collection["features"]
    assert path["geometry"]["type"] == "LineString"
    coordinates = path["geometry"]["coordinates"]
    assert len(coordinates) == 14
    assert coordinates[0] == coordinates[-1] == pytest.approx(list(twelve.depot), abs=1e-7)
    assert all(13.0 < lon < 14.0 and 52.0 < lat < 53.0 for lon, lat in coordinates)  # [lon, lat], not [lat, lon]
    assert path["properties"]["length_m"] == pytest.approx(twelve.length_m, abs=0.1)
    assert depot["geometry"] == {"type": "Point", "coordinates": pytest.approx(list(twelve.depot), abs=1e-7)}
    assert depot["properties"]["order"] == 0
    assert [f["properties"]["order"] for f in stops] == list(range(1, 13))
    assert [f["properties"]["id"] for f in stops] == list(twelve.order)
    assert [f["properties"]["name"] for f in stops] == [labels[i] for i in twelve.order]
    assert np.allclose([f["geometry"]["coordinates"] for f in stops], twelve.path()[1:-1], rtol=0, atol=1e-7)


def test_geojson_of_an_empty_round_has_only_the_depot() -> None:
    collection = round_geojson(plan_round(BERLIN, []))
    assert [f["properties"]["kind"] for f in collection["features"]] == ["depot"]

"""Incidents carry their nearest address through the HTTP API: the list, the detail, CSV, GeoJSON, Open311.

The service here has an address index of ``tests/data/ban-sample.csv`` (see test_addresses.py); the
module's other app (the shared ``server`` fixture) has none, and its incidents no address.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from serving.addresses import AddressIndexError, import_ban
from serving.app import create_app
from tests.serving.helpers import Server, deposit_photo, moved, server_at, service_settings
from vipare.detection import Detector

ROOT = Path(__file__).resolve().parents[2]
BAN_SAMPLE = ROOT / "tests" / "data" / "ban-sample.csv"
ORIGIN = (49.1180, 6.1700)
"""1 Rue des Jardins, 57000 Metz (test_addresses.py describes the sample)."""

PLACES: dict[str, tuple[float, float]] = {
    "jardins": (5.0, 2.0),  # metres north and east of ORIGIN
    "bis": (5.0, 168.0),
    "fields": (-800.0, 0.0),  # no address within 100 m
}
EXPECTED: dict[str, dict[str, Any] | None] = {
    "jardins": {"label": "1 Rue des Jardins, 57000 Metz", "house_number": "1", "street": "Rue des Jardins",
                "postcode": "57000", "city": "Metz"},
    "bis": {"label": "12 bis Rue des Jardins, 57000 Metz", "house_number": "12 bis", "street": "Rue des Jardins",
            "postcode": "57000", "city": "Metz"},
    "fields": None,
}


@pytest.fixture(scope="module")
def geocoded(tmp_path_factory: pytest.TempPathFactory, detector: Detector) -> Iterator[tuple[Server, dict[str, int]]]:
    """An app with the sample's address index, and one incident at each of :data:`PLACES`, by name."""
    folder = tmp_path_factory.mktemp("geocoded")
    import_ban(BAN_SAMPLE, folder / "addresses.npz")
    with server_at(folder / "data", detector, addresses_path=folder / "addresses.npz") as server:
        ids = {}
        for seed, (name, (north_m, east_m)) in enumerate(PLACES.items()):
            lat, lon = moved(*ORIGIN, north_m=north_m, east_m=east_m)
            response = server.upload(deposit_photo(100 + seed, lat=lat, lon=lon))
            assert response.status_code == 201, response.text
            ids[name] = response.json()["incident"]["id"]
        yield server, ids


def _without_distance(address: dict[str, Any] | None) -> dict[str, Any] | None:
    if address is None:
        return None
    assert 0 <= address["distance_m"] < 10
    return {k: v for k, v in address.items() if k != "distance_m"}


def test_the_list_carries_the_address(geocoded: tuple[Server, dict[str, int]]) -> None:
    server, ids = geocoded
    answer = server.client.get("/v1/incidents", headers=server.headers("manager"))
    assert answer.status_code == 200
    by_id = {f["id"]: f["properties"]["address"] for f in answer.json()["features"]}
    assert {name: _without_distance(by_id[ids[name]]) for name in PLACES} == EXPECTED


@pytest.mark.parametrize("name", list(PLACES))
def test_the_detail_carries_the_address(geocoded: tuple[Server, dict[str, int]], name: str) -> None:
    server, ids = geocoded
    detail = server.client.get(f"/v1/incidents/{ids[name]}", headers=server.headers("manager"))
    assert detail.status_code == 200
    assert _without_distance(detail.json()["properties"]["address"]) == EXPECTED[name]


def test_a_status_change_answers_with_the_address(geocoded: tuple[Server, dict[str, int]]) -> None:
    server, ids = geocoded
    changed = server.client.post(f"/v1/incidents/{ids['bis']}/transitions", json={"to": "confirmed"},
                                 headers=server.headers("manager"))
    assert changed.status_code == 201
    assert changed.json()["properties"]["address"]["label"] == "12 bis Rue des Jardins, 57000 Metz"


def test_the_csv_carries_the_address(geocoded: tuple[Server, dict[str, int]]) -> None:
    server, ids = geocoded
    answer = server.client.get("/v1/exports/incidents.csv", headers=server.headers("manager"))
    assert answer.status_code == 200
    rows = {int(row["id"]): row for row in csv.DictReader(io.StringIO(answer.text))}
    for name, expected in EXPECTED.items():
        row = rows[ids[name]]
        got = (row["street"], row["house_number"], row["postcode"], row["city"])
        wanted = ("", "", "", "") if expected is None else tuple(
            expected[k] for k in ("street", "house_number", "postcode", "city")
        )
        assert got == wanted, name


def test_the_geojson_export_carries_the_address(geocoded: tuple[Server, dict[str, int]]) -> None:
    server, ids = geocoded
    answer = server.client.get("/v1/exports/incidents.geojson", headers=server.headers("manager"))
    assert answer.status_code == 200
    by_id = {f["id"]: f["properties"]["address"] for f in answer.json()["features"]}
    assert {name: _without_distance(by_id[ids[name]]) for name in PLACES} == EXPECTED


def test_open311_carries_the_address(geocoded: tuple[Server, dict[str, int]]) -> None:
    server, ids = geocoded
    headers = server.headers("manager")
    requests = server.client.get("/open311/v2/requests.json", headers=headers).json()
    by_id = {int(r["service_request_id"]): r for r in requests}
    for name, expected in EXPECTED.items():
        request = by_id[ids[name]]
        assert request["address"] == (None if expected is None else expected["label"])
        assert request["zipcode"] == (None if expected is None else expected["postcode"])
    one = server.client.get(f"/open311/v2/requests/{ids['jardins']}.json", headers=headers).json()
    assert one[0]["address"] == "1 Rue des Jardins, 57000 Metz"


def test_without_an_index_incidents_have_no_address(server: Server) -> None:
    lat, lon = moved(*ORIGIN, north_m=5.0)
    incident = server.upload(deposit_photo(200, lat=lat, lon=lon)).json()["incident"]["id"]
    headers = server.headers("manager")
    assert server.service.geocoder is None
    detail = server.client.get(f"/v1/incidents/{incident}", headers=headers).json()
    assert detail["properties"]["address"] is None
    request = server.client.get(f"/open311/v2/requests/{incident}.json", headers=headers).json()[0]
    assert request["address"] is None and request["zipcode"] is None


def test_a_configured_index_that_is_missing_stops_the_start(tmp_path: Path, detector: Detector) -> None:
    settings = service_settings(tmp_path / "data", addresses_path=tmp_path / "missing.npz")
    app = create_app(settings, detector=detector)
    with pytest.raises(AddressIndexError, match="vipare addresses import"), TestClient(app):
        pass

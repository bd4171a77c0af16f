"""The size of a deposit: the estimate from the photos' largest deposit box, and a manager's word."""

from __future__ import annotations

from typing import Any

import pytest

from serving.sizes import L_FROM, M_FROM, estimate_size, larger
from tests.serving.helpers import Server, deposit_photo, moved


@pytest.mark.parametrize(
    ("detections", "size"),
    [
        ([], None),
        ([{"deposit": False, "area_fraction": 0.5}], None),  # a bin is no deposit
        ([{"deposit": True, "area_fraction": 0.0}], "S"),
        ([{"deposit": True, "area_fraction": M_FROM - 1e-9}], "S"),
        ([{"deposit": True, "area_fraction": M_FROM}], "M"),  # at the threshold: the larger
        ([{"deposit": True, "area_fraction": L_FROM - 1e-9}], "M"),
        ([{"deposit": True, "area_fraction": L_FROM}], "L"),
        ([{"deposit": True, "area_fraction": 0.01}, {"deposit": True, "area_fraction": 0.2}], "L"),  # the largest
    ],
)
def test_estimate_from_the_largest_deposit_box(detections: list[dict[str, Any]], size: str | None) -> None:
    assert estimate_size(detections) == size


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [(None, None, None), ("S", None, "S"), (None, "L", "L"), ("M", "S", "M"), ("M", "L", "L"), ("L", "L", "L")],
)
def test_larger(a: str | None, b: str | None, expected: str | None) -> None:
    assert larger(a, b) == expected


def test_incidents_carry_a_size_a_manager_may_set_and_filters_use(server: Server) -> None:
    lat, lon = moved(47.2184, -1.5536, north_m=0.0)  # Nantes
    sent = server.upload(deposit_photo(88001, lat=lat, lon=lon))  # one 80 x 80 box in 640 x 480: 2 %
    incident = sent.json()["incident"]["id"]
    props = server.client.get(f"/v1/incidents/{incident}", headers=server.headers("manager")).json()["properties"]
    assert (props["size"], props["size_source"]) == ("S", "estimate")

    set_l = server.client.put(f"/v1/incidents/{incident}/size", json={"size": "L"}, headers=server.headers("manager"))
    assert set_l.status_code == 200 and set_l.json()["properties"]["size_source"] == "manager"
    box = f"{lon - 0.01},{lat - 0.01},{lon + 0.01},{lat + 0.01}"
    ids = {f["id"] for f in server.client.get("/v1/incidents", params={"bbox": box, "size": "L"},
                                             headers=server.headers("manager")).json()["features"]}
    assert incident in ids
    ids = {f["id"] for f in server.client.get("/v1/incidents", params={"bbox": box, "size": "S"},
                                             headers=server.headers("manager")).json()["features"]}
    assert incident not in ids
    back = server.client.put(f"/v1/incidents/{incident}/size", json={"size": None}, headers=server.headers("manager"))
    assert back.json()["properties"]["size"] == "S"  # the estimate again
    bad = server.client.put(f"/v1/incidents/{incident}/size", json={"size": "XL"}, headers=server.headers("manager"))
    assert bad.status_code == 422
    agent = server.client.put(f"/v1/incidents/{incident}/size", json={"size": "M"}, headers=server.headers("agent"))
    assert agent.status_code == 403

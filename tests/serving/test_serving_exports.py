"""Exports: CSV columns and values, GeoJSON in lon/lat order, Open311 GeoReport v2 shapes."""

from __future__ import annotations

import csv
import io
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from serving.exports import CSV_COLUMNS
from serving.observability import JsonFormatter
from tests.serving.helpers import Server, deposit_photo, moved, server_at
from vipare.detection import Detector

LYON = (45.7640, 4.8357)
OPEN311_REQUEST_KEYS = {
    "service_request_id", "status", "status_notes", "service_name", "service_code", "description",
    "agency_responsible", "service_notice", "requested_datetime", "updated_datetime", "expected_datetime",
    "address", "address_id", "zipcode", "lat", "long", "media_url",
}


@pytest.fixture(scope="module")
def incidents(server: Server) -> dict[str, int]:
    """Two incidents near Lyon: one cleaned (with its whole history), one still new (with a note); and one
    20 km away whose note starts like a spreadsheet formula."""
    cleaned = server.upload(deposit_photo(1, lat=LYON[0], lon=LYON[1])).json()["incident"]["id"]
    for to in ("confirmed", "scheduled", "cleaned"):
        response = server.client.post(f"/v1/incidents/{cleaned}/transitions", json={"to": to, "comment": f"now {to}"},
                                      headers=server.headers("manager"))
        assert response.status_code == 201
    other = moved(*LYON, east_m=500)
    fresh = server.upload(deposit_photo(2, lat=other[0], lon=other[1]), note=FRESH_NOTE).json()["incident"]["id"]
    far = moved(*LYON, east_m=20_000)
    formula = server.upload(deposit_photo(3, lat=far[0], lon=far[1]), note="=1+2").json()["incident"]["id"]
    return {"cleaned": cleaned, "new": fresh, "formula": formula}


FRESH_NOTE = "Matelas; sacs, près de l'arrêt"


def _csv(server: Server, **params: Any) -> tuple[list[str], list[dict[str, str]]]:
    response = server.client.get("/v1/exports/incidents.csv", params=params, headers=server.headers("manager"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    reader = csv.DictReader(io.StringIO(response.text))
    return list(reader.fieldnames or []), list(reader)


def test_csv_has_the_columns_councils_ask_for(server: Server, incidents: dict[str, int]) -> None:
    header, rows = _csv(server)
    assert header == list(CSV_COLUMNS)
    by_id = {int(r["id"]): r for r in rows}
    cleaned = by_id[incidents["cleaned"]]
    assert (cleaned["class"], cleaned["status"]) == ("dumped_waste", "cleaned")
    assert float(cleaned["lat"]) == pytest.approx(LYON[0], abs=1e-6)
    assert float(cleaned["lon"]) == pytest.approx(LYON[1], abs=1e-6)
    assert cleaned["street"] == cleaned["house_number"] == cleaned["postcode"] == cleaned["city"] == ""
    stamps = [cleaned[c] for c in ("new_at", "confirmed_at", "scheduled_at", "cleaned_at")]
    assert all(stamps) and stamps == sorted(stamps)
    assert cleaned["rejected_at"] == cleaned["duplicate_at"] == cleaned["merged_into"] == ""
    assert (cleaned["report_count"], cleaned["recurrence_count"], cleaned["recurrence_of"]) == ("1", "0", "")
    assert datetime.fromisoformat(cleaned["first_seen"]) <= datetime.fromisoformat(cleaned["last_seen"])
    fresh = by_id[incidents["new"]]
    assert fresh["status"] == "new" and fresh["new_at"] and fresh["confirmed_at"] == ""


def test_csv_takes_the_map_filters(server: Server, incidents: dict[str, int]) -> None:
    _, rows = _csv(server, status="new", bbox=f"{LYON[1] - 0.1},{LYON[0] - 0.1},{LYON[1] + 0.1},{LYON[0] + 0.1}")
    assert [int(r["id"]) for r in rows] == [incidents["new"]]


def test_geojson_export_is_rfc7946(server: Server, incidents: dict[str, int]) -> None:
    response = server.client.get("/v1/exports/incidents.geojson", headers=server.headers("manager"))
    assert response.headers["content-type"].startswith("application/geo+json")
    collection = json.loads(response.text)
    assert collection["type"] == "FeatureCollection"
    feature = next(f for f in collection["features"] if f["id"] == incidents["cleaned"])
    assert feature["geometry"] == {"type": "Point", "coordinates": [pytest.approx(LYON[1]), pytest.approx(LYON[0])]}
    assert feature["properties"]["status"] == "cleaned"


def test_open311_services(server: Server) -> None:
    services = server.client.get("/open311/v2/services.json", headers=server.headers("manager")).json()
    assert {s["service_code"] for s in services} == {"dumped_waste", "overflowing_bin"}
    for service in services:
        assert {"service_code", "service_name", "description", "metadata", "type", "keywords", "group"} <= set(service)
        assert service["metadata"] is False and service["type"] == "realtime"


def test_open311_requests(server: Server, incidents: dict[str, int]) -> None:
    key = server.keys["manager"]
    # The key as Open311 clients send it: a query parameter.
    everything = server.client.get("/open311/v2/requests.json", params={"api_key": key}).json()
    by_id = {r["service_request_id"]: r for r in everything}
    cleaned, fresh = by_id[str(incidents["cleaned"])], by_id[str(incidents["new"])]
    assert set(cleaned) == OPEN311_REQUEST_KEYS
    assert (cleaned["status"], fresh["status"]) == ("closed", "open")
    assert cleaned["status_notes"] == "now cleaned"
    assert (cleaned["lat"], cleaned["long"]) == (pytest.approx(LYON[0]), pytest.approx(LYON[1]))
    assert cleaned["service_code"] == "dumped_waste"
    assert cleaned["media_url"].endswith("/image/annotated")

    headers = server.headers("manager")
    closed = server.client.get("/open311/v2/requests.json", params={"status": "closed"}, headers=headers).json()
    assert str(incidents["new"]) not in {r["service_request_id"] for r in closed}
    chosen = server.client.get("/open311/v2/requests.json", params={"service_request_id": f"{incidents['new']}"},
                               headers=headers).json()
    assert [r["service_request_id"] for r in chosen] == [str(incidents["new"])]
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert server.client.get("/open311/v2/requests.json", params={"start_date": future}, headers=headers).json() == []
    bad = server.client.get("/open311/v2/requests.json", params={"service_request_id": "1,x"}, headers=headers)
    assert bad.status_code == 400 and bad.json()[0]["code"] == 400


def test_open311_one_request(server: Server, incidents: dict[str, int]) -> None:
    headers = server.headers("manager")
    one = server.client.get(f"/open311/v2/requests/{incidents['new']}.json", headers=headers)
    assert one.status_code == 200
    assert [r["service_request_id"] for r in one.json()] == [str(incidents["new"])]
    missing = server.client.get("/open311/v2/requests/999999.json", headers=headers)
    assert missing.status_code == 404
    assert missing.json() == [{"code": 404, "description": "no service request 999999"}]


# --------------------------------------------------------------------------------------------------
# CSV for a French Excel, photos an integrator can fetch


def _french_csv(server: Server, **params: Any) -> tuple[bytes, list[str], list[dict[str, str]]]:
    response = server.client.get("/v1/exports/incidents.csv", params=params, headers=server.headers("manager"))
    assert response.status_code == 200
    body = response.content
    text = body.decode("utf-8-sig")
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=";")
    return body, list(reader.fieldnames or []), list(reader)


def test_csv_for_a_french_excel(server: Server, incidents: dict[str, int]) -> None:
    body, header, rows = _french_csv(server, excel="fr")
    assert body.startswith(b"\xef\xbb\xbfid;class;status;lat;lon;")  # the BOM, then semicolons
    assert body.count(b"\r\n") == len(rows) + 1 and b"\n" not in body.replace(b"\r\n", b"")  # CRLF line ends
    assert header == list(CSV_COLUMNS)
    assert header[-7:] == ["best_score", "photo_url", "note", "size", "size_source", "scheduled_for", "crew"]
    by_id = {int(r["id"]): r for r in rows}

    fresh = by_id[incidents["new"]]
    other = moved(*LYON, east_m=500)
    assert "," in fresh["lat"] and "." not in fresh["lat"]  # decimal commas
    assert float(fresh["lat"].replace(",", ".")) == pytest.approx(other[0], abs=1e-6)
    assert float(fresh["lon"].replace(",", ".")) == pytest.approx(other[1], abs=1e-6)
    assert float(fresh["best_score"].replace(",", ".")) == pytest.approx(0.9, abs=1e-3)
    assert (fresh["size"], fresh["size_source"]) == ("S", "estimate")  # one 80 x 80 box in 640 x 480
    assert fresh["note"] == FRESH_NOTE  # accents, separators and commas survive the quoting
    report = server.client.get(f"/v1/incidents/{incidents['new']}", headers=server.headers("manager")).json()
    report_id = report["reports"][0]["id"]
    assert fresh["photo_url"] == f"/v1/reports/{report_id}/image/annotated"  # relative without a public URL
    assert by_id[incidents["cleaned"]]["note"] == ""
    assert by_id[incidents["formula"]]["note"] == "'=1+2"  # shown by a spreadsheet, never run


def test_csv_format_parameters_one_by_one(server: Server, incidents: dict[str, int]) -> None:
    body, header, rows = _french_csv(server, excel="fr", decimal="point", bom="false")
    assert not body.startswith(b"\xef\xbb\xbf") and header == list(CSV_COLUMNS)
    fresh = next(r for r in rows if int(r["id"]) == incidents["new"])
    assert "." in fresh["lat"] and "," not in fresh["lat"]
    body, _, _ = _french_csv(server, sep="semicolon", bom="true")
    assert body.startswith(b"\xef\xbb\xbfid;class;")
    # The default stays the script's CSV: commas, points, no BOM, the same columns.
    header, plain = _csv(server)
    assert header == list(CSV_COLUMNS)
    fresh = next(r for r in plain if int(r["id"]) == incidents["new"])
    assert "." in fresh["lat"] and fresh["note"] == FRESH_NOTE
    refused = server.client.get("/v1/exports/incidents.csv", params={"sep": "tab"}, headers=server.headers("manager"))
    assert refused.status_code == 422


def test_open311_media_url_is_fetched_with_the_key_in_the_query(server: Server, incidents: dict[str, int]) -> None:
    key = server.keys["manager"]
    requests = server.client.get("/open311/v2/requests.json", params={"api_key": key}).json()
    media_url = next(r["media_url"] for r in requests if r["service_request_id"] == str(incidents["new"]))
    handler = _Lines()
    access = logging.getLogger("serving.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)  # the test apps log warnings only
    try:
        photo = server.client.get(media_url, params={"api_key": key})
        plain = server.client.get(media_url.removesuffix("/annotated"), params={"api_key": key})
        refused = server.client.get(media_url)
    finally:
        access.removeHandler(handler)
        access.setLevel(logging.NOTSET)
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
    assert photo.content[:3] == b"\xff\xd8\xff"
    assert plain.status_code == 200 and plain.headers["content-type"] == "image/jpeg"
    assert refused.status_code == 401
    assert len(handler.lines) == 3 and key not in json.dumps(handler.lines)  # the key never reaches the logs
    # Only reads of photos take the key from the query: the rest of the API still wants a header.
    assert server.client.get(f"/v1/incidents/{incidents['new']}", params={"api_key": key}).status_code == 401
    agent = server.client.get(media_url, params={"api_key": server.keys["agent2"]})
    assert agent.status_code == 404  # another agent's photo: not one of theirs


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.mark.parametrize("public", ["https://vipare.example.org/city", "https://vipare.example.org/a;b,c"])
def test_csv_photo_links_under_the_public_url(tmp_path: Path, detector: Detector, public: str) -> None:
    """A link is quoted when the public URL holds the separator (the rest of a link never does)."""
    with server_at(tmp_path, detector, public_url=public + "/") as s:
        s.upload(deposit_photo(11, lat=LYON[0], lon=LYON[1]))
        _, _, rows = _french_csv(s, excel="fr")
        (row,) = rows
        assert row["photo_url"].startswith(f"{public}/v1/reports/") and row["photo_url"].endswith("/image/annotated")
        path = row["photo_url"].removeprefix(public)
        assert s.client.get(path, params={"api_key": s.keys["manager"]}).status_code == 200

"""API keys and roles: every forbidden (role, action) pair answers 403, no key 401; keys are hashed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from serving.auth import ROLE_PERMISSIONS, Permission, Role, create_key
from serving.cli import keys
from serving.config import UnsafeConfigurationError
from serving.db import write_session
from serving.models import ApiKey
from tests.serving.helpers import Server, bearer, deposit_photo, plain_photo, running, service_settings
from vipare.detection import Detector

PLACE = (50.6292, 3.0573)


@pytest.fixture(scope="module")
def ids(server: Server) -> dict[str, int]:
    """An agent's report and its incident, and a key to revoke."""
    report = server.upload(deposit_photo(1, lat=PLACE[0], lon=PLACE[1])).json()
    with write_session(server.service.sessions) as session:
        spare, _ = create_key(session, Role.AGENT, "spare")
    return {"report": report["id"], "incident": report["incident"]["id"], "spare_key": spare.id}


Request = Callable[[Server, dict[str, int], dict[str, str]], Any]


def _upload(s: Server, _ids: dict[str, int], headers: dict[str, str]) -> Any:
    photo = plain_photo(len(headers) + hash(str(headers)) % 1000, lat=PLACE[0], lon=PLACE[1] + 0.01)
    return s.client.post("/v1/reports", files={"photo": ("p.jpg", photo, "image/jpeg")}, headers=headers)


def _get(path: str) -> Request:
    return lambda s, ids, headers: s.client.get(path.format(**ids), headers=headers)


ACTIONS: dict[str, tuple[Request, Permission]] = {
    "upload": (_upload, Permission.REPORT_CREATE),
    "list reports": (_get("/v1/reports"), Permission.REPORT_READ_OWN),
    "read report": (_get("/v1/reports/{report}"), Permission.REPORT_READ_OWN),
    "report photo": (_get("/v1/reports/{report}/image"), Permission.REPORT_READ_OWN),
    "annotated photo": (_get("/v1/reports/{report}/image/annotated"), Permission.REPORT_READ_OWN),
    "list incidents": (_get("/v1/incidents"), Permission.INCIDENT_READ),
    "read incident": (_get("/v1/incidents/{incident}"), Permission.INCIDENT_READ),
    "change state": (
        lambda s, ids, h: s.client.post(f"/v1/incidents/{ids['incident']}/transitions", json={"to": "confirmed"},
                                        headers=h),
        Permission.INCIDENT_TRANSITION,
    ),
    "export csv": (_get("/v1/exports/incidents.csv"), Permission.EXPORT),
    "export geojson": (_get("/v1/exports/incidents.geojson"), Permission.EXPORT),
    "open311 services": (_get("/open311/v2/services.json"), Permission.EXPORT),
    "open311 requests": (_get("/open311/v2/requests.json"), Permission.EXPORT),
    "open311 request": (_get("/open311/v2/requests/{incident}.json"), Permission.EXPORT),
    "create key": (
        lambda s, ids, h: s.client.post("/v1/keys", json={"role": "agent", "name": "new"}, headers=h),
        Permission.KEY_MANAGE,
    ),
    "list keys": (_get("/v1/keys"), Permission.KEY_MANAGE),
    "read original": (
        lambda s, ids, h: s.client.get(
            f"/v1/reports/{ids['report']}/original", params={"reason": "a complaint about this deposit"}, headers=h
        ),
        Permission.ORIGINAL_READ,
    ),
    "read originals log": (_get("/v1/originals/reads"), Permission.ORIGINAL_AUDIT),
    "revoke key": (lambda s, ids, h: s.client.delete(f"/v1/keys/{ids['spare_key']}", headers=h), Permission.KEY_MANAGE),
}

PAIRS = [(role, action) for role in Role for action in ACTIONS]


@pytest.mark.parametrize(("role", "action"), PAIRS, ids=[f"{r.value}-{a}" for r, a in PAIRS])
def test_role_x_action(server: Server, ids: dict[str, int], role: Role, action: str) -> None:
    request, permission = ACTIONS[action]
    response = request(server, ids, server.headers(role.value))
    if permission in ROLE_PERMISSIONS[role]:
        assert response.status_code not in (401, 403), response.text
    else:
        assert response.status_code == 403, response.text
        assert response.json()["code"] == "forbidden"


@pytest.mark.parametrize("action", list(ACTIONS))
def test_no_key_or_a_wrong_key_is_401(server: Server, ids: dict[str, int], action: str) -> None:
    request, _ = ACTIONS[action]
    for headers in ({}, bearer("vpr_0123456789_" + "x" * 43), {"X-API-Key": "not-a-key"}):
        response = request(server, ids, headers)
        assert response.status_code == 401, (headers, response.text)
        assert response.json()["code"] == "unauthenticated"
        assert response.headers["www-authenticate"] == "Bearer"


def test_an_agent_is_told_what_it_may_not_do(server: Server) -> None:
    response = server.client.get("/v1/incidents", headers=server.headers("agent"))
    assert response.json()["detail"] == "An agent key may not read incidents."


def test_keys_are_created_shown_once_stored_hashed_and_revoked(server: Server) -> None:
    created = server.client.post("/v1/keys", json={"role": "manager", "name": "depot nord"},
                                 headers=server.headers("admin"))
    assert created.status_code == 201
    key, key_id = created.json()["key"], created.json()["id"]
    assert server.client.get("/v1/incidents", headers=bearer(key)).status_code == 200
    listed = server.client.get("/v1/keys", headers=server.headers("admin")).json()
    assert all("key" not in k for k in listed) and key_id in {k["id"] for k in listed}
    secret = key.split("_", 2)[2]  # vpr_<prefix>_<secret>; the secret may hold "_" itself
    with server.service.sessions() as session:
        row = session.scalars(select(ApiKey).where(ApiKey.id == key_id)).one()
        assert secret not in (row.secret_sha256, row.prefix, row.name) and len(row.secret_sha256) == 64
    revoked = server.client.delete(f"/v1/keys/{key_id}", headers=server.headers("admin"))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert server.client.get("/v1/incidents", headers=bearer(key)).status_code == 401


@pytest.mark.parametrize("role", ["agent", "manager", "admin"])
def test_any_key_can_say_which_key_it_is(server: Server, role: str) -> None:
    me = server.client.get("/v1/keys/me", headers=server.headers(role))
    assert me.status_code == 200 and me.json()["role"] == role
    assert server.client.get("/v1/keys/me", headers=bearer("vpr_0000_" + "x" * 43)).status_code == 401


def test_the_last_admin_key_cannot_be_revoked(server: Server) -> None:
    admins = [k for k in server.client.get("/v1/keys", headers=server.headers("admin")).json()
              if k["role"] == "admin" and k["revoked_at"] is None]
    assert len(admins) == 1
    response = server.client.delete(f"/v1/keys/{admins[0]['id']}", headers=server.headers("admin"))
    assert response.status_code == 409 and response.json()["code"] == "last_admin_key"


def test_a_position_is_for_camera_keys_only(server: Server) -> None:
    response = server.client.post("/v1/keys", json={"role": "agent", "name": "x", "camera_lat": 1, "camera_lon": 2},
                                  headers=server.headers("admin"))
    assert response.status_code == 422


def test_without_any_key_every_call_is_refused_and_says_how_to_make_one(tmp_path: Path, detector: Detector) -> None:
    from serving.app import create_app

    for host in ("127.0.0.1", "0.0.0.0"):  # no trial mode: closed wherever it listens
        with running(create_app(service_settings(tmp_path / host, host=host), detector=detector)) as client:
            for method, path in (("GET", "/v1/incidents"), ("GET", "/v1/keys"), ("POST", "/v1/keys")):
                answer = client.request(method, path, json={"role": "admin", "name": "intruder"})
                assert answer.status_code == 401, (host, path)
                assert answer.json()["code"] == "unauthenticated"
                assert "vipare keys create --role admin" in answer.json()["detail"]


def test_the_trial_mode_is_explicit_loopback_only_and_ends_with_the_first_key(
    tmp_path: Path, detector: Detector
) -> None:
    from serving.app import create_app

    trial = service_settings(tmp_path, trial_mode=True)
    with running(create_app(trial, detector=detector)) as client:
        assert client.get("/v1/incidents").status_code == 200  # set, on 127.0.0.1, no key yet: open
        first = client.post("/v1/keys", json={"role": "agent", "name": "first"})
        assert first.status_code == 201
        assert client.get("/v1/incidents").status_code == 401  # the first key closes it
    runner = CliRunner()
    revoked = runner.invoke(keys, ["revoke", str(first.json()["id"]), "--data-dir", str(tmp_path)])
    assert revoked.exit_code == 0, revoked.output
    with running(create_app(trial, detector=detector)) as client:  # every key revoked: still closed
        assert client.get("/v1/incidents").status_code == 401
        assert client.post("/v1/keys", json={"role": "admin", "name": "intruder"}).status_code == 401

    exposed = service_settings(tmp_path / "other", host="0.0.0.0", trial_mode=True)
    with pytest.raises(UnsafeConfigurationError, match="trial mode"), running(create_app(exposed, detector=detector)):
        pass
    assert not (tmp_path / "other").exists()  # refused before anything is written


def test_the_cli_refuses_to_revoke_the_last_admin_key(tmp_path: Path) -> None:
    runner = CliRunner()

    def create(role: str) -> int:
        made = runner.invoke(keys, ["create", "--role", role, "--data-dir", str(tmp_path)])
        assert made.exit_code == 0, made.output
        return int(made.output.split("key #")[1].split()[0])

    agent, admin = create("agent"), create("admin")
    refused = runner.invoke(keys, ["revoke", str(admin), "--data-dir", str(tmp_path)])
    assert refused.exit_code == 1
    assert "last active admin key" in refused.output and "vipare keys create --role admin" in refused.output
    assert runner.invoke(keys, ["revoke", str(agent), "--data-dir", str(tmp_path)]).exit_code == 0
    second = create("admin")
    assert runner.invoke(keys, ["revoke", str(admin), "--data-dir", str(tmp_path)]).exit_code == 0
    listed = runner.invoke(keys, ["list", "--data-dir", str(tmp_path)]).output
    assert [line.split("\t")[-1].startswith("active") for line in listed.splitlines()] == [False, False, True]
    assert runner.invoke(keys, ["revoke", str(second), "--data-dir", str(tmp_path)]).exit_code == 1

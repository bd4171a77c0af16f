"""``/v1/keys``: administrators create, list and revoke API keys."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from sqlalchemy import select

from serving.auth import LastAdminKeyError, Permission, Principal, Role, create_key, key_camera, revoke_key
from serving.db import write_session
from serving.errors import ErrorBody, NotFoundError, PermissionDeniedError
from serving.models import ApiKey, CameraKey
from serving.routes.deps import IdPath, ServiceDep, SessionDep, get_principal, require
from serving.schemas import KeyCreate, KeyCreated, KeyOut, KeyWho
from vipare.geotag import CameraPosition

__all__ = ["LastAdminKeyError", "key_out", "router"]

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No API key, or an unknown or revoked one."},
    403: {"model": ErrorBody, "description": "Only admin keys manage keys."},
}

router = APIRouter(tags=["keys"], responses=_ERRORS)
AdminPrincipal = Annotated[Principal, Depends(require(Permission.KEY_MANAGE))]



def key_out(row: ApiKey, camera_id: str | None = None) -> KeyOut:
    """A key without its secret; ``camera_id``: the registered camera it belongs to."""
    return KeyOut(
        id=row.id, prefix=row.prefix, role=Role(row.role), name=row.name, created_at=row.created_at,
        revoked_at=row.revoked_at, camera_lat=row.camera_lat, camera_lon=row.camera_lon, camera_id=camera_id,
    )


@router.post("/v1/keys", status_code=201, response_model=KeyCreated, summary="Create a key")
def post_key(body: KeyCreate, service: ServiceDep, _principal: AdminPrincipal) -> KeyCreated:
    """Create a key. The answer holds the key itself, shown this once: only its hash is stored.

    Not a ``privacy_officer`` key: one reads unblurred originals, so it is created on the server
    (``vipare keys create --role privacy_officer``), where whoever runs the service answers for it,
    never by an API key (an admin's) or the trial mode.
    """
    if body.role is Role.PRIVACY_OFFICER:
        raise PermissionDeniedError(
            "A privacy_officer key reads unblurred originals: it is created on the server, not through the API "
            "(vipare keys create --role privacy_officer --name <who>)."
        )
    camera = None
    if body.camera_lat is not None and body.camera_lon is not None:
        camera = CameraPosition(
            camera_id=body.name, lat=body.camera_lat, lon=body.camera_lon, accuracy_m=body.camera_accuracy_m
        )
    with write_session(service.sessions) as session:
        row, key = create_key(session, body.role, body.name, camera, camera_id=body.camera_id)
        out = key_out(row, body.camera_id)
    return KeyCreated(**out.model_dump(), key=key)


@router.get("/v1/keys/me", response_model=KeyWho, summary="Which key is this")
def get_my_key(principal: Annotated[Principal, Depends(get_principal)]) -> KeyWho:
    """The role and name of the key sending the request (any valid key; null role in the open local mode).

    The agent's page asks it before it keeps a key brought by a link or a QR code: it keeps agent keys only.
    """
    return KeyWho(role=principal.role, name=principal.name)


@router.get("/v1/keys", response_model=list[KeyOut], summary="List keys")
def get_keys(session: SessionDep, _principal: AdminPrincipal) -> list[KeyOut]:
    """Every key, revoked ones included, without secrets."""
    tied = {key_id: camera_id for key_id, camera_id in session.execute(select(CameraKey.key_id, CameraKey.camera_id))}
    return [key_out(row, tied.get(row.id)) for row in session.scalars(select(ApiKey).order_by(ApiKey.id))]


@router.delete(
    "/v1/keys/{key_id}",
    response_model=KeyOut,
    responses={404: {"model": ErrorBody}, 409: {"model": ErrorBody, "description": "The last admin key."}},
    summary="Revoke a key",
)
def delete_key(key_id: IdPath, service: ServiceDep, _principal: AdminPrincipal) -> KeyOut:
    """Revoke a key at once (idempotent). The last active admin key cannot be revoked."""
    with write_session(service.sessions) as session:
        row = revoke_key(session, key_id)
        if row is None:
            raise NotFoundError(f"There is no key #{key_id}.")
        return key_out(row, camera.id if (camera := key_camera(session, key_id)) else None)

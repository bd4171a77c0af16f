"""``/v1/cameras``: the camera registry, for managers and administrators (see :mod:`serving.cameras`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Response

from serving.auth import Permission, Principal
from serving.cameras import CAMERA_ID_PATTERN, CameraFields, CameraSpec, list_cameras, upsert_cameras
from serving.db import write_session
from serving.errors import CameraExistsError, ErrorBody, NotFoundError
from serving.models import Camera
from serving.routes.deps import ServiceDep, SessionDep, require

__all__ = ["CameraOut", "camera_out", "router"]

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No API key, or an unknown or revoked one."},
    403: {"model": ErrorBody, "description": "Only manager and admin keys manage cameras."},
}

router = APIRouter(tags=["cameras"], responses=_ERRORS)
CameraPrincipal = Annotated[Principal, Depends(require(Permission.CAMERA_MANAGE))]
CameraIdPath = Annotated[str, Path(pattern=CAMERA_ID_PATTERN, description="The camera's id.")]


class CameraOut(CameraSpec):
    """A registered camera."""

    created_at: datetime
    updated_at: datetime


def camera_out(row: Camera) -> CameraOut:
    """The API's view of a camera."""
    return CameraOut(**CameraSpec.of(row).model_dump(), created_at=row.created_at, updated_at=row.updated_at)


@router.get("/v1/cameras", response_model=list[CameraOut], summary="List cameras")
def get_cameras(session: SessionDep, _principal: CameraPrincipal) -> list[CameraOut]:
    """Every registered camera, by id."""
    return [camera_out(row) for row in list_cameras(session)]


@router.get(
    "/v1/cameras/{camera_id}", response_model=CameraOut, responses={404: {"model": ErrorBody}}, summary="Read a camera"
)
def get_camera(camera_id: CameraIdPath, session: SessionDep, _principal: CameraPrincipal) -> CameraOut:
    """One camera."""
    row = session.get(Camera, camera_id)
    if row is None:
        raise NotFoundError(f"There is no camera {camera_id!r}.")
    return camera_out(row)


@router.post(
    "/v1/cameras",
    status_code=201,
    response_model=CameraOut,
    responses={409: {"model": ErrorBody, "description": "A camera with this id exists (PUT replaces it)."}},
    summary="Add a camera",
)
def post_camera(body: CameraSpec, service: ServiceDep, _principal: CameraPrincipal) -> CameraOut:
    """Register a camera: a fixed one with ``lat``/``lon`` (frames without GPS are placed there), or a
    mobile one without (its frames must carry GPS).
    """
    with write_session(service.sessions) as session:
        if session.get(Camera, body.id) is not None:
            raise CameraExistsError(f"Camera {body.id!r} exists; PUT /v1/cameras/{body.id} replaces its fields.")
        upsert_cameras(session, [body])
        row = session.get(Camera, body.id)
        assert row is not None
        return camera_out(row)


@router.put(
    "/v1/cameras/{camera_id}",
    response_model=CameraOut,
    responses={201: {"model": CameraOut, "description": "The camera was added."}},
    summary="Add or replace a camera",
)
def put_camera(
    camera_id: CameraIdPath, body: CameraFields, response: Response, service: ServiceDep, _principal: CameraPrincipal
) -> CameraOut:
    """Set every field of a camera (a field left out is cleared); 201 when it is new, 200 otherwise.

    Reports already stored keep the position they were given.
    """
    spec = CameraSpec(id=camera_id, **body.model_dump())
    with write_session(service.sessions) as session:
        added, _ = upsert_cameras(session, [spec])
        row = session.get(Camera, camera_id)
        assert row is not None
        response.status_code = 201 if added else 200
        return camera_out(row)

"""Errors -> HTTP answers, in one place (STYLE point 7).

Every answer for an error is JSON ``{"detail": "<what is wrong and what to do>", "code": "<stable id>"}``
(request validation keeps FastAPI's own 422 shape, a list of field errors).

======================================  ======  =================================
error                                   status  code
======================================  ======  =================================
vipare ``EmptyImageError``              422     empty_image
vipare ``CorruptImageError``            422     corrupt_image
vipare ``UnsupportedImageError``        415     unsupported_image
vipare ``ImageTooLargeError``           413     image_too_large
request body over the upload limit      413     image_too_large (serving.limits)
request body over the JSON limit        413     body_too_large (serving.limits)
vipare ``LocationError`` (bad lat/lon)  422     invalid_location
:class:`LocationMissingError`           422     location_missing
vipare ``ModelError``                   503     model_unavailable
:class:`ModelNotReadyError`             503     model_not_ready
:class:`AuthenticationError`            401     unauthenticated
:class:`PermissionDeniedError`          403     forbidden
:class:`NotFoundError`                  404     not_found
:class:`PhotoDeletedError`              410     photo_deleted
``NothingToExportError``                404     nothing_to_export (serving.dataset.select)
:class:`UnknownCameraError`             422     unknown_camera
:class:`CameraExistsError`              409     camera_exists
:class:`InvalidReviewError`             422     invalid_review
``InvalidTransitionError``              409     invalid_transition
``InvalidMergeError``                   422     invalid_merge
``ModelRejectedError``                  422     model_rejected (serving.model_registry)
``NoEarlierModelError``                 409     no_earlier_model (serving.model_registry)
model file over the promotion limit     413     model_too_large (serving.limits)
======================================  ======  =================================

Routes raise these and never catch bare ``Exception``; anything else is a bug and a 500.
:func:`error_status` gives the same status and code for an error caught one by one (the frames of
``POST /v1/batches``, each answered in the list).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel

from serving.incidents import InvalidMergeError, InvalidTransitionError
from vipare.errors import (
    CorruptImageError,
    EmptyImageError,
    ImageTooLargeError,
    LocationError,
    ModelError,
    UnsupportedImageError,
)

if TYPE_CHECKING:  # the batch command uses the errors without loading the web framework
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

__all__ = [
    "AuthenticationError",
    "CameraExistsError",
    "ErrorBody",
    "InvalidReviewError",
    "LocationMissingError",
    "ModelNotReadyError",
    "NotFoundError",
    "PhotoDeletedError",
    "PermissionDeniedError",
    "ServiceError",
    "UnknownCameraError",
    "error_status",
    "install_error_handlers",
]


class ErrorBody(BaseModel):
    """What an error answer holds."""

    detail: str
    code: str


class ServiceError(Exception):
    """An error the service answers with ``status_code`` and ``code``."""

    status_code = 500
    code = "error"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers


class ModelNotReadyError(ServiceError):
    """The detector is still loading or warming up."""

    status_code, code = 503, "model_not_ready"


class LocationMissingError(ServiceError):
    """The photo has no usable GPS and the request gave no position."""

    status_code, code = 422, "location_missing"


class AuthenticationError(ServiceError):
    """No API key, or an unknown or revoked one."""

    status_code, code = 401, "unauthenticated"


class PermissionDeniedError(ServiceError):
    """The key's role does not allow this action."""

    status_code, code = 403, "forbidden"


class NotFoundError(ServiceError):
    """No such object (or not one the caller may see)."""

    status_code, code = 404, "not_found"


class PhotoDeletedError(ServiceError):
    """A report's photo that is no longer kept: past retention, or erased (the report itself stays)."""

    status_code, code = 410, "photo_deleted"


class UnknownCameraError(ServiceError):
    """A camera id that is not in the registry."""

    status_code, code = 422, "unknown_camera"


class CameraExistsError(ServiceError):
    """A camera created with an id the registry already holds."""

    status_code, code = 409, "camera_exists"


class InvalidReviewError(ServiceError):
    """A review of a report's photo that cannot be stored: a box outside the photo, an unknown class..."""

    status_code, code = 422, "invalid_review"


_LIBRARY_ERRORS: tuple[tuple[type[Exception], int, str], ...] = (
    (EmptyImageError, 422, "empty_image"),
    (CorruptImageError, 422, "corrupt_image"),
    (UnsupportedImageError, 415, "unsupported_image"),
    (ImageTooLargeError, 413, "image_too_large"),
    (LocationError, 422, "invalid_location"),
    (ModelError, 503, "model_unavailable"),
    (InvalidTransitionError, 409, "invalid_transition"),
    (InvalidMergeError, 422, "invalid_merge"),
)


def error_status(exc: Exception) -> tuple[int, str] | None:
    """The HTTP status and code the service answers ``exc`` with, or None for an unexpected error."""
    if isinstance(exc, ServiceError):
        return exc.status_code, exc.code
    for error_type, status, code in _LIBRARY_ERRORS:
        if isinstance(exc, error_type):
            return status, code
    return None


def _json(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    from fastapi.responses import JSONResponse

    return JSONResponse(ErrorBody(detail=detail, code=code).model_dump(), status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    from starlette.exceptions import HTTPException as StarletteHTTPException

    async def service_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServiceError)
        return _json(exc.status_code, exc.code, exc.detail, exc.headers)

    app.add_exception_handler(ServiceError, service_error)

    for error_type, status, code in _LIBRARY_ERRORS:

        async def library_error(
            _request: Request, exc: Exception, status: int = status, code: str = code
        ) -> JSONResponse:
            return _json(status, code, str(exc))

        app.add_exception_handler(error_type, library_error)

    async def http_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = getattr(exc, "code", None) or f"http_{exc.status_code}"  # BodyTooLargeError carries its own
        return _json(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))

    app.add_exception_handler(StarletteHTTPException, http_error)

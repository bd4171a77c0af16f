"""Errors -> HTTP answers, in one place (STYLE point 7).

Every answer for an error is JSON ``{"detail": "<what is wrong and what to do>", "code": "<stable id>"}``;
an invalid request (422 ``invalid_request``) also lists its field errors in ``errors`` (FastAPI's
``loc``, ``msg``, ``type``), and ``detail`` joins them in one sentence.

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
:class:`OriginalNotKeptError`           410     original_not_kept (serving.originals)
:class:`PhotoPendingError`              503     photo_pending (still being blurred; Retry-After)
``NothingToExportError``                404     nothing_to_export (serving.dataset.select)
``ExportNotReadyError``                 409     export_not_ready (serving.export_jobs: running or failed)
:class:`UnknownCameraError`             422     unknown_camera
:class:`CameraExistsError`              409     camera_exists
:class:`InvalidReviewError`             422     invalid_review
``InvalidTransitionError``              409     invalid_transition
``InvalidMergeError``                   422     invalid_merge
``MergeTargetClosedError``              409     merge_target_closed (cleaned, rejected, duplicate)
``MergeTooFarError``                    409     merge_too_far (send force: true to merge anyway)
``ModelRejectedError``                  422     model_rejected (serving.model_registry)
``NoEarlierModelError``                 409     no_earlier_model (serving.model_registry)
model file over the promotion limit     413     model_too_large (serving.limits)
``LastAdminKeyError``                   409     last_admin_key (serving.auth)
``Host`` not a trusted name             400     untrusted_host (serving.security)
change sent by another origin's page    403     foreign_origin (serving.security)
invalid fields, query or form           422     invalid_request (``errors`` lists them)
:class:`StorageFullError` (disk full)   507     storage_full
:class:`StorageReadOnlyError`           503     storage_read_only (data folder not writable)
:class:`StorageUnavailableError`        503     storage_unavailable (I/O error; photo store unreachable)
:class:`StorageUnreadableError`         503     storage_unreadable (a read refused or failed: photo store, disk)
malformed multipart body                400     bad_request
unknown path; method not allowed        404     not_found; 405 method_not_allowed
anything else                           500     internal_error
======================================  ======  =================================

Routes raise these and never catch bare ``Exception``; anything else is a bug, answered 500
``internal_error`` in the same shape (and logged with its traceback). A write that fails because the
disk is full or read-only (:func:`storage_error`, whichever step hit it: the photo store, the
database) is answered 507 or 503 with what to do, not 500; so is a read the storage refuses or fails
(``storage_unreadable``: the photo store's key refused, the store unreachable).
:func:`error_status` gives the same status and code for an error caught one by one (the frames of
``POST /v1/batches``, each answered in the list).
"""

from __future__ import annotations

import errno
import logging
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from serving.incidents import InvalidMergeError, InvalidTransitionError, MergeTargetClosedError, MergeTooFarError
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
    "OriginalNotKeptError",
    "PhotoDeletedError",
    "PhotoPendingError",
    "PermissionDeniedError",
    "ServiceError",
    "AfterPhotoError",
    "IncidentClosedError",
    "StorageFullError",
    "StorageReadOnlyError",
    "StorageUnavailableError",
    "StorageUnreadableError",
    "UnknownCameraError",
    "error_status",
    "install_error_handlers",
    "storage_error",
]

logger = logging.getLogger("serving.errors")


class ErrorBody(BaseModel):
    """What an error answer holds (``errors`` only for 422 ``invalid_request``)."""

    detail: str
    code: str
    errors: list[dict[str, Any]] | None = None


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


class OriginalNotKeptError(ServiceError):
    """A report's unblurred original that is not kept: never (the default), or no longer."""

    status_code, code = 410, "original_not_kept"


class PhotoPendingError(ServiceError):
    """A photo still being blurred after the reader waited (serving.reports.blurring)."""

    status_code, code = 503, "photo_pending"


class UnknownCameraError(ServiceError):
    """A camera id that is not in the registry."""

    status_code, code = 422, "unknown_camera"


class CameraExistsError(ServiceError):
    """A camera created with an id the registry already holds."""

    status_code, code = 409, "camera_exists"


class AfterPhotoError(ServiceError):
    """A photo sent as taken after a cleaning that cannot be one: too far from the incident, or sent anyway."""

    status_code, code = 422, "after_photo_refused"


class IncidentClosedError(ServiceError):
    """The incident is no longer open (cleaned, rejected, a duplicate): nothing more can be added to it."""

    status_code, code = 409, "incident_closed"


class InvalidReviewError(ServiceError):
    """A review of a report's photo that cannot be stored: a box outside the photo, an unknown class..."""

    status_code, code = 422, "invalid_review"


class StorageFullError(ServiceError):
    """The disk that holds the photos or the database is full (or over quota); nothing was stored."""

    status_code, code = 507, "storage_full"


class StorageReadOnlyError(ServiceError):
    """The photo folder or the database cannot be written (read-only, or not the service's); nothing was stored."""

    status_code, code = 503, "storage_read_only"


class StorageUnavailableError(ServiceError):
    """The storage failed to take a write (a disk's I/O error, a photo store's bucket gone or unreachable);
    nothing was stored."""

    status_code, code = 503, "storage_unavailable"


class StorageUnreadableError(ServiceError):
    """A GET or HEAD whose access to the stored data was refused or failed (the photo store refuses the service's
    key or cannot be reached, a disk's I/O error); nothing was changed."""

    status_code, code = 503, "storage_unreadable"


_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
_FAILED_ERRNOS = frozenset({errno.EIO})  # serving.photos.s3 says EIO for a store that fails or cannot be reached
_UNREADABLE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EIO})
# What the database drivers say: SQLite's SQLITE_FULL and SQLITE_READONLY, PostgreSQL's
# disk_full (53100) and read_only_sql_transaction (25006).
_FULL_SIGNS = ("database or disk is full", "no space left on device", "disk quota exceeded")
_READ_ONLY_SIGNS = ("readonly database", "read-only file system", "read-only transaction")
_DATABASE_MODULES = frozenset({"sqlite3", "sqlalchemy", "psycopg", "psycopg2"})

_FULL = (
    "The service's disk is full, so nothing was stored; send the same request again later. The service's "
    "administrator must free space (or raise the quota) where vipare keeps its data."
)
_READ_ONLY = (
    "The service cannot write its data (the folder is read-only or not writable by it, or its photo store refuses "
    "its key), so nothing was stored; send the same request again later. The service's administrator must make "
    "vipare's data folder writable, or give the key of its photo store (VIPARE_PHOTO_STORE) the right to write."
)
_FAILED = (
    "The service's storage failed to take the data (an I/O error, or its photo store cannot be reached), so "
    "nothing was stored; send the same request again later. The service's administrator must check the disk "
    "of vipare's data folder, or the photo store's bucket and endpoint (VIPARE_PHOTO_STORE)."
)


_UNREADABLE = (
    "The service cannot reach its stored data now: its photo store refuses its key or cannot be reached, or a disk "
    "failed; nothing was changed. Ask again later. The service's administrator must check the photo store's bucket, "
    "endpoint and key, with its rights to read and write (VIPARE_PHOTO_STORE), or the disk of vipare's data folder."
)


def storage_error(exc: BaseException, *, reading: bool = False) -> ServiceError | None:
    """The answer for a request that failed on a full, read-only or failing store; None when ``exc`` is something else.

    With ``reading`` (a GET or HEAD: nothing the client sent was to be stored, though the service may have been
    storing something of its own, such as a photo's blurred copy), a refused or failed access (``EACCES``,
    ``EPERM``, ``EIO``) is answered :class:`StorageUnreadableError` instead.

    Looks at ``exc``, its causes and contexts (a database driver's error wrapped by SQLAlchemy) and the
    members of an exception group: an ``OSError`` with ``ENOSPC``/``EDQUOT`` (full),
    ``EROFS``/``EACCES``/``EPERM`` (not writable) or ``EIO`` (failed: a disk's I/O error, a photo
    store's bucket gone or unreachable), or a database error that says full or read-only.
    """
    pending, seen = [exc], set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if reading and isinstance(current, OSError) and current.errno in _UNREADABLE_ERRNOS:
            return StorageUnreadableError(_UNREADABLE, headers={"Retry-After": "60"})
        if isinstance(current, OSError) and current.errno in _FULL_ERRNOS:
            return StorageFullError(_FULL)
        if isinstance(current, OSError) and current.errno in _READ_ONLY_ERRNOS:
            return StorageReadOnlyError(_READ_ONLY, headers={"Retry-After": "60"})
        if isinstance(current, OSError) and current.errno in _FAILED_ERRNOS:
            return StorageUnavailableError(_FAILED, headers={"Retry-After": "60"})
        if type(current).__module__.split(".")[0] in _DATABASE_MODULES:
            message = str(current).lower()
            if getattr(current, "sqlstate", None) == "53100" or any(sign in message for sign in _FULL_SIGNS):
                return StorageFullError(_FULL)
            if getattr(current, "sqlstate", None) == "25006" or any(sign in message for sign in _READ_ONLY_SIGNS):
                return StorageReadOnlyError(_READ_ONLY, headers={"Retry-After": "60"})
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
    return None


_HTTP_CODES: dict[int, str] = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "body_too_large",
    415: "unsupported_media_type",
}
"""Codes of the framework's own refusals (an unknown path, a wrong method, a malformed multipart body)."""

_HTTP_DETAILS: dict[int, str] = {
    404: "There is nothing at this path; the service's endpoints are listed at /docs.",
    405: "This path does not take this method; the methods each endpoint takes are listed at /docs.",
}
"""What to say instead of the bare status phrase Starlette gives its own 404 and 405."""

_READING_METHODS = frozenset({"GET", "HEAD"})

_INTERNAL = (
    "Something went wrong on the service's side and the request may not have been carried out; try again, and "
    "if it fails again tell the service's administrator (quote the X-Request-ID header of this answer)."
)

_LIBRARY_ERRORS: tuple[tuple[type[Exception], int, str], ...] = (
    (EmptyImageError, 422, "empty_image"),
    (CorruptImageError, 422, "corrupt_image"),
    (UnsupportedImageError, 415, "unsupported_image"),
    (ImageTooLargeError, 413, "image_too_large"),
    (LocationError, 422, "invalid_location"),
    (ModelError, 503, "model_unavailable"),
    (InvalidTransitionError, 409, "invalid_transition"),
    (InvalidMergeError, 422, "invalid_merge"),
    (MergeTargetClosedError, 409, "merge_target_closed"),
    (MergeTooFarError, 409, "merge_too_far"),
)


def error_status(exc: Exception) -> tuple[int, str] | None:
    """The HTTP status and code the service answers ``exc`` with, or None for an unexpected error."""
    if isinstance(exc, ServiceError):
        return exc.status_code, exc.code
    for error_type, status, code in _LIBRARY_ERRORS:
        if isinstance(exc, error_type):
            return status, code
    return None


def _json(
    status: int,
    code: str,
    detail: str,
    headers: dict[str, str] | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    from fastapi.responses import JSONResponse

    body = ErrorBody(detail=detail, code=code, errors=errors).model_dump(exclude_none=True)
    return JSONResponse(body, status_code=status, headers=headers)


def _field_errors(raw: Any) -> list[dict[str, Any]]:
    """FastAPI's field errors, JSON-safe: ``loc``, ``msg``, ``type`` (the rejected input is not echoed)."""
    errors = []
    for error in raw:
        loc = [part if isinstance(part, (str, int)) else str(part) for part in error.get("loc", ())]
        errors.append({"loc": loc, "msg": str(error.get("msg", "")), "type": str(error.get("type", ""))})
    return errors


def _validation_detail(errors: list[dict[str, Any]]) -> str:
    """One sentence from the field errors: ``captured_at: Input should have timezone info; ...``."""
    parts = []
    for error in errors[:10]:
        where = ".".join(str(part) for part in error["loc"][1:]) or ".".join(str(part) for part in error["loc"])
        parts.append(f"{where}: {error['msg']}" if where else error["msg"])
    more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
    return "The request is invalid: " + "; ".join(parts) + more + ". Correct these fields and send it again."


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    from fastapi.exceptions import RequestValidationError
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
        # BodyTooLargeError carries its own code
        code = getattr(exc, "code", None) or _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        detail = str(exc.detail)
        if detail == HTTPStatus(exc.status_code).phrase:
            detail = _HTTP_DETAILS.get(exc.status_code, detail)
        return _json(exc.status_code, code, detail, dict(exc.headers or {}))

    app.add_exception_handler(StarletteHTTPException, http_error)

    async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = _field_errors(exc.errors())
        return _json(422, "invalid_request", _validation_detail(errors), errors=errors)

    app.add_exception_handler(RequestValidationError, validation_error)

    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        # Starlette runs this outermost and raises the error again afterwards, so it is still logged
        # with its traceback; the client gets the one JSON shape instead of a plain-text page.
        refusal = storage_error(exc, reading=request.method in _READING_METHODS)
        if refusal is not None:
            return _json(refusal.status_code, refusal.code, refusal.detail, refusal.headers)
        return _json(500, "internal_error", _INTERNAL)

    app.add_exception_handler(Exception, unexpected_error)

    framework_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        # FastAPI documents every 422 as its own list of field errors; document the shape sent instead.
        if app.openapi_schema is None:
            schemas = framework_openapi().get("components", {}).get("schemas", {})
            if "HTTPValidationError" in schemas:
                schemas["HTTPValidationError"] = {
                    **ErrorBody.model_json_schema(),
                    "title": "HTTPValidationError",
                    "description": "An invalid request: code invalid_request, detail in one sentence, errors by field.",
                }
        return app.openapi_schema or framework_openapi()

    app.openapi = openapi  # type: ignore[method-assign]

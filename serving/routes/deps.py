"""FastAPI dependencies: the service, a database session, the caller and what it may do.

A key is sent as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; the Open311 routes and the
photo reads their ``media_url`` points at also read the ``api_key`` query parameter, as Open311
clients do (:func:`require_open311`; query strings are never logged, see :mod:`serving.observability`).
No key: 401. A key whose role lacks the permission: 403.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from fastapi.security import APIKeyHeader, APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from serving.auth import LOCAL, Permission, Principal, any_key_created, authenticate
from serving.errors import AuthenticationError, PermissionDeniedError
from serving.observability import LOG_EXTRA_KEY
from serving.schemas import MAX_ID
from serving.service import Service

__all__ = [
    "IdPath",
    "Limit",
    "Offset",
    "ServiceDep",
    "SessionDep",
    "get_optional_principal",
    "get_principal",
    "get_service",
    "get_session",
    "require",
    "require_open311",
]

IdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="The id.")]
Limit = Annotated[int | None, Query(ge=1, le=MAX_ID, description="Items per page (capped by the server).")]
Offset = Annotated[int, Query(ge=0, le=10**9, description="Items to skip.")]

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The API key.")
_query = APIKeyQuery(name="api_key", auto_error=False, description="The API key (Open311 clients).")

_NO_KEY = (
    "Send an API key: 'Authorization: Bearer <key>' or 'X-API-Key: <key>'. "
    "An administrator creates one with: vipare keys create --role agent --name <who>"
)
_NO_KEY_YET = (
    "This service has no API key yet, so it answers nobody. On the server, create the first one with: "
    "vipare keys create --role admin --name <who>, then send it as 'Authorization: Bearer <key>'. "
    "(For a trial on this machine only, start the service with VIPARE_TRIAL_MODE=true.)"
)

_ACTIONS: dict[Permission, str] = {
    Permission.REPORT_CREATE: "upload photos",
    Permission.REPORT_READ_OWN: "read reports",
    Permission.REPORT_READ_ALL: "read every report",
    Permission.INCIDENT_READ: "read incidents",
    Permission.INCIDENT_TRANSITION: "change incident states",
    Permission.EXPORT: "export incidents",
    Permission.KEY_MANAGE: "manage API keys",
    Permission.BATCH_CREATE: "send batches of camera frames",
    Permission.CAMERA_MANAGE: "manage the camera registry",
    Permission.MODEL_MANAGE: "promote models",
    Permission.REPORT_REVIEW: "review reports' photos",
    Permission.REPORT_ERASE: "erase reports",
    Permission.ORIGINAL_READ: "read unblurred originals (privacy_officer keys only, every read logged)",
    Permission.ORIGINAL_AUDIT: "read the log of reads of unblurred originals",
}


async def get_service(request: Request) -> Service:
    """The service built at start-up (async: FastAPI would run a plain function in a worker thread)."""
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


def get_session(service: ServiceDep) -> Iterator[Session]:
    """A read session for the request."""
    with service.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def _identify(request: Request, service: Service, key: str | None) -> Principal:
    with service.sessions() as session:
        if key is None:
            if not service.open_mode(session):
                detail = _NO_KEY if any_key_created(session) else _NO_KEY_YET
                raise AuthenticationError(detail, headers={"WWW-Authenticate": "Bearer"})
            principal: Principal | None = LOCAL
        else:
            principal = authenticate(session, key)
    if principal is None:
        raise AuthenticationError(
            "This API key is unknown or revoked; ask an administrator for a valid one.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    log = request.scope.get(LOG_EXTRA_KEY)
    if isinstance(log, dict):
        log["key"] = principal.actor
    return principal


def get_principal(
    request: Request,
    service: ServiceDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header: Annotated[str | None, Depends(_header)],
) -> Principal:
    """The caller, from its API key."""
    return _identify(request, service, bearer.credentials if bearer else header)


def get_optional_principal(
    request: Request,
    service: ServiceDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header: Annotated[str | None, Depends(_header)],
) -> Principal | None:
    """The caller of a route anyone may read: None without a key (outside the trial mode's open start)."""
    key = bearer.credentials if bearer else header
    if key is None:
        with service.sessions() as session:
            if not service.open_mode(session):
                return None
    return _identify(request, service, key)


def get_open311_principal(
    request: Request,
    service: ServiceDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header: Annotated[str | None, Depends(_header)],
    query: Annotated[str | None, Depends(_query)],
) -> Principal:
    """The caller, from its API key, which Open311 clients may also send as ``?api_key=``."""
    return _identify(request, service, bearer.credentials if bearer else header or query)


def _check(principal: Principal, permission: Permission) -> Principal:
    if not principal.can(permission):
        role = str(principal.role)
        article = "An" if role[:1] in "aeiou" else "A"
        raise PermissionDeniedError(f"{article} {role} key may not {_ACTIONS[permission]}.")
    return principal


def require(permission: Permission) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency giving the caller, or answering 403 when its role lacks ``permission``.

    Async, as the other dependencies that only look at what is in memory: FastAPI runs a plain
    function in a worker thread, a trip that costs more than the check.
    """

    async def dependency(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        return _check(principal, permission)

    return dependency


def require_open311(permission: Permission) -> Callable[[Principal], Awaitable[Principal]]:
    """As :func:`require`, accepting the ``api_key`` query parameter too."""

    async def dependency(principal: Annotated[Principal, Depends(get_open311_principal)]) -> Principal:
        return _check(principal, permission)

    return dependency

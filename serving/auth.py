"""API keys, roles and what each role may do.

A key looks like ``vpr_<prefix>_<secret>``: the prefix (10 hex digits) is public and finds the row;
only the sha256 of the secret is stored, and it is compared with :func:`hmac.compare_digest`. The
secret has 256 random bits, so a plain sha256 is enough (no password hashing: nothing to brute-force).

Roles and permissions (one table, :data:`ROLE_PERMISSIONS`)::

    role      may
    agent     upload photos; read its own reports and their photos
    camera    upload frames, one or many at once (its surveyed position, when stored with the key or in
              the camera registry, locates frames without GPS)
    manager   read every report and incident, change incident states, review reports' photos, export
              (CSV, GeoJSON, Open311); manage the camera registry
    admin     create, list and revoke keys; promote and roll back models; review reports' photos; manage
              the camera registry; erase a report (its photo and personal fields, serving.erasure);
              read the log of reads of unblurred originals
    privacy_officer
              read a report's unblurred original while it is kept (VIPARE_KEEP_ORIGINALS_DAYS), each
              read logged with its reason; read that log (serving.originals). Created on the server
              only (vipare keys create), never through the API

A camera key may be tied to a registered camera (:class:`~serving.models.CameraKey`): its frames are
then that camera's (``client_ref`` ``camera:<id>``, shared with ``vipare batch``, so a frame pushed over
HTTP and found again in a batch job counts once), located by the registry's position.

No key at all: every API call is 401 with a message saying how to create one, unless the trial mode
is set (``VIPARE_TRIAL_MODE=true``), which :func:`serving.config.check_exposure` only allows on
loopback: then the service serves whoever reaches it, with every permission, until the first key is
created, and never again after that. Revoking keys never opens it: the trial ends with the first key
created, even once every key is revoked (:func:`any_key_created`), and the last active admin key
cannot be revoked (the API and ``vipare keys revoke`` both refuse, :func:`revoke_key`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from serving.errors import ServiceError, UnknownCameraError
from serving.models import ApiKey, Camera, CameraKey, utcnow
from vipare.geotag import CameraPosition

__all__ = [
    "LOCAL",
    "ROLE_PERMISSIONS",
    "LastAdminKeyError",
    "Permission",
    "Principal",
    "Role",
    "any_key_created",
    "authenticate",
    "camera_client_ref",
    "camera_principal",
    "create_key",
    "hash_secret",
    "key_camera",
    "principal_for",
    "revoke_key",
]

KEY_PREFIX = "vpr"
_KEY_PATTERN = re.compile(r"^vpr_([0-9a-f]{10})_([A-Za-z0-9_-]{20,100})$")
_DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()


class Role(StrEnum):
    """Who a key belongs to."""

    AGENT = "agent"
    CAMERA = "camera"
    MANAGER = "manager"
    ADMIN = "admin"
    PRIVACY_OFFICER = "privacy_officer"


class Permission(StrEnum):
    """One thing a key may do."""

    REPORT_CREATE = "report:create"
    REPORT_READ_OWN = "report:read-own"
    REPORT_READ_ALL = "report:read-all"
    INCIDENT_READ = "incident:read"
    INCIDENT_TRANSITION = "incident:transition"
    EXPORT = "export"
    KEY_MANAGE = "key:manage"
    BATCH_CREATE = "batch:create"
    CAMERA_MANAGE = "camera:manage"
    MODEL_MANAGE = "model:manage"
    REPORT_REVIEW = "report:review"
    REPORT_ERASE = "report:erase"
    ORIGINAL_READ = "original:read"
    ORIGINAL_AUDIT = "original:audit"


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.AGENT: frozenset({Permission.REPORT_CREATE, Permission.REPORT_READ_OWN}),
    Role.CAMERA: frozenset({Permission.REPORT_CREATE, Permission.BATCH_CREATE}),
    Role.MANAGER: frozenset(
        {
            Permission.REPORT_READ_OWN,
            Permission.REPORT_READ_ALL,
            Permission.INCIDENT_READ,
            Permission.INCIDENT_TRANSITION,
            Permission.EXPORT,
            Permission.CAMERA_MANAGE,
            Permission.REPORT_REVIEW,
        }
    ),
    Role.ADMIN: frozenset(
        {
            Permission.KEY_MANAGE,
            Permission.MODEL_MANAGE,
            Permission.CAMERA_MANAGE,
            Permission.REPORT_REVIEW,
            Permission.REPORT_ERASE,
            Permission.ORIGINAL_AUDIT,
        }
    ),
    Role.PRIVACY_OFFICER: frozenset({Permission.ORIGINAL_READ, Permission.ORIGINAL_AUDIT}),
}


@dataclass(frozen=True)
class Principal:
    """The caller of one request.

    Attributes:
        key_id: the API key's row id; None for the open local mode (no key exists).
        name: the key's name, recorded with reports and transitions.
        role: the key's role; None in the open local mode.
        permissions: what the caller may do.
        camera: the camera's surveyed position, for camera keys that have one.
        camera_id: the registered camera a camera key is tied to (or a batch job writes for).
    """

    key_id: int | None
    name: str
    role: Role | None
    permissions: frozenset[Permission]
    camera: CameraPosition | None = None
    camera_id: str | None = None

    @property
    def client_ref(self) -> str:
        """Identifies the uploader for de-duplication: the same photo from the same client counts once.

        ``camera:<id>`` for a registered camera (whichever key or batch job sends its frames),
        ``key:<id>`` for other keys, ``local`` in the open local mode.
        """
        if self.camera_id is not None:
            return camera_client_ref(self.camera_id)
        return "local" if self.key_id is None else f"key:{self.key_id}"

    @property
    def actor(self) -> str:
        """How the caller appears in an incident's history."""
        return f"{self.name} ({self.role or 'local'})"

    def can(self, permission: Permission) -> bool:
        """True when the caller holds ``permission``."""
        return permission in self.permissions


# The open local trial: every permission but reading unblurred originals, which only their role may.
LOCAL = Principal(
    key_id=None, name="local", role=None, permissions=frozenset(Permission) - {Permission.ORIGINAL_READ}
)
"""The caller when no API key exists (open local mode)."""


def camera_client_ref(camera_id: str) -> str:
    """The ``client_ref`` of a registered camera's reports."""
    return f"camera:{camera_id}"


def camera_principal(camera_id: str, position: CameraPosition | None, name: str) -> Principal:
    """The caller for frames of a registered camera sent by something other than a key (a batch job).

    Args:
        camera_id: the registered camera.
        position: its position, for frames without GPS; None for a mobile camera.
        name: who sends them, recorded with the reports and in incident histories.
    """
    role = Role.CAMERA
    return Principal(
        key_id=None, name=name, role=role, permissions=ROLE_PERMISSIONS[role], camera=position, camera_id=camera_id
    )


def hash_secret(secret: str) -> str:
    """Hex sha256 of a key's secret part."""
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(
    session: Session, role: Role, name: str, camera: CameraPosition | None = None, *, camera_id: str | None = None
) -> tuple[ApiKey, str]:
    """Create a key; the caller commits.

    Args:
        session: an open session (in a write transaction).
        role: the key's role.
        name: who or what holds the key (a person, a team, a camera), shown in histories.
        camera: a camera's surveyed position (camera keys only).
        camera_id: the registered camera the key belongs to (camera keys only).

    Returns:
        The new row and the full key, which is shown once and never stored.

    Raises:
        UnknownCameraError: ``camera_id`` is not in the registry.
    """
    if (camera is not None or camera_id is not None) and role is not Role.CAMERA:
        raise ValueError("only camera keys carry a position or a camera")
    if camera_id is not None and session.get(Camera, camera_id) is None:
        raise UnknownCameraError(
            f"There is no camera {camera_id!r} in the registry; add it first (vipare cameras add, or POST /v1/cameras)."
        )
    prefix = secrets.token_hex(5)
    secret = secrets.token_urlsafe(32)
    row = ApiKey(
        prefix=prefix,
        secret_sha256=hash_secret(secret),
        role=role.value,
        name=name,
        created_at=utcnow(),
        camera_lat=camera.lat if camera else None,
        camera_lon=camera.lon if camera else None,
        camera_accuracy_m=camera.accuracy_m if camera else None,
    )
    session.add(row)
    session.flush()
    if camera_id is not None:
        session.add(CameraKey(key_id=row.id, camera_id=camera_id))
        session.flush()
    return row, f"{KEY_PREFIX}_{prefix}_{secret}"


def principal_for(row: ApiKey, registered: Camera | None = None) -> Principal:
    """The caller a key row stands for.

    Args:
        row: the key.
        registered: the registered camera the key is tied to, if any; its position, when it has one,
            takes precedence over the one stored with the key.
    """
    role = Role(row.role)
    camera = None
    camera_name = registered.id if registered is not None else row.name
    if registered is not None and registered.lat is not None and registered.lon is not None:
        camera = CameraPosition(
            camera_id=camera_name, lat=registered.lat, lon=registered.lon, accuracy_m=registered.accuracy_m
        )
    elif row.camera_lat is not None and row.camera_lon is not None:
        camera = CameraPosition(
            camera_id=camera_name, lat=row.camera_lat, lon=row.camera_lon, accuracy_m=row.camera_accuracy_m
        )
    return Principal(
        key_id=row.id, name=row.name, role=role, permissions=ROLE_PERMISSIONS[role], camera=camera,
        camera_id=registered.id if registered is not None else None,
    )


def key_camera(session: Session, key_id: int) -> Camera | None:
    """The registered camera a key is tied to, if any."""
    return session.scalar(
        select(Camera).join(CameraKey, CameraKey.camera_id == Camera.id).where(CameraKey.key_id == key_id)
    )


def authenticate(session: Session, presented: str) -> Principal | None:
    """The caller holding ``presented``, or None for a malformed, unknown or revoked key.

    The secret is compared in constant time; an unknown prefix still costs one comparison.
    """
    match = _KEY_PATTERN.match(presented.strip())
    if match is None:
        return None
    prefix, secret = match.groups()
    row = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    expected = row.secret_sha256 if row is not None else _DUMMY_HASH
    if not hmac.compare_digest(hash_secret(secret), expected) or row is None or row.revoked_at is not None:
        return None
    return principal_for(row, key_camera(session, row.id))


class LastAdminKeyError(ServiceError):
    """Revoking this key would leave nobody able to manage keys."""

    status_code, code = 409, "last_admin_key"


def any_key_created(session: Session) -> bool:
    """True once a key has ever been created, revoked ones included: the trial mode is then over for good."""
    return session.scalar(select(ApiKey.id).limit(1)) is not None


def revoke_key(session: Session, key_id: int) -> ApiKey | None:
    """Revoke a key (idempotent); None when there is no such key. The caller commits.

    Raises:
        LastAdminKeyError: the key is the last active admin key.
    """
    row = session.get(ApiKey, key_id)
    if row is None or row.revoked_at is not None:
        return row
    if row.role == Role.ADMIN.value:
        admins = session.scalar(
            select(func.count()).select_from(ApiKey).where(ApiKey.role == Role.ADMIN.value, ApiKey.revoked_at.is_(None))
        )
        if (admins or 0) <= 1:
            raise LastAdminKeyError(
                f"Key #{key_id} is the last active admin key: revoking it would leave nobody able to manage keys. "
                "Create another admin key first (vipare keys create --role admin), then revoke this one."
            )
    row.revoked_at = utcnow()
    return row

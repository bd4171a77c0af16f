"""``vipare serve``, ``vipare keys`` and ``vipare cameras``: run the service, manage its API keys and cameras.

All read the same settings as the service (``VIPARE_*`` variables; the options below override
them), so ``vipare keys`` works on the database the service uses.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from serving.auth import LastAdminKeyError, Role, create_key, revoke_key
from serving.cameras import CAMERA_FIELDS, CameraFileError, CameraSpec, list_cameras, load_camera_file, upsert_cameras
from serving.config import ServiceSettings, UnsafeConfigurationError, check_exposure
from serving.db import active_key_count, engine_from_settings, migrate, session_factory, write_session
from serving.errors import UnknownCameraError
from serving.models import ApiKey
from serving.observability import worker_metrics_dir
from serving.photos.location import open_photos
from serving.storage import claim_photos
from serving.text import check_name
from vipare.errors import LocationError
from vipare.geotag import CameraPosition

__all__ = ["cameras", "keys", "serve"]

_WORKERS_HELP = (
    "uvicorn worker processes. CPU budget: workers x analysis slots (VIPARE_ANALYSIS_SLOTS, default "
    "cores // (workers x threads)) x onnxruntime threads (VIPARE_INTRA_OP_THREADS, default 1) should not "
    "exceed the cores. One worker already uses every core for concurrent uploads; more workers help when "
    "requests other than uploads dominate. With SQLite, writes queue whatever the count. Each worker loads "
    "the model once; /metrics shows the counts of all of them."
)


HEADER_TIMEOUT_PROTOCOL = "serving.http_protocol:HeaderTimeoutProtocol"
"""uvicorn's ``http`` option for ``vipare serve`` (a path, so worker processes import it themselves)."""


def _settings(**overrides: Any) -> ServiceSettings:
    given = {k: v for k, v in overrides.items() if v is not None}
    return ServiceSettings(**given)


@contextmanager
def _store(settings: ServiceSettings) -> Iterator[sessionmaker[Session]]:
    """The sessions of the service's database, brought to the latest revision; its engine is closed on exit.

    Every command migrates first, so a command run before the service has ever started finds its tables.
    """
    engine = engine_from_settings(settings)
    try:
        migrate(engine)
        yield session_factory(engine)
    finally:
        engine.dispose()


@click.command()
@click.option("--host", default=None,
              help="Interface to bind (default 127.0.0.1; the trial mode, VIPARE_TRIAL_MODE, only on loopback).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port (default 8000).")
@click.option("--workers", type=click.IntRange(1), default=None, help=_WORKERS_HELP)
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Database and photo store folder (default ./vipare-data, or VIPARE_DATA_DIR).")
@click.option("--log-level", default=None, help="Level of the JSON log lines (default INFO).")
def serve(host: str | None, port: int | None, workers: int | None, data_dir: Path | None,
          log_level: str | None) -> None:
    """Run the HTTP service (uploads, incidents, exports, Open311) with uvicorn."""
    import uvicorn

    overrides = {"host": host, "port": port, "workers": workers, "data_dir": data_dir, "log_level": log_level}
    settings = _settings(**overrides)
    # Worker processes build their settings from the environment: hand the options down that way.
    for name, value in overrides.items():
        if value is not None:
            os.environ[f"VIPARE_{name.upper()}"] = str(value)
    # Migrated once, before the workers start (each worker's start-up then finds it done), and the photo
    # store checked to be this database's, so that a wrong one stops the command with what to do.
    try:
        check_exposure(settings)
        with _store(settings) as sessions:
            claim_photos(open_photos(settings), sessions)
            with sessions() as session:
                keys_exist = active_key_count(session) > 0
    except UnsafeConfigurationError as exc:
        raise click.ClickException(str(exc)) from exc
    if not keys_exist and not settings.trial_mode:
        click.echo(
            "No API key exists yet: every API call will be refused until an administrator creates one "
            "(vipare keys create --role admin --name <who>).", err=True,
        )
    # Several workers count in files of one folder that /metrics reads whole (serving.observability).
    with worker_metrics_dir(settings.workers):
        uvicorn.run(
            "serving.app:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            http=HEADER_TIMEOUT_PROTOCOL,  # closes connections that never finish their headers
            timeout_keep_alive=settings.header_timeout_s,
            access_log=False,  # the service writes its own JSON line per request
            log_level=settings.log_level.lower(),
        )


@click.group()
def keys() -> None:
    """Create, list and revoke API keys (stored hashed; a key is shown once, when created)."""


@keys.command("create")
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True,
              help="agent: upload, read own; camera: upload; manager: read all, change states, review photos, "
                   "export, manage cameras; admin: manage keys and cameras, promote models, review, erase reports, "
                   "read the log of reads of originals; privacy_officer: read unblurred originals (when kept), each "
                   "read logged.")
@click.option("--name", default=None, help="Who or what holds it (shown in incident histories); default: the role.")
@click.option("--lat", type=float, default=None, help="Camera keys: the camera's surveyed latitude.")
@click.option("--lon", type=float, default=None, help="Camera keys: the camera's surveyed longitude.")
@click.option("--accuracy", "accuracy_m", type=float, default=None, help="Camera keys: position accuracy, metres.")
@click.option("--camera", "camera_id", default=None,
              help="Camera keys: the registered camera (vipare cameras add) the key belongs to; its frames are "
              "then that camera's, placed at its registered position and counted once with batch jobs'.")
@click.option("--link", "page_url", default=None, metavar="URL",
              help="Agent keys: also print a link to the agent's page at URL (e.g. https://vipare.example.fr/) that "
              "puts the key into the page when opened; the key rides in the link's #fragment, which browsers do not "
              "send to servers, and the page erases it from the address once kept.")
@click.option("--qr", "qr_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --link: write the link as a QR code to this file (.svg or .png) to print or show on a "
              "screen; '-' draws it in the terminal.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
def create(role: str, name: str | None, lat: float | None, lon: float | None, accuracy_m: float | None,
           camera_id: str | None, page_url: str | None, qr_path: Path | None, data_dir: Path | None) -> None:
    """Create a key and print it, once."""
    if camera_id is not None and role != Role.CAMERA.value:
        raise click.UsageError("only camera keys belong to a camera")
    if page_url is not None and role != Role.AGENT.value:
        raise click.UsageError("--link is for agent keys: the agent's page keeps no other key")
    if qr_path is not None and page_url is None:
        raise click.UsageError("--qr draws the --link: give --link URL too")
    if page_url is not None and not page_url.startswith(("https://", "http://")):
        raise click.UsageError("--link must be the page's address, starting with https:// (or http:// on one machine)")
    try:  # as POST /v1/keys: a name shown in histories must read as it is stored
        check_name(name or "")
    except ValueError as exc:
        raise click.UsageError(f"--name {exc}") from None
    camera = None
    if (lat is None) != (lon is None):
        raise click.UsageError("give both --lat and --lon, or neither")
    if lat is not None and lon is not None:
        if role != Role.CAMERA.value:
            raise click.UsageError("only camera keys carry a position")
        try:
            camera = CameraPosition(camera_id=name or role, lat=lat, lon=lon, accuracy_m=accuracy_m)
        except LocationError as exc:
            raise click.UsageError(str(exc)) from exc
    try:
        with _store(_settings(data_dir=data_dir)) as sessions, write_session(sessions) as session:
            row, key = create_key(session, Role(role), name or camera_id or role, camera, camera_id=camera_id)
            row_id = row.id
    except UnknownCameraError as exc:
        raise click.ClickException(exc.detail) from exc
    click.echo(key)
    click.echo(f"key #{row_id} ({role}) created; it is shown only now: store it safely.", err=True)
    if page_url is not None:
        link = f"{page_url.split('#')[0].rstrip('/')}/#key={key}"
        click.echo(link)
        if qr_path is not None:
            _write_qr(link, qr_path)


def _write_qr(link: str, path: Path) -> None:
    """The link as a QR code: an SVG or PNG file, or drawn in the terminal for ``-``."""
    import segno

    code = segno.make(link, error="m")
    if str(path) == "-":
        code.terminal(compact=True)
        return
    if path.suffix.lower() not in (".svg", ".png"):
        raise click.UsageError("--qr writes .svg or .png files (or '-' for the terminal)")
    code.save(str(path), scale=8, border=4)
    click.echo(f"QR code of the link written to {path}; whoever scans it gets the key.", err=True)


@keys.command("list")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
def list_keys(data_dir: Path | None) -> None:
    """List keys (never their secrets)."""
    from sqlalchemy import select

    with _store(_settings(data_dir=data_dir)) as sessions, sessions() as session:
        for row in session.scalars(select(ApiKey).order_by(ApiKey.id)):
            state = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}Z" if row.revoked_at else "active"
            click.echo(f"{row.id}\tvpr_{row.prefix}_…\t{row.role}\t{row.name}\t{state}")


@keys.command("revoke")
@click.argument("key_id", type=int)
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
def revoke(key_id: int, data_dir: Path | None) -> None:
    """Revoke a key at once; the last active admin key cannot be revoked (create another one first)."""
    try:
        with _store(_settings(data_dir=data_dir)) as sessions, write_session(sessions) as session:
            found = revoke_key(session, key_id) is not None
    except LastAdminKeyError as exc:
        raise click.ClickException(exc.detail) from exc
    if not found:
        raise click.ClickException(f"there is no key #{key_id}")
    click.echo(f"key #{key_id} revoked")


# --------------------------------------------------------------------------------------------------
# Cameras


@click.group()
def cameras() -> None:
    """Register street cameras: id, position, heading, description (see serving/cameras.py)."""


def _upsert(settings: ServiceSettings, specs: list[CameraSpec]) -> tuple[int, int]:
    with _store(settings) as sessions, write_session(sessions) as session:
        return upsert_cameras(session, specs)


@cameras.command("add")
@click.argument("camera_id")
@click.option("--lat", type=float, default=None, help="Surveyed latitude, decimal degrees (none: a mobile camera).")
@click.option("--lon", type=float, default=None, help="Surveyed longitude, decimal degrees.")
@click.option("--accuracy", "accuracy_m", type=float, default=None, help="Position accuracy, metres.")
@click.option("--heading", "heading_deg", type=float, default=None,
              help="Which way it looks, degrees clockwise from north.")
@click.option("--description", default=None, help="Where it is, what it watches.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
def add_camera(camera_id: str, lat: float | None, lon: float | None, accuracy_m: float | None,
               heading_deg: float | None, description: str | None, data_dir: Path | None) -> None:
    """Add a camera, or replace the fields of a registered one."""
    try:
        spec = CameraSpec(id=camera_id, lat=lat, lon=lon, accuracy_m=accuracy_m, heading_deg=heading_deg,
                          description=description)
    except ValidationError as exc:
        raise click.UsageError("; ".join(str(e["msg"]) for e in exc.errors(include_url=False))) from None
    added, _ = _upsert(_settings(data_dir=data_dir), [spec])
    click.echo(f"camera {camera_id} {'added' if added else 'updated'}")


@cameras.command("import")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
def import_cameras(file: Path, data_dir: Path | None) -> None:
    """Add or update the cameras of a CSV or YAML file (columns id, lat, lon, accuracy_m, heading_deg, description)."""
    try:
        specs = load_camera_file(file)
    except CameraFileError as exc:
        raise click.ClickException(str(exc)) from exc
    added, updated = _upsert(_settings(data_dir=data_dir), specs)
    click.echo(f"{len(specs)} cameras read: {added} added, {updated} updated, {len(specs) - added - updated} unchanged")


@cameras.command("list")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
def list_camera_command(data_dir: Path | None) -> None:
    """List the cameras, as CSV (the format vipare cameras import reads)."""
    import csv
    import io

    with _store(_settings(data_dir=data_dir)) as sessions, sessions() as session:
        rows = [CameraSpec.of(camera) for camera in list_cameras(session)]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CAMERA_FIELDS)
    for spec in rows:
        writer.writerow(["" if (value := getattr(spec, name)) is None else value for name in CAMERA_FIELDS])
    click.echo(out.getvalue(), nl=False)

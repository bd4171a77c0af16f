"""``vipare photos purge`` and ``vipare reports erase``: retention and erasure from the command line.

Like ``vipare keys``, the commands work on the service's data folder and database (``VIPARE_*``
variables, ``--data-dir``), on the machine that runs it, and may run while the service does: both
write in the service's write transactions (see :mod:`serving.retention` and :mod:`serving.erasure`).
"""

from __future__ import annotations

import getpass
from pathlib import Path

import click

from serving.cli import _settings, _store
from serving.erasure import erase
from serving.errors import NotFoundError
from serving.originals import expire_originals
from serving.photos.annotated import ANNOTATED_CACHE
from serving.photos.location import open_photos
from serving.retention import PurgeResult, purge

__all__ = ["photos", "reports"]

_DATA_DIR = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The service's data folder (default ./vipare-data, or VIPARE_DATA_DIR).",
)


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def purge_summary(result: PurgeResult, retention_days: int) -> str:
    """The line ``vipare photos purge`` prints: what was (or would be) deleted, and what was kept."""
    verb = "would delete" if result.dry_run else "deleted"
    line = (
        f"{verb} the photos of {result.reports} reports past the {retention_days}-day retention: "
        f"{result.files} files, {_megabytes(result.bytes)}"
    )
    if result.shared:
        line += f"; {result.shared} photos kept, another report under way has the same file"
    return line + (" (dry run: nothing changed)" if result.dry_run else "")


@click.group()
def photos() -> None:
    """The photo store: delete the photos past retention (VIPARE_PHOTO_RETENTION_DAYS)."""


@photos.command("purge")
@click.option("--dry-run", is_flag=True, default=False, help="Say what would be deleted, and change nothing.")
@_DATA_DIR
def purge_command(dry_run: bool, data_dir: Path | None) -> None:
    """Delete the photos of cleaned, rejected and duplicate incidents, and of reports that reached none,
    once the retention period has passed since the incident's last change and the report's reception.

    The reports stay (detections, place, time), marked as without photo; their image answers 410.
    The service does the same once a day; running it by hand is never needed, and always safe. Unblurred
    originals older than VIPARE_KEEP_ORIGINALS_DAYS go too (all of them when it is 0).
    """
    settings = _settings(data_dir=data_dir)
    store = open_photos(settings)
    with _store(settings) as sessions:
        result = purge(
            sessions,
            store,
            retention_days=settings.photo_retention_days,
            dry_run=dry_run,
            annotated_cache=settings.data_dir / ANNOTATED_CACHE,
        )
    click.echo(purge_summary(result, settings.photo_retention_days))
    if not dry_run:
        expired = expire_originals(store, settings.keep_originals_days)
        if expired:
            click.echo(f"deleted {expired} unblurred originals older than {settings.keep_originals_days} days")


@click.group()
def reports() -> None:
    """Reports: erase one on request (its photo and personal fields)."""


@reports.command("erase")
@click.argument("report_id", type=click.IntRange(1))
@click.option("--by", "erased_by", default=None, help="Who erases it, recorded in the history (default: this user).")
@_DATA_DIR
def erase_command(report_id: int, erased_by: str | None, data_dir: Path | None) -> None:
    """Erase report REPORT_ID: its photo (unless another report has the same file), its note and sender.

    Its detections, place and time stay, as an anonymous sighting; the incident's history records
    the erasure and nothing of what was erased. Erasing it again changes nothing.
    """
    settings = _settings(data_dir=data_dir)
    actor = erased_by or f"{getpass.getuser()} (command line)"
    try:
        with _store(settings) as sessions:
            done = erase(
                sessions,
                open_photos(settings),
                report_id,
                actor=actor,
                actor_key_id=None,
                annotated_cache=settings.data_dir / ANNOTATED_CACHE,
            )
    except NotFoundError as exc:
        raise click.ClickException(exc.detail) from None
    if not done.changed:
        click.echo(f"report #{report_id} was already erased on {done.erased_at:%Y-%m-%d %H:%M}Z")
        return
    if done.file_shared:
        photo = "its photo file kept: another report has the same photo"
    else:
        photo = "its photo file deleted" if done.file_deleted else "its photo was already deleted"
    click.echo(f"report #{report_id} erased ({photo})")

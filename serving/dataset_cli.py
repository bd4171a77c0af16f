"""``vipare dataset export OUT``: the reviewed photos as a YOLO dataset folder (see :mod:`serving.dataset`).

It reads the same settings as the service (``VIPARE_*`` variables; ``--data-dir`` overrides), so it
exports from the database and photo store the service uses.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from serving.cli import _settings, _store
from serving.dataset.select import ExportFilter, NothingToExportError
from serving.dataset.splits import SplitFractions
from serving.dataset.write import OutputExistsError, export_folder
from serving.photos.location import open_photos
from serving.queries import Bbox, parse_bbox

__all__ = ["dataset", "parse_time"]

_TIME_HELP = "ISO 8601 date or time; without an offset, UTC"


def parse_time(text: str, *, end_of_day: bool = False) -> datetime:
    """A time from ``YYYY-MM-DD`` or an ISO 8601 time, timezone-aware (UTC when no offset is given).

    Args:
        text: the date or time.
        end_of_day: a bare date means the end of that day (for an inclusive upper bound), else its start.

    Raises:
        ValueError: not an ISO 8601 date or time; the message says what to write.
    """
    try:
        if len(text) == 10:  # a bare date, YYYY-MM-DD
            day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
            return day + timedelta(days=1, microseconds=-1) if end_of_day else day
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a date or time: write 2024-05-01 or 2024-05-01T09:30:00+02:00") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _since(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
    try:
        return None if value is None else parse_time(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _until(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
    try:
        return None if value is None else parse_time(value, end_of_day=True)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _bbox(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Bbox | None:
    try:
        return None if value is None else parse_bbox(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group()
def dataset() -> None:
    """Export what managers reviewed as a training dataset."""


@dataset.command("export")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--since", callback=_since, default=None,
              help=f"Photos observed at or after this time ({_TIME_HELP}).")
@click.option("--until", callback=_until, default=None,
              help=f"Photos observed at or before this time ({_TIME_HELP}; a date includes the whole day).")
@click.option("--bbox", callback=_bbox, default=None, metavar="MINLON,MINLAT,MAXLON,MAXLAT",
              help="Photos inside this box, decimal degrees (WGS 84).")
@click.option("--include-unreviewed", is_flag=True, default=False,
              help="Also the photos nobody reviewed, labelled by the model's detections (marked \"labels\": "
              "\"model\" in manifest.json).")
@click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.2, show_default=True,
              help="Share of the groups (incidents, ~100 m cells per week) held out for validation.")
@click.option("--test-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
              help="Share of the groups held out for a test split no training step looks at (none by default: "
              "the first reviews are few, and the fine-tuning judges on val).")
@click.option("--force", is_flag=True, default=False,
              help="Replace what OUT holds (once the new export is complete).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The service's data folder (default ./vipare-data, or VIPARE_DATA_DIR).")
def export(out: Path, since: datetime | None, until: datetime | None, bbox: Bbox | None, include_unreviewed: bool,
           val_fraction: float, test_fraction: float, force: bool, data_dir: Path | None) -> None:
    """Write the reviewed photos to OUT as a YOLO dataset: images/, labels/, data.yaml, manifest.json.

    Each photo is labelled by its latest review (a photo without deposit gets an empty label file).
    Photos of one incident, or of one ~100 m cell and week, always fall in the same split, chosen from
    a hash so that it stays the same from one export to the next. OUT appears complete or not at all.
    """
    try:
        flt = ExportFilter(since=since, until=until, bbox=bbox, include_unreviewed=include_unreviewed)
        fractions = SplitFractions(val=val_fraction, test=test_fraction)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    settings = _settings(data_dir=data_dir)
    try:
        with _store(settings) as sessions, sessions() as session:
            summary = export_folder(session, open_photos(settings), out, flt, fractions, force=force)
    except NothingToExportError as exc:
        raise click.ClickException(exc.detail) from None
    except (OutputExistsError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    for warning in summary.warnings:
        click.echo(f"warning: {warning}", err=True)
    images = ", ".join(f"{count} {split}" for split, count in summary.images.items())
    boxes = ", ".join(f"{count} {name}" for name, count in summary.boxes.items())
    origins = ", ".join(f"{count} by {origin}" for origin, count in sorted(summary.labels.items()))
    click.echo(f"{out}: {images} photos ({origins}; {summary.negatives} without deposit); boxes: {boxes}")
    click.echo(f"dataset hash {summary.dataset_hash}")


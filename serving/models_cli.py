"""``vipare models``: promote a model, list the promotions, roll back (see :mod:`serving.model_registry`).

Like ``vipare keys``, the commands work on the service's data folder and database (``VIPARE_*``
variables, ``--data-dir``), on the machine that runs it. Running services switch to a promoted
model within ``VIPARE_MODEL_CHECK_S`` seconds (5 by default), without stopping.
"""

from __future__ import annotations

import getpass
from pathlib import Path

import click

from serving.cli import _settings, _store
from serving.model_registry import (
    ModelRejectedError,
    NoEarlierModelError,
    Promotion,
    list_promotions,
    parse_card,
    promote,
    rollback,
)

__all__ = ["models"]

_DATA_DIR = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The service's data folder (default ./vipare-data, or VIPARE_DATA_DIR).",
)
_BY = click.option(
    "--by", "promoted_by", default=None, help="Who does it, recorded in the history (default: this system user)."
)


def _who(promoted_by: str | None) -> str:
    return promoted_by or f"{getpass.getuser()} (command line)"


def _done(action: str, promotion: Promotion, check_s: float) -> None:
    click.echo(promotion.sha256)
    replaced = promotion.previous_sha256 or "the configured model"
    click.echo(
        f"model {promotion.sha256[:12]} {action} (it replaces {replaced[:12]}); running services switch to "
        f"it within {check_s:g} s.",
        err=True,
    )


@click.group()
def models() -> None:
    """Switch the service to another model: promote an ONNX file, list the promotions, roll back."""


@models.command("promote")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--comment", default=None, help="Why (recorded in the history).")
@click.option(
    "--card",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Its model card (JSON), kept with it; default: FILE's .json twin, when there is one "
    "(python -m training.export writes it).",
)
@_BY
@_DATA_DIR
def promote_command(
    file: Path, comment: str | None, card: Path | None, promoted_by: str | None, data_dir: Path | None
) -> None:
    """Check FILE (a vipare detector of the project's classes), keep a copy and make it the model in service."""
    settings = _settings(data_dir=data_dir)
    card = card or (twin if (twin := file.with_suffix(".json")).is_file() else None)
    try:
        card_data = parse_card(card.read_bytes(), card.name) if card is not None else None
        with _store(settings) as sessions, file.open("rb") as source:
            promotion, _ = promote(
                sessions,
                settings,
                source,
                name=file.name,
                promoted_by=_who(promoted_by),
                comment=comment,
                card=card_data,
            )
    except ModelRejectedError as exc:
        raise click.ClickException(exc.detail) from exc
    _done("promoted", promotion, settings.model_check_s)


@models.command("list")
@_DATA_DIR
def list_command(data_dir: Path | None) -> None:
    """The promotions, newest first (the first is the model in service): time, sha256, by whom, comment."""
    settings = _settings(data_dir=data_dir)
    with _store(settings) as sessions, sessions() as session:
        history = list_promotions(session)
    if not history:
        click.echo(f"no model promoted: the service runs {settings.model_path}", err=True)
    for promotion in history:
        click.echo(
            f"{promotion.promoted_at:%Y-%m-%d %H:%M:%S}Z\t{promotion.sha256}\t{promotion.promoted_by}\t"
            f"{promotion.comment or ''}"
        )


@models.command("rollback")
@click.option("--comment", default=None, help="Why (recorded in the history).")
@_BY
@_DATA_DIR
def rollback_command(comment: str | None, promoted_by: str | None, data_dir: Path | None) -> None:
    """Go back to the model in service before the current one (recorded as a new promotion)."""
    settings = _settings(data_dir=data_dir)
    try:
        with _store(settings) as sessions:
            promotion, _ = rollback(sessions, settings, promoted_by=_who(promoted_by), comment=comment)
    except (ModelRejectedError, NoEarlierModelError) as exc:
        raise click.ClickException(exc.detail) from exc
    _done("back in service", promotion, settings.model_check_s)

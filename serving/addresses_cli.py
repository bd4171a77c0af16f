"""``vipare addresses import``: make the address index the service reads (see :mod:`serving.addresses`).

Run once per département, and again when BAN publishes a newer export; the service reads the index
at start-up, so restart it afterwards. The index is written atomically: a service starting while the
command runs reads the previous file or the whole new one.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from serving.addresses import AddressFileError, import_ban
from serving.cli import _settings

__all__ = ["addresses"]

INDEX_FILE = "addresses.npz"
"""The index's name under the data folder when neither ``--out`` nor ``VIPARE_ADDRESSES_PATH`` says where."""


@click.group()
def addresses() -> None:
    """Addresses of incidents, offline, from the Base Adresse Nationale (VIPARE_ADDRESSES_PATH)."""


@addresses.command("import")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the index (default: VIPARE_ADDRESSES_PATH, else addresses.npz in the data folder).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The service's data folder (default ./vipare-data, or VIPARE_DATA_DIR).")
def import_command(file: Path, out: Path | None, data_dir: Path | None) -> None:
    """Import BAN's CSV export of a département (adresses-XX.csv or .csv.gz, from adresse.data.gouv.fr)."""
    settings = _settings(data_dir=data_dir)
    target = out or settings.addresses_path or settings.data_dir / INDEX_FILE
    start = time.perf_counter()
    try:
        table = import_ban(file, target)
    except AddressFileError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"{len(table)} addresses ({len(table.streets)} street names, {len(table.cities)} postcode and commune "
        f"pairs) from {file.name} written to {target} ({target.stat().st_size / 1e6:.1f} MB) in "
        f"{time.perf_counter() - start:.1f} s"
    )
    if settings.addresses_path is None or settings.addresses_path.resolve() != target.resolve():
        click.echo(f"The service reads it when VIPARE_ADDRESSES_PATH={target} (then restart it).", err=True)

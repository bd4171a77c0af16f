"""The ``vipare`` command line.

``vipare detect`` is part of the library. Other commands (``serve``, ``evaluate``...) come from the
``vipare.commands`` entry points that the package declares: each is imported only when called, so
``vipare detect`` never loads torch or FastAPI, and one whose extra is missing says which to install.
"""

from __future__ import annotations

import gc
import glob
import os
import sys
from collections.abc import Iterator
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from vipare.errors import LocationError, ModelError, VipareError

if TYPE_CHECKING:
    from vipare.pipeline import Pipeline
    from vipare.results import ImageResult

__all__ = ["main", "run"]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif"})

COMMAND_GROUP = "vipare.commands"
"""The entry-point group where installed packages add ``vipare`` subcommands (``name = "module:attr [extra]"``)."""


def _plugin_commands() -> dict[str, EntryPoint]:
    """The subcommands other packages declare, by name; the library never names them itself."""
    return {ep.name: ep for ep in entry_points(group=COMMAND_GROUP)}


class _LazyGroup(click.Group):
    """A group that imports an entry-point command only when it is called or its help is shown."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_plugin_commands()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        builtin = super().get_command(ctx, cmd_name)
        if builtin is not None:
            return builtin
        entry = _plugin_commands().get(cmd_name)
        if entry is None:
            return None
        try:
            command = entry.load()
        except ImportError as exc:
            return _unavailable(cmd_name, entry, exc)
        if not isinstance(command, click.Command):
            raise TypeError(f"entry point {entry.value!r} of {COMMAND_GROUP} is not a click command")
        return command


def _unavailable(cmd_name: str, entry: EntryPoint, exc: ImportError) -> click.Command:
    """A stand-in for a command whose extra is not installed: listed in --help, explains itself when run."""
    # The entry point names the extra its command needs ("module:attr [extra]").
    extra = ",".join(entry.extras)
    install = f"install the matching extra: pip install 'vipare[{extra}]'" if extra else "reinstall vipare"
    message = f"'vipare {cmd_name}' needs an optional dependency that is not installed ({exc.name}); {install}"
    short = f"(needs vipare[{extra}])" if extra else f"(needs {exc.name})"

    def explain(**_: object) -> None:
        raise click.ClickException(message)

    return click.Command(
        cmd_name, callback=explain, help=message, short_help=short,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


@click.group(cls=_LazyGroup)
@click.version_option(package_name="vipare")
def main() -> None:
    """Find illegal dumping in street photos and geotag it."""


def expand_sources(sources: tuple[str, ...]) -> Iterator[tuple[str, Path | None]]:
    """Expand files, folders (recursively, image suffixes only) and globs, in a stable order.

    Yields ``(shown name, path)``; ``path`` is None when nothing matched that argument.
    """
    seen: set[Path] = set()
    for src in sources:
        path = Path(src)
        if path.is_dir():
            matches = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif path.exists():
            matches = [path]
        else:
            matches = [Path(p) for p in sorted(glob.glob(src, recursive=True)) if Path(p).is_file()]
        if not matches:
            yield src, None
        for match in matches:
            if match.resolve() not in seen:
                seen.add(match.resolve())
                yield str(match), match


def _table_row(result: ImageResult) -> tuple[str, ...]:
    loc = result.location
    where = f"{loc.lat:.6f}, {loc.lon:.6f} ({loc.source})" if loc else "no position"
    labels = ", ".join(f"{d.label} {d.score:.2f}" for d in result.detections) or "-"
    return (
        result.source or "",
        "DUMPING" if result.verdict.dumping else "clean",
        f"{result.verdict.score:.2f}",
        labels,
        where,
    )


@main.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--model", "model_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="ONNX model (default: the shipped model, or VIPARE_MODEL_PATH).")
@click.option("--format", "fmt", type=click.Choice(["json", "table"]), default="json", show_default=True,
              help="One JSON object per line, or a table.")
@click.option("--save-annotated", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder where images with boxes drawn are written (as JPEG).")
@click.option("--lat", type=float, default=None, help="Latitude to use when a photo has no EXIF GPS.")
@click.option("--lon", type=float, default=None, help="Longitude to use when a photo has no EXIF GPS.")
@click.option("--accuracy", "accuracy_m", type=float, default=None, help="Accuracy of --lat/--lon, metres.")
@click.option("--conf", "conf_threshold", type=click.FloatRange(0, 1), default=None,
              help="Minimum detection score.")
@click.option("--threads", "intra_op_threads", type=click.IntRange(0), default=None,
              help="onnxruntime threads (0: all cores).")
def detect(
    sources: tuple[str, ...],
    model_path: Path | None,
    fmt: str,
    save_annotated: Path | None,
    lat: float | None,
    lon: float | None,
    accuracy_m: float | None,
    conf_threshold: float | None,
    intra_op_threads: int | None,
) -> None:
    """Detect dumped waste in photos: files, folders or globs.

    Prints one JSON object per photo (or a table). A file that cannot be read gives one error line
    on stderr and the exit code 1, after the other files have been processed.
    """
    from vipare.geotag import ClientPosition, client_position
    from vipare.pipeline import Pipeline
    from vipare.settings import Settings

    given: dict[str, Any] = {"model_path": model_path, "conf_threshold": conf_threshold,
                             "intra_op_threads": intra_op_threads}
    overrides = {k: v for k, v in given.items() if v is not None}
    settings = Settings(**overrides)
    client: ClientPosition | None = None
    if (lat is None) != (lon is None):
        raise click.UsageError("give both --lat and --lon, or neither")
    if lat is not None and lon is not None:
        try:
            client = client_position(lat, lon, accuracy_m)
        except LocationError as exc:
            raise click.UsageError(str(exc)) from exc
    try:
        pipeline = Pipeline(settings=settings)
    except ModelError as exc:
        raise click.ClickException(str(exc)) from exc

    rows: list[tuple[str, ...]] = []
    failures = 0
    for shown, path in expand_sources(sources):
        if path is None:
            failures += 1
            click.echo(f"error: {shown}: no such file, folder or matching glob", err=True)
            continue
        try:
            image = pipeline.decode(path)
            result = pipeline.analyze(image, client=client, name=shown)
        except (VipareError, OSError) as exc:
            failures += 1
            click.echo(f"error: {shown}: {exc}", err=True)
            continue
        if save_annotated is not None:
            _save_annotated(save_annotated, path, pipeline, result)
        if fmt == "json":
            click.echo(result.model_dump_json())
        else:
            rows.append(_table_row(result))
    if fmt == "table":
        _print_table(rows)
    if failures:
        sys.exit(1)


def _save_annotated(folder: Path, path: Path, pipeline: Pipeline, result: ImageResult) -> None:
    """Draw the boxes on the photo decoded at full size (the detection decode may be reduced)."""
    from PIL import Image

    from vipare.draw import annotate
    from vipare.imaging import load_image

    full = load_image(path, max_bytes=pipeline.settings.max_image_bytes,
                      max_pixels=pipeline.settings.max_image_pixels,
                      max_non_jpeg_pixels=pipeline.settings.max_non_jpeg_pixels)
    folder.mkdir(parents=True, exist_ok=True)
    drawn = annotate(full.array, result.detections)
    target = folder / f"{path.stem}-{result.image.sha256[:8]}.jpg"
    tmp = target.with_suffix(".jpg.part")
    Image.fromarray(drawn).save(tmp, format="JPEG", quality=90)
    os.replace(tmp, target)


def _print_table(rows: list[tuple[str, ...]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("photo", "verdict", "score", "detections", "location")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def run() -> None:
    """The ``vipare`` program: :func:`main`, then exit without a last garbage collection.

    When a command is done, what it leaves on the heap (the model, the store's ORM, the modules of
    its libraries) needs no collection before the process ends: freezing it spares the interpreter's
    last full pass over it. Objects are still released as their modules go.
    """
    try:
        main()
    finally:
        gc.freeze()


if __name__ == "__main__":  # pragma: no cover
    run()

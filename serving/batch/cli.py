"""``vipare batch``: street-camera frames to incidents (see :mod:`serving.batch.job`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

# Light imports only: the job starts the workers' fork server before it imports anything else.
from serving.batch.forkserver import available_cores, start_worker_server
from serving.batch.times import TIME_PATTERN_HELP, parse_tz

__all__ = ["batch"]


def _tz(_ctx: click.Context, _param: click.Parameter, value: str) -> Any:
    try:
        return parse_tz(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


_EPILOG = "\n\n".join([
    "SOURCE: a folder, a zip archive or a glob (quote it: 'frames/**/*.jpg'). Frames are the .jpg, .jpeg, "
    ".png, .webp, .heic and .heif files, hidden ones left out, taken in the order of their names.",
    "CAMERA of a frame, first known: frames.csv at the source's root (or --frames), header "
    "file,camera_id[,captured_at][,lat,lon][,accuracy_m], file relative to the root; the first folder of the "
    "frame's path (SOURCE/<camera_id>/...); --camera. Cameras must be registered (vipare cameras add or "
    "import, or --cameras FILE).",
    "POSITION, first known: the frame's own EXIF GPS (vehicle cameras); lat,lon in frames.csv; the camera's "
    "registered position. A frame with none fails (location_missing).",
    "TIME, first known: captured_at in frames.csv; EXIF GPS time; EXIF DateTimeOriginal (with its offset, "
    f"else read in --tz); the file name: {TIME_PATTERN_HELP}, read in --tz without an offset; else the time "
    "the frame is written.",
    "RESUMING: a frame is written with its report and incident in one transaction (with --output, as one "
    "fsynced JSON line). After a crash or a kill, run the same command again: frames already written (same "
    "camera, same sha256) are skipped and the others written in the order of a clean run. Failed frames "
    "are tried again.",
    "EXIT STATUS: 0 every frame written or skipped; 1 some frames failed (see the summary) or the job could "
    "not run; 130 interrupted.",
])


@click.command(epilog=_EPILOG)
@click.argument("source")
@click.option("--frames", "sidecar", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="The sidecar CSV, when it is not frames.csv at the source's root.")
@click.option("--camera", "default_camera", default=None, help="Camera of the frames nothing else gives one.")
@click.option("--cameras", "cameras_file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None, help="Cameras (CSV or YAML, as vipare cameras import): registered in the store "
              "before the job; with --output, used instead of the store's registry.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write JSON lines (one per frame, with its sha256) to this file instead of the store.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The store's folder (default ./vipare-data, or VIPARE_DATA_DIR; VIPARE_DATABASE_URL for "
              "another database): the same store as vipare serve.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: a process pool on this machine; ray: Ray Data (pip install 'vipare[ray]').")
@click.option("--workers", type=click.IntRange(0), default=None,
              help="Worker processes or Ray actors, one onnxruntime session each (default: the cores; "
              "0: in the job's own process).")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="onnxruntime threads per worker (default: max(1, cores // workers)); keep "
              "workers x threads <= cores.")
@click.option("--ray-address", default=None,
              help="An existing Ray cluster (e.g. ray://head:10001, or auto); default: a local Ray instance.")
@click.option("--ray-batch-size", type=click.IntRange(1), default=16, show_default=True,
              help="Frames per Ray map_batches call.")
@click.option("--tz", default="UTC", show_default=True, callback=_tz,
              help="Time zone of times written without an offset (frames.csv, EXIF clocks, file names): "
              "an IANA name (Europe/Paris) or +HH:MM.")
@click.option("--commit-every", type=click.IntRange(1), default=32, show_default=True,
              help="Most frames per write transaction.")
@click.option("--model", "model_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="ONNX model (default: into the store, the model last promoted with 'vipare models "
              "promote'; else the shipped model, or VIPARE_MODEL_PATH).")
@click.option("--conf", "conf_threshold", type=click.FloatRange(0, 1), default=None, help="Minimum detection score.")
@click.option("--progress/--no-progress", default=None,
              help="A progress bar (default: when stderr is a terminal; otherwise a plain line every --log-every s).")
@click.option("--log-every", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds between plain progress lines.")
def batch(
    source: str,
    sidecar: Path | None,
    default_camera: str | None,
    cameras_file: Path | None,
    output: Path | None,
    data_dir: Path | None,
    engine: str,
    workers: int | None,
    threads: int | None,
    ray_address: str | None,
    ray_batch_size: int,
    tz: Any,
    commit_every: int,
    model_path: Path | None,
    conf_threshold: float | None,
    progress: bool | None,
    log_every: float,
) -> None:
    """Analyse street-camera frames (a folder, a zip or a glob) into the service's incidents, resumably."""
    if engine == "ray" and workers == 0:
        raise click.UsageError("the Ray engine needs at least one actor (--workers 1 or more)")
    if ray_address is not None and engine != "ray":
        raise click.UsageError("--ray-address goes with --engine ray")
    if engine == "local" and workers != 0:
        start_worker_server()  # imports the library for the workers while this process imports the store's
    # Everything else (pydantic, SQLAlchemy, the service's models, rich), only now: see start_worker_server.
    from concurrent.futures.process import BrokenProcessPool

    from serving.batch.job import BatchConfig, run_batch
    from serving.batch.progress import Reporter
    from serving.batch.sinks import SinkError
    from serving.batch.sources import SourceError
    from serving.cameras import CameraFileError
    from serving.config import ServiceSettings, UnsafeConfigurationError
    from vipare.errors import ModelError

    overrides: dict[str, Any] = {"data_dir": data_dir, "model_path": model_path, "conf_threshold": conf_threshold}
    settings = ServiceSettings(**{k: v for k, v in overrides.items() if v is not None})
    if model_path is None and output is None:  # into the store: the model its service was told to use
        promoted = _promoted_model(settings)
        if promoted is not None:
            settings = settings.model_copy(update={"model_path": promoted})
    config = BatchConfig(
        source=source, sidecar=sidecar, default_camera=default_camera, cameras_file=cameras_file, output=output,
        engine="ray" if engine == "ray" else "local", workers=available_cores() if workers is None else workers,
        threads=threads, ray_address=ray_address, ray_batch_size=ray_batch_size, tz=tz, commit_every=commit_every,
    )
    if engine == "ray":
        from serving.batch.ray_engine import ray_available

        if not ray_available():
            raise click.ClickException("--engine ray needs Ray Data: pip install 'vipare[ray]'")
    reporter = Reporter(live=progress, every_s=log_every)
    try:
        summary = run_batch(config, settings, reporter)
    except (SourceError, SinkError, CameraFileError, ModelError, UnsafeConfigurationError) as exc:
        raise click.ClickException(str(exc)) from exc
    except BrokenProcessPool as exc:
        raise click.ClickException(
            f"a worker process died ({exc}); what was written stays written: run the same command again"
        ) from exc
    except KeyboardInterrupt:
        click.echo("batch: interrupted; what was written stays written: run the same command again to go on",
                   err=True)
        sys.exit(130)
    for line in summary.lines():
        click.echo(f"batch: {line}", err=True)
    if summary.errors:
        sys.exit(1)


def _promoted_model(settings: Any) -> Path | None:
    """The file of the store's latest model promotion (``vipare models promote``), or None.

    Read without migrating and without loading the detector's runtime in this process: a store from
    before promotions, or where none was made, gives None and the job uses ``model_path``.
    """
    from sqlalchemy import inspect, select

    from serving.db import engine_from_settings, session_factory
    from serving.models import ModelPromotion

    engine = engine_from_settings(settings)
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table(ModelPromotion.__tablename__):
                return None
        with session_factory(engine)() as session:
            latest = session.scalars(select(ModelPromotion).order_by(ModelPromotion.id.desc()).limit(1)).first()
    finally:
        engine.dispose()
    return None if latest is None else Path(settings.data_dir) / latest.file


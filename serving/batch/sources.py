"""A batch job's frames: SOURCE (a folder, a zip archive or a glob) expanded, each frame given its camera.

Frames are the image files (``.jpg``, ``.jpeg``, ``.png``, ``.webp``, ``.heic``, ``.heif``) under the
source, hidden files and folders (a name starting with ``.``) and ``__MACOSX`` left out, named by
their path relative to the source's root with ``/`` separators, and taken in the order of those names:

* a folder: every frame below it; the root is the folder;
* a zip archive: every member frame; the root is the archive's top;
* a glob (``'frames/**/*.jpg'``, quoted): the matching files; the root is the glob's leading part
  without wildcards (``frames``).

A frame's camera comes from the sidecar ``frames.csv`` (at the source's root, or ``--frames FILE``)
when it lists the frame, else from the folder-per-camera layout (``SOURCE/<camera_id>/...``: the
first folder of the frame's name), else from ``--camera``. The sidecar's header names its columns::

    file         the frame's name relative to the root (required)
    camera_id    its camera (required)
    captured_at  when it was taken, ISO 8601 (optional; without an offset, in --tz)
    lat, lon     where it was taken (optional, both or neither: a vehicle's GPS log)
    accuracy_m   how well that position is known, metres (optional)

A sidecar row whose file does not exist is an error of that frame (``missing_file``), except with a
glob, which picks some of the frames: rows it does not match are left alone. A malformed sidecar
stops the job before anything is processed.
"""

from __future__ import annotations

import csv
import glob
import io
import re
import zipfile
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path, PurePosixPath
from typing import Final, Literal

from serving.batch.frames import FrameRef
from serving.batch.times import parse_timestamp
from serving.cameras import CAMERA_ID_PATTERN
from vipare.cli import IMAGE_SUFFIXES
from vipare.errors import LocationError
from vipare.geotag import ClientPosition

__all__ = ["SIDECAR_NAME", "Frame", "Sidecar", "Source", "SourceError", "open_source", "read_sidecar"]

SIDECAR_NAME: Final = "frames.csv"
SIDECAR_COLUMNS: Final = ("file", "camera_id", "captured_at", "lat", "lon", "accuracy_m")
_CAMERA_ID = re.compile(CAMERA_ID_PATTERN)
_MAGIC = re.compile(r"[*?[]")

SourceKind = Literal["folder", "zip", "glob"]


class SourceError(ValueError):
    """A source or sidecar the job cannot use; the message says which and why."""


@dataclass(frozen=True, slots=True)
class SidecarRow:
    """One line of ``frames.csv``."""

    file: str
    camera_id: str
    captured_at: datetime | None
    client: ClientPosition | None


Sidecar = dict[str, SidecarRow]
"""``frames.csv`` by frame name."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame of the job.

    Attributes:
        name: its name relative to the source's root, ``/``-separated.
        ref: where its bytes are; None when the sidecar lists a file that does not exist.
        camera_id: its camera, or None when nothing names one.
        captured_at: the sidecar's time for it (UTC), if any.
        client: the sidecar's position for it, if any.
    """

    name: str
    ref: FrameRef | None
    camera_id: str | None
    captured_at: datetime | None = None
    client: ClientPosition | None = None


@dataclass(frozen=True)
class Source:
    """The expanded source.

    Attributes:
        kind: folder, zip or glob.
        root: what frame names are relative to.
        frames: the frames, sorted by name.
        sidecar: where the sidecar was read from, if one was.
    """

    kind: SourceKind
    root: str
    frames: list[Frame]
    sidecar: str | None


def _is_frame_name(name: str) -> bool:
    parts = PurePosixPath(name).parts
    if not parts or any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return False
    return PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES


def _normal(name: str) -> str:
    """A sidecar ``file`` value as a frame name: ``/`` separators, no leading ``./``."""
    text = name.strip().replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    return str(PurePosixPath(text)) if text else ""


def _glob_root(pattern: str) -> Path:
    parts = Path(pattern).parts
    static = list(parts[: next((i for i, p in enumerate(parts) if _MAGIC.search(p)), len(parts))])
    if len(static) == len(parts):  # no wildcard: a single file
        static = static[:-1]
    return Path(*static) if static else Path(".")


def open_source(
    source: str, *, sidecar: Path | None = None, default_camera: str | None = None, tz: tzinfo
) -> Source:
    """List a job's frames and give each its camera (see the module doc).

    Args:
        source: a folder, a zip archive or a glob.
        sidecar: ``frames.csv`` elsewhere than at the source's root.
        default_camera: the camera of frames that neither the sidecar nor a camera folder names.
        tz: the zone of sidecar times without an offset.

    Raises:
        SourceError: nothing matches ``source``, an unreadable archive, or a malformed sidecar.
    """
    path = Path(source)
    sidecar_text: str | None = None
    sidecar_where: str | None = None
    refs: dict[str, FrameRef] = {}
    kind: SourceKind
    if path.is_dir():
        kind, root = "folder", path
        for file in path.rglob("*"):
            name = file.relative_to(path).as_posix()
            if _is_frame_name(name) and file.is_file():
                refs[name] = FrameRef(str(file))
        if sidecar is None and (path / SIDECAR_NAME).is_file():
            sidecar = path / SIDECAR_NAME
    elif path.is_file() and zipfile.is_zipfile(path):
        kind, root = "zip", path
        try:
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    if not info.is_dir() and _is_frame_name(info.filename):
                        refs[_normal(info.filename)] = FrameRef(str(path), info.filename)
                if sidecar is None and SIDECAR_NAME in archive.namelist():
                    sidecar_text = archive.read(SIDECAR_NAME).decode("utf-8-sig")
                    sidecar_where = f"{path}!{SIDECAR_NAME}"
        except (zipfile.BadZipFile, OSError, UnicodeDecodeError) as exc:
            raise SourceError(f"{source}: cannot read the zip archive ({exc})") from None
    else:
        kind, root = "glob", _glob_root(source)
        for match in glob.glob(source, recursive=True):
            file = Path(match)
            try:
                name = file.relative_to(root).as_posix()
            except ValueError:  # pragma: no cover - glob results lie under their static prefix
                name = file.as_posix()
            if _is_frame_name(name) and file.is_file():
                refs[name] = FrameRef(str(file))
        if not refs:
            raise SourceError(f"{source}: no such folder or zip archive, and no image file matches it as a glob")
        if sidecar is None and (root / SIDECAR_NAME).is_file():
            sidecar = root / SIDECAR_NAME
    if sidecar is not None:
        try:
            sidecar_text = sidecar.read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise SourceError(f"{sidecar}: cannot read the sidecar ({exc.strerror or exc})") from None
        sidecar_where = str(sidecar)
    rows = read_sidecar(sidecar_text, sidecar_where or SIDECAR_NAME, tz) if sidecar_text is not None else {}

    frames = []
    # A glob picks some frames: the sidecar's other rows are not this job's (not missing files).
    names = set(refs) if kind == "glob" else set(refs) | set(rows)
    for name in sorted(names):
        row = rows.get(name)
        if row is not None:
            frames.append(Frame(name, refs.get(name), row.camera_id, row.captured_at, row.client))
            continue
        folders = PurePosixPath(name).parts[:-1]
        frames.append(Frame(name, refs[name], folders[0] if folders else default_camera))
    return Source(kind=kind, root=str(root), frames=frames, sidecar=sidecar_where)


def read_sidecar(text: str, where: str, tz: tzinfo) -> Sidecar:
    """Parse ``frames.csv`` (see the module doc).

    Raises:
        SourceError: a missing or unknown column, a bad camera id, time or position, or a file listed twice.
    """
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in reader.fieldnames or []]
    unknown = [h for h in header if h not in SIDECAR_COLUMNS]
    if "file" not in header or "camera_id" not in header or unknown:
        raise SourceError(
            f"{where}: the header must name the columns file,camera_id[,captured_at][,lat,lon][,accuracy_m]"
            + (f"; unknown: {', '.join(unknown)}" if unknown else "")
        )
    rows: Sidecar = {}
    for raw in reader:
        line = reader.line_num
        values = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        name = _normal(values.get("file", ""))
        camera_id = values.get("camera_id", "")
        if not name:
            raise SourceError(f"{where} line {line}: the file is empty")
        if name in rows:
            raise SourceError(f"{where} line {line}: {name} is listed twice")
        if not _CAMERA_ID.match(camera_id):
            raise SourceError(
                f"{where} line {line}: camera_id {camera_id!r} is not a camera id "
                "(1-32 letters, digits, '.', '_' or '-')"
            )
        captured_at = None
        if values.get("captured_at"):
            try:
                captured_at = parse_timestamp(values["captured_at"], tz)
            except ValueError as exc:
                raise SourceError(f"{where} line {line}: captured_at: {exc}") from None
        rows[name] = SidecarRow(name, camera_id, captured_at, _client(values, f"{where} line {line}"))
    return rows


def _client(values: dict[str, str], where: str) -> ClientPosition | None:
    lat, lon, accuracy = values.get("lat", ""), values.get("lon", ""), values.get("accuracy_m", "")
    if not lat and not lon:
        return None
    if not lat or not lon:
        raise SourceError(f"{where}: give both lat and lon, or neither")
    try:
        return ClientPosition(lat=float(lat), lon=float(lon), accuracy_m=float(accuracy) if accuracy else None)
    except ValueError as exc:
        raise SourceError(f"{where}: lat, lon and accuracy_m must be numbers ({exc})") from None
    except LocationError as exc:
        raise SourceError(f"{where}: {exc}") from None

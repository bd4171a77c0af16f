"""The photo store: one file per distinct upload, named by the sha256 of the uploaded bytes.

``<data_dir>/photos/ab/abcdef...64 hex....jpg``. The stored copy has its EXIF GPS removed (the
position lives in the database, with its source and accuracy): :func:`strip_gps` empties the GPS
block in place, byte for byte, so the picture and every other tag are untouched (JPEG, WebP, HEIF
and PNG, whose chunk checksum is recomputed). Only if the EXIF cannot be walked is the picture
re-encoded without GPS (lossy for JPEG, WebP and HEIF, at high quality).

Crash safety: a file is written to a temporary name in its final folder, flushed to disk, then
renamed (atomic), and the folder is synced; the database rows are committed after that. A batch
job's workers write without the fsyncs (``put(durable=False)``) and its writer syncs the files of a
transaction (:meth:`PhotoStore.sync_file` on threads while the workers go on, then each folder once
with :meth:`PhotoStore.sync_folder`) before committing it; a photo is stored again when the file of
its name holds other bytes (one a power cut left unsynced and torn), so the file a committed row
refers to holds the photo whichever way it came. A crash between the two leaves a file no row
references, which :meth:`PhotoStore.remove_orphans` deletes at the next start. :class:`WorkerLock`
tells a starting worker whether others are running (and may have an upload between file and
commit), in which case only old orphans are deleted, and whether any worker died without closing
since the last sweep: when none did, there is nothing to sweep, and a start costs the same whatever
the number of photos kept.
"""

from __future__ import annotations

import fcntl
import io
import os
import struct
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from PIL import Image
from PIL.ExifTags import IFD

from vipare.geotag import gps_from_exif
from vipare.results import Detection

__all__ = ["EXTENSIONS", "MEDIA_TYPES", "PhotoStore", "WorkerLock", "render_annotated", "strip_gps"]

EXTENSIONS: dict[str, str] = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "HEIF": "heic"}
"""``ImageInfo.format`` -> file extension of the stored copy."""

MEDIA_TYPES: dict[str, str] = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp", "heic": "image/heic"}

_TMP_PREFIX = ".tmp-"
_DEAD_PREFIX = "dead-"
_GPS_IFD_TAG = 0x8825
_EXIF_HEADER = b"Exif\x00\x00"
_TIFF_HEADERS = (b"II*\x00", b"MM\x00*")
# Bytes per value of each TIFF field type (EXIF 2.32 and BigTIFF's 8-byte types).
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}
_ORPHAN_BATCH = 500


# --------------------------------------------------------------------------------------------------
# Removing GPS


def strip_gps(data: bytes) -> bytes:
    """The photo with its EXIF GPS block emptied; ``data`` itself when it has none.

    The GPS directory's entries and the values they point to are overwritten with zeros and its
    entry count set to 0, in place: the file keeps its length, its picture and its other tags. For
    a JPEG every EXIF segment is treated (a multi-picture file has one per picture).

    Args:
        data: a photo vipare accepted (JPEG, PNG, WebP or HEIF).

    Returns:
        The file's bytes without a GPS position.
    """
    with Image.open(io.BytesIO(data)) as img:
        raw = img.info.get("exif")
        has_gps = bool(img.getexif().get_ifd(IFD.GPSInfo))
        fmt = img.format
    if not has_gps:
        return data
    buf = bytearray(data)
    try:
        blocks = _tiff_blocks(buf, raw if isinstance(raw, bytes) else b"", jpeg=fmt in ("JPEG", "MPO"))
        patched = [_blank_gps_ifd(buf, start, end) for start, end in blocks]
        if fmt == "PNG":
            _fix_png_checksums(buf)
        if any(patched) and not _has_gps(bytes(buf)):
            return bytes(buf)
    except (ValueError, struct.error):
        pass  # an EXIF block that cannot be walked: re-encode below
    return _reencode_without_gps(data)


def _tiff_blocks(buf: bytearray, raw_exif: bytes, *, jpeg: bool) -> list[tuple[int, int]]:
    """(start, end) of each EXIF TIFF structure in the file."""
    blocks: dict[int, int] = {}  # start -> end
    data = bytes(buf)
    tiff = raw_exif[len(_EXIF_HEADER):] if raw_exif.startswith(_EXIF_HEADER) else raw_exif
    if tiff[:4] in _TIFF_HEADERS:
        start = _find_near_copy(data, tiff)
        if start >= 0:
            blocks[start] = start + len(tiff)
    if jpeg:  # APP1 "Exif" segments: FF E1, 2-byte length, "Exif\0\0", TIFF
        marker = b"\xff\xe1"
        at = data.find(marker)
        while at >= 0:
            if buf[at + 4 : at + 10] == _EXIF_HEADER and bytes(buf[at + 10 : at + 14]) in _TIFF_HEADERS:
                (length,) = struct.unpack_from(">H", buf, at + 2)
                blocks[at + 10] = min(len(buf), at + 2 + length)
            at = data.find(marker, at + 2)
    return sorted(blocks.items())


def _find_near_copy(data: bytes, block: bytes, max_differences: int = 8) -> int:
    """Where ``block`` is in ``data``, allowing a few changed bytes; -1 when absent.

    pillow-heif hands back the EXIF with the orientation tag reset (it moved it into the container),
    so the copy in the file may differ from what Pillow reports by that one value.
    """
    exact = data.find(block)
    if exact >= 0:
        return exact
    at = data.find(block[:8])
    while at >= 0:
        candidate = data[at : at + len(block)]
        if len(candidate) == len(block):
            differences = sum(a != b for a, b in zip(candidate, block, strict=True))
            if differences <= max_differences:
                return at
        at = data.find(block[:8], at + 1)
    return -1


def _blank_gps_ifd(buf: bytearray, start: int, end: int) -> bool:
    """Zero the GPS directory of the TIFF structure ``buf[start:end]``; True when there was one."""
    order = "<" if buf[start : start + 2] == b"II" else ">"

    def field(offset: int, fmt: str) -> int:
        if offset < 0 or start + offset + struct.calcsize(fmt) > end:
            raise ValueError("EXIF offset out of bounds")
        value: int = struct.unpack_from(order + fmt, buf, start + offset)[0]
        return value

    def zero(offset: int, size: int) -> None:
        if offset < 0 or start + offset + size > end:
            raise ValueError("EXIF offset out of bounds")
        buf[start + offset : start + offset + size] = bytes(size)

    ifd0 = field(4, "I")
    gps = None
    for i in range(field(ifd0, "H")):
        if field(ifd0 + 2 + 12 * i, "H") == _GPS_IFD_TAG:
            gps = field(ifd0 + 2 + 12 * i + 8, "I")
    if gps is None:
        return False
    count = field(gps, "H")
    for j in range(count):
        entry = gps + 2 + 12 * j
        size = _TYPE_SIZES.get(field(entry + 2, "H"), 1) * field(entry + 4, "I")
        if size > 4:  # the value lives elsewhere; the entry holds its offset
            zero(field(entry + 8, "I"), size)
    zero(gps, 2 + 12 * count + 4)  # count 0, no entries, no next directory
    return True


def _fix_png_checksums(buf: bytearray) -> None:
    """Recompute the CRC of every eXIf chunk (its data changed)."""
    at = 8
    while at + 12 <= len(buf):
        length, kind = struct.unpack_from(">I4s", buf, at)
        end = at + 8 + length
        if end + 4 > len(buf):
            raise ValueError("truncated PNG chunk")
        if kind == b"eXIf":
            struct.pack_into(">I", buf, end, zlib.crc32(buf[at + 4 : end]))
        at = end + 4


def _has_gps(data: bytes) -> bool:
    with Image.open(io.BytesIO(data)) as img:
        exif = img.getexif()
        return bool(exif.get_ifd(IFD.GPSInfo)) or gps_from_exif(exif) is not None


def _reencode_without_gps(data: bytes) -> bytes:
    """Fallback: decode and save again, same format, EXIF without GPS (lossy except for PNG)."""
    with Image.open(io.BytesIO(data)) as img:
        fmt = "JPEG" if img.format == "MPO" else img.format or "JPEG"
        exif = img.getexif()
        exif.pop(_GPS_IFD_TAG, None)
        options: dict[str, object] = {"exif": exif.tobytes()}
        if img.info.get("icc_profile"):
            options["icc_profile"] = img.info["icc_profile"]
        if fmt != "PNG":
            options["quality"] = 95
        picture = img.convert("RGB") if fmt == "JPEG" and img.mode not in ("RGB", "L", "CMYK") else img
        out = io.BytesIO()
        picture.save(out, fmt, **options)
    return out.getvalue()


# --------------------------------------------------------------------------------------------------
# The store


class PhotoStore:
    """Photos under one folder, fanned out by the first two hex digits of their sha256.

    Args:
        root: the folder (created when missing).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str, ext: str) -> Path:
        """Where the photo with this sha256 and extension lives."""
        return self.root / sha256[:2] / f"{sha256}.{ext}"

    def put(self, data: bytes, sha256: str, ext: str, *, durable: bool = True) -> bool:
        """Store a photo, without its GPS, atomically; False when it was already there.

        Args:
            data: the uploaded file, as accepted by vipare.
            sha256: hex sha256 of ``data`` (the file's name).
            ext: extension for the format (:data:`EXTENSIONS`).
            durable: on disk when this returns: the file and its folders fsynced. False leaves that
                to :meth:`sync`, which must return before anything refers to the photo.
        """
        final = self.path(sha256, ext)
        content = strip_gps(data)
        if _holds(final, content):
            if durable:  # it may be a batch worker's, not synced yet
                self.sync(sha256, ext)
            return False
        folder_is_new = not final.parent.exists()
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
        try:
            with open(tmp, "wb") as handle:
                handle.write(content)
                if durable:
                    handle.flush()
                    os.fsync(handle.fileno())
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        if durable:
            _fsync(final.parent)
            if folder_is_new:
                _fsync(self.root)
        return True

    def sync(self, sha256: str, ext: str) -> None:
        """Put a photo written with ``put(durable=False)`` on disk: its file and folders fsynced.

        Raises:
            OSError: the file is not there, or the disk failed to write it.
        """
        self.sync_folder(self.sync_file(sha256, ext))
        self.sync_folder(self.root)

    def sync_file(self, sha256: str, ext: str) -> Path:
        """The first half of :meth:`sync`: fsync the photo's file; returns its folder.

        For many photos at once: their files, then each of their folders once and the root
        (:meth:`sync_folder`), before anything refers to them.
        """
        final = self.path(sha256, ext)
        _fsync(final)
        return final.parent

    def sync_folder(self, folder: Path) -> None:
        """The second half of :meth:`sync`: fsync a folder of the store (a photo's, or the root, for new folders)."""
        _fsync(folder)

    def files(self) -> Iterator[Path]:
        """Every file in the store, temporary ones included, in name order.

        Read with ``os.scandir``, whose entries know their type, so listing costs no ``stat`` per photo.
        """
        with os.scandir(self.root) as entries:
            folders = sorted(entry.path for entry in entries if entry.is_dir(follow_symlinks=False))
        for folder in folders:
            with os.scandir(folder) as entries:
                names = sorted(entry.path for entry in entries if entry.is_file(follow_symlinks=False))
            yield from map(Path, names)

    def remove_orphans(self, referenced: Callable[[Sequence[str]], set[str]], *, older_than_s: float = 0.0) -> int:
        """Delete files no report references, and leftover temporary files.

        Args:
            referenced: given sha256 values, returns those some report references.
            older_than_s: keep files modified less than this many seconds ago.

        Returns:
            How many files were deleted.
        """
        now, removed = time.time(), 0
        batch: list[Path] = []

        def flush() -> int:
            keep = referenced([p.name.split(".", 1)[0] for p in batch])
            gone = 0
            for path in batch:
                if path.name.split(".", 1)[0] not in keep and _age(path, now) >= older_than_s:
                    path.unlink(missing_ok=True)
                    gone += 1
            batch.clear()
            return gone

        for path in self.files():
            if path.name.startswith(_TMP_PREFIX):
                if _age(path, now) >= older_than_s:
                    path.unlink(missing_ok=True)
                    removed += 1
                continue
            batch.append(path)
            if len(batch) >= _ORPHAN_BATCH:
                removed += flush()
        if batch:
            removed += flush()
        return removed


def _holds(path: Path, content: bytes) -> bool:
    """Whether the file at ``path`` holds exactly ``content`` (False when there is none)."""
    try:
        if path.stat().st_size != len(content):
            return False
        return path.read_bytes() == content
    except FileNotFoundError:
        return False


def _age(path: Path, now: float) -> float:
    try:
        return now - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _fsync(path: Path) -> None:
    """fsync a file or a folder (a folder's entries: what was created, renamed or deleted in it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class WorkerLock:
    """A lock file each worker holds shared while it runs, and a mark of its own while it may write.

    Both are released by the OS even on kill -9. The marks are files in ``.writers/`` beside the
    lock file, each held locked by its worker and deleted when the worker closes: a mark that can be
    locked by another process belongs to a worker that died without closing (killed, crashed,
    powered off) and may have left a photo without its report. :meth:`sweep_needed` finds them;
    :meth:`swept` forgets those the sweep covered: all of them after a sweep alone, and after a sweep
    that kept the files younger than a grace period, those found dead at least that long ago (their
    files are older). A store without ``.writers/`` (made before marks existed) is swept once.

    Args:
        path: the lock file (created).
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self._marks = path.parent / ".writers"
        self._mark: tuple[Path, int] | None = None
        self._dead: list[tuple[Path, float, int | None]] = []  # (mark, found dead at, its locked fd)
        self._alone = False

    def acquire(self) -> bool:
        """Take the lock; True when no other worker holds it (the caller then holds it exclusively).

        Call :meth:`share` once the work that needed exclusivity is done.
        """
        assert self._fd is not None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fcntl.flock(self._fd, fcntl.LOCK_SH)
            self._alone = False
        else:
            self._alone = True
        return self._alone

    def share(self) -> None:
        """Hold the lock shared, letting other workers start."""
        assert self._fd is not None
        fcntl.flock(self._fd, fcntl.LOCK_SH)

    def sweep_needed(self) -> bool:
        """True when a worker died without closing since the sweep that covers it, or the store has no marks yet.

        Call it after :meth:`acquire` and before :meth:`share`.
        """
        self._forget_fds()
        now = time.time()
        if not self._marks.is_dir():  # a store from before marks: as if a worker had died just now
            self._marks.mkdir(exist_ok=True)
            (self._marks / f"{_DEAD_PREFIX}{now:.3f}-{uuid.uuid4().hex}").touch()
            _fsync(self._marks)
            _fsync(self._marks.parent)
        with os.scandir(self._marks) as entries:
            names = sorted(entry.name for entry in entries)
        for name in names:
            path = self._marks / name
            if name.startswith(_DEAD_PREFIX):
                self._dead.append((path, _died_by(name, now), None))
                continue
            if name.startswith(_TMP_PREFIX):  # a mark being made; left over if its worker died making it
                if self._alone:  # then no other worker is making one: a leftover, from before any photo
                    path.unlink(missing_ok=True)
                continue
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:  # its worker closed meanwhile
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a live worker's
                os.close(fd)
                continue
            self._dead.append((path, now, fd))
        return bool(self._dead)

    def swept(self, checked_before: float) -> None:
        """Forget the dead workers a sweep covered: it checked every photo older than ``checked_before`` (epoch s)."""
        for path, died_by, _fd in self._dead:
            if died_by <= checked_before:
                path.unlink(missing_ok=True)
            elif not path.name.startswith(_DEAD_PREFIX):
                os.replace(path, self._marks / f"{_DEAD_PREFIX}{died_by:.3f}-{uuid.uuid4().hex}")
        if self._dead:
            _fsync(self._marks)
        self._forget_fds()

    def mark(self) -> None:
        """Put down this worker's mark, before it writes any photo and before :meth:`share`.

        :meth:`release` takes it away.
        """
        if self._mark is not None:
            return
        name = uuid.uuid4().hex
        self._marks.mkdir(exist_ok=True)
        tmp = self._marks / f"{_TMP_PREFIX}{name}"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)  # locked before anyone can see it under its final name
        final = self._marks / f"{name}.mark"
        os.replace(tmp, final)
        _fsync(self._marks)
        self._mark = (final, fd)

    def release(self) -> None:
        """Take this worker's mark away (it closed cleanly) and let go of the lock."""
        self._forget_fds()
        if self._mark is not None:
            path, fd = self._mark
            path.unlink(missing_ok=True)
            os.close(fd)
            self._mark = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _forget_fds(self) -> None:
        for _path, _died_by, fd in self._dead:
            if fd is not None:
                os.close(fd)
        self._dead = []


def _died_by(dead_name: str, default: float) -> float:
    """The time in a ``dead-<epoch s>-<id>`` mark's name; ``default`` when it has none."""
    try:
        return float(dead_name.split("-")[1])
    except (IndexError, ValueError):
        return default


# --------------------------------------------------------------------------------------------------
# Annotated variant


def render_annotated(
    path: Path, detections: Sequence[Detection], *, max_side: int = 1600, max_pixels: int = 120_000_000
) -> bytes:
    """The stored photo, upright, with the detections' boxes drawn, as a JPEG at most ``max_side`` wide or high.

    Args:
        path: a stored photo.
        detections: boxes in pixels of the upright original photo.
        max_side: longest side of the result, pixels.
        max_pixels: the intake's pixel limit.
    """
    from vipare.draw import annotate  # OpenCV: only where a page asks for a drawing
    from vipare.imaging import load_image

    half = max(1, max_side // 2)  # load_image keeps twice the target size when it reduces a JPEG
    image = load_image(path, max_pixels=max_pixels, target_size=(half, half))
    drawn = annotate(image.array, detections, original_size=(image.info.width, image.info.height))
    picture = Image.fromarray(drawn)
    picture.thumbnail((max_side, max_side))  # only ever shrinks
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=85)
    return out.getvalue()

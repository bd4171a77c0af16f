"""The lock between the processes that write to one photo store (the service's workers, batch jobs).

A crash between a photo's file and the commit of its report leaves a file no row references,
which :meth:`serving.photos.store.PhotoStore.remove_orphans` deletes at the next start.
:class:`WorkerLock` tells a starting worker whether others are running (and may have an upload
between file and commit), in which case only old orphans are deleted, and whether any worker died
without closing since the last sweep: when none did, there is nothing to sweep, and a start costs
the same whatever the number of photos kept.
"""

from __future__ import annotations

import fcntl
import os
import time
import uuid
from pathlib import Path

from serving.photos.store import fsync_path

__all__ = ["WorkerLock"]

_TMP_PREFIX = ".tmp-"
_DEAD_PREFIX = "dead-"


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
            (self._marks / _dead_name(now)).touch()
            fsync_path(self._marks)
            fsync_path(self._marks.parent)
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
                os.replace(path, self._marks / _dead_name(died_by))
        if self._dead:
            fsync_path(self._marks)
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
        fsync_path(self._marks)
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


def _dead_name(died_by: float) -> str:
    """The name of a dead worker's mark: ``dead-<epoch s>-<id>``, the time written exactly.

    ``repr`` gives back the same float, so a sweep that started after ``died_by`` covers it. A
    rounded time (``.3f``) could come out up to half a millisecond later than the sweep's start and
    leave the mark for one more, useless, sweep.
    """
    return f"{_DEAD_PREFIX}{died_by!r}-{uuid.uuid4().hex}"


def _died_by(dead_name: str, default: float) -> float:
    """The time in a ``dead-<epoch s>-<id>`` mark's name; ``default`` when it has none."""
    try:
        return float(dead_name.split("-")[1])
    except (IndexError, ValueError):
        return default

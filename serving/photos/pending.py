"""Photos accepted but not stored blurred yet: an upload is answered once its analysis is committed.

An agent waits for the analysis (decode, detect, locate) and the commit, not for the blurring:
finding faces and plates and encoding the blurred copy of a 12 MP photo cost more than the analysis
itself, so :mod:`serving.reports.blurring` runs them after the answer. In the meantime the photo is
held in the store (:meth:`serving.photos.store.PhotoStore.hold`: metadata removed, fsynced before the
report is committed, never served), and every reader of the photo first waits for its blurred copy.

:class:`InFlight` is what a reader waits on in this process. A reader in another process, or after a
crash, finds the held file and blurs it itself; the next start blurs every held photo a report refers
to, and the store's orphan sweep deletes those no report refers to.
"""

from __future__ import annotations

import threading

__all__ = ["InFlight"]


class InFlight:
    """The photos this process is blurring, by sha256, so that a reader can wait for one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, threading.Event] = {}

    def start(self, sha256: str) -> bool:
        """Claim the blurring of a photo; False when this process is blurring it already."""
        with self._lock:
            if sha256 in self._running:
                return False
            self._running[sha256] = threading.Event()
            return True

    def finish(self, sha256: str) -> None:
        """The blurring claimed by :meth:`start` ended (stored or failed): wake its readers."""
        with self._lock:
            event = self._running.pop(sha256, None)
        if event is not None:
            event.set()

    def wait(self, sha256: str, timeout: float) -> bool:
        """Wait, at most ``timeout`` seconds, for this process's blurring of a photo; True when none runs now."""
        with self._lock:
            event = self._running.get(sha256)
        return event is None or event.wait(timeout)

    def __len__(self) -> int:
        with self._lock:
            return len(self._running)

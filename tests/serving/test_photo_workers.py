"""The worker lock's dead marks: a sweep that started after a worker was found dead covers it."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.photos import workers
from serving.photos.workers import WorkerLock


@pytest.mark.parametrize("now", [1_800_000_000.0006, 1_800_000_000.0004, 1_800_000_000.9999996, 1_800_000_000.0])
def test_a_sweep_started_when_the_mark_was_made_covers_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, now: float
) -> None:
    """The mark's time is the exact time it was found, never rounded up past the sweep's start."""
    monkeypatch.setattr(workers.time, "time", lambda: now)
    lock = WorkerLock(tmp_path / ".workers.lock")
    assert lock.acquire()
    assert lock.sweep_needed()  # a store without marks: as if a worker had just died
    lock.swept(checked_before=now)
    assert not lock.sweep_needed()
    lock.release()


def test_a_death_after_the_sweep_began_is_kept_for_the_next(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers.time, "time", lambda: 1_800_000_000.5)
    lock = WorkerLock(tmp_path / ".workers.lock")
    assert lock.acquire() and lock.sweep_needed()
    lock.swept(checked_before=1_800_000_000.4)  # a sweep that kept files younger than the death
    assert lock.sweep_needed()
    lock.swept(checked_before=1_800_000_000.5)
    assert not lock.sweep_needed()
    lock.release()

"""Training helpers that need no torch (fast)."""

from __future__ import annotations

import datetime as dt

import pytest

from training.train import hours_until, software_versions

NOW = dt.datetime(2026, 1, 1, 3, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(("end", "hours"), [("05:15", 2.25), ("03:30", 0.5), ("02:00", 23.0)])
def test_hours_until(end: str, hours: float) -> None:
    assert hours_until(end, NOW) == pytest.approx(hours)


def test_software_versions_has_python() -> None:
    assert "python" in software_versions()

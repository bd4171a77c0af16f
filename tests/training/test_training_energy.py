"""The energy estimate's arithmetic and where a training run's CPU-seconds are read from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.energy import training_cpu_seconds, wh


def test_watt_hours_are_cpu_seconds_times_power_over_an_hour() -> None:
    assert wh(3600, 10) == pytest.approx(10.0)
    assert wh(323.4, 10) == pytest.approx(0.898, abs=1e-3)


def test_a_run_s_record_wins_over_its_cpu_log(tmp_path: Path) -> None:
    (tmp_path / "cpu.log").write_text("2026-12-03T08:10:29Z 18.9\n2026-12-03T08:10:59Z 77.5\n")
    assert training_cpu_seconds(tmp_path) == 77.5
    (tmp_path / "run.json").write_text(json.dumps({"cpu_seconds": 9000.5}))
    assert training_cpu_seconds(tmp_path) == 9000.5


def test_a_run_without_either_has_no_figure(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text(json.dumps({"started": "x"}))
    assert training_cpu_seconds(tmp_path) is None

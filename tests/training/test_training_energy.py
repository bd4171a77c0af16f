"""The energy estimate's arithmetic and where a training run's CPU-seconds are read from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.energy import recorded_runs, training_cpu_seconds, training_rows, wh


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


def test_a_fine_tuned_model_counts_every_run_of_its_lineage(tmp_path: Path) -> None:
    first, second = tmp_path / "clean-480", tmp_path / "clean-544"
    for run, seconds in ((first, 12193.0), (second, 10440.5)):
        run.mkdir()
        (run / "run.json").write_text(json.dumps({"cpu_seconds": seconds}))
    rows = training_rows([first, second])
    assert [row["work"] for row in rows] == ["training run clean-480", "training run clean-544",
                                            "training, 2 runs in all"]
    assert rows[-1]["cpu_seconds"] == pytest.approx(22633.5)
    assert training_rows([first]) == rows[:1]


def test_a_run_that_recorded_no_cpu_time_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unfinished.*recorded no CPU time"):
        training_rows([tmp_path / "unfinished"])


def test_a_lineage_goes_on_from_the_runs_an_earlier_model_recorded(tmp_path: Path) -> None:
    twin = tmp_path / "earlier.json"
    twin.write_text(json.dumps({"energy": {"rows": [
        {"work": "12 MP phone upload", "unit": "1,000 photos", "cpu_seconds": 407.7, "wh": 1.13},
        {"work": "training run clean-480", "unit": "run", "cpu_seconds": 12192.6, "wh": 33.87},
        {"work": "training run clean-544", "unit": "run", "cpu_seconds": 10098.3, "wh": 28.05},
        {"work": "training, 2 runs in all", "unit": "model", "cpu_seconds": 22290.9, "wh": 61.92},
    ]}}))
    earlier = recorded_runs(twin)
    assert [row["work"] for row in earlier] == ["training run clean-480", "training run clean-544"]
    latest = tmp_path / "clean-544b"
    latest.mkdir()
    (latest / "run.json").write_text(json.dumps({"cpu_seconds": 9000.0}))
    rows = training_rows([latest], earlier)
    assert [row["work"] for row in rows] == ["training run clean-480", "training run clean-544",
                                            "training run clean-544b", "training, 3 runs in all"]
    assert rows[-1]["cpu_seconds"] == pytest.approx(31290.9)
    assert "wh" not in rows[0]  # recomputed at the power the new measurement states


def test_a_twin_without_training_runs_is_refused_by_name(tmp_path: Path) -> None:
    twin = tmp_path / "bare.json"
    twin.write_text(json.dumps({"energy": {"rows": [{"work": "upload", "unit": "1,000 photos", "cpu_seconds": 1.0}]}}))
    with pytest.raises(ValueError, match="bare.json records no training run"):
        recorded_runs(twin)


def test_a_twin_with_a_run_missing_its_figure_is_refused_by_name(tmp_path: Path) -> None:
    twin = tmp_path / "torn.json"
    twin.write_text(json.dumps({"energy": {"rows": [{"work": "training run a", "unit": "run"}]}}))
    with pytest.raises(ValueError, match="torn.json has a training row without its work or cpu_seconds"):
        recorded_runs(twin)

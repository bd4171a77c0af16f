"""Training helpers that need no torch (fast)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from click.testing import CliRunner

from training import train
from training.train import TrainConfig, hours_until, software_versions

NOW = dt.datetime(2026, 1, 1, 3, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(("end", "hours"), [("05:15", 2.25), ("03:30", 0.5), ("02:00", 23.0)])
def test_hours_until(end: str, hours: float) -> None:
    assert hours_until(end, NOW) == pytest.approx(hours)


def test_software_versions_has_python() -> None:
    assert "python" in software_versions()


def _parsed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *args: str) -> TrainConfig:
    """The configuration ``python -m training.train --data DATA ARGS`` hands to :func:`train.fine_tune`."""
    seen: list[TrainConfig] = []
    monkeypatch.setattr(train, "fine_tune", lambda config, resume: seen.append(config) or tmp_path)
    data = tmp_path / "data.yaml"
    data.write_text("names: {0: dumped_waste}\n")
    result = CliRunner().invoke(train.main, ["--data", str(data), *args])
    assert result.exit_code == 0, result.output
    return seen[0]


@pytest.mark.parametrize(("args", "multi_scale"), [((), 0.0), (("--multi-scale", "0.25"), 0.25)])
def test_cli_passes_multi_scale_to_ultralytics(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, args: tuple[str, ...], multi_scale: float
) -> None:
    config = _parsed(monkeypatch, tmp_path, "--imgsz", "544", *args)
    assert config.augment["multi_scale"] == multi_scale
    assert config.imgsz == 544


@pytest.mark.parametrize(("args", "gain"), [((), 0.5), (("--cls-gain", "1.0"), 1.0)])
def test_cli_passes_the_classification_loss_gain(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, args: tuple[str, ...], gain: float
) -> None:
    assert _parsed(monkeypatch, tmp_path, *args).cls_gain == gain


def test_cli_refuses_a_multi_scale_beyond_half(tmp_path: Path) -> None:
    data = tmp_path / "data.yaml"
    data.write_text("names: {0: dumped_waste}\n")
    result = CliRunner().invoke(train.main, ["--data", str(data), "--multi-scale", "0.8"])
    assert result.exit_code == 2
    assert "--multi-scale" in result.output

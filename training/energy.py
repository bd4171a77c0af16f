"""Energy estimates from CPU time: this machine exposes no energy counter (no RAPL).

``Wh = CPU-seconds x watts_per_core / 3600``; the CPU-seconds of a training run are those
``training.train`` records in ``run.json`` (or, for a run made before it did, the last line of the
run's ``cpu.log``: a sampler's ``<UTC time> <cumulative CPU-seconds of the process tree>``).
Used by ``benchmarks/bench_energy.py``, which writes the model card's energy table.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

WATTS_PER_CORE = 10.0
SECONDS_PER_HOUR = 3600.0


def training_cpu_seconds(run: Path) -> float | None:
    """CPU-seconds of a training run: ``run.json``'s ``cpu_seconds``, else the last ``cpu.log`` line."""
    record = run / "run.json"
    if record.exists():
        value = json.loads(record.read_text()).get("cpu_seconds")
        if value is not None:
            return float(value)
    log = run / "cpu.log"
    if log.exists():
        lines = [line.split() for line in log.read_text().splitlines() if line.strip()]
        if lines:
            return float(lines[-1][-1])
    return None


def wh(cpu_seconds: float, watts_per_core: float) -> float:
    """Watt-hours for ``cpu_seconds`` of one busy core at ``watts_per_core``."""
    return cpu_seconds * watts_per_core / SECONDS_PER_HOUR


def recorded_runs(twin: Path) -> list[dict[str, Any]]:
    """The per-run training rows a model's JSON twin recorded (``bench_energy --record``).

    For a model fine-tuned from that one on another machine, whose earlier run folders are not
    at hand: its lineage starts with these rows, measured when those runs ended.

    Raises:
        ValueError: the twin is not JSON, records no training run, or a row lacks its figure.
    """
    energy = json.loads(twin.read_text()).get("energy") or {}
    runs = [row for row in energy.get("rows", []) if row.get("unit") == "run"]
    if any(not isinstance(row.get("cpu_seconds"), int | float) or "work" not in row for row in runs):
        raise ValueError(f"{twin} has a training row without its work or cpu_seconds: record it again")
    rows = [{"work": row["work"], "unit": "run", "cpu_seconds": float(row["cpu_seconds"])} for row in runs]
    if not rows:
        raise ValueError(f"{twin} records no training run (no 'energy' rows per run: bench_energy --record)")
    return rows


def training_rows(runs: Sequence[Path], earlier: Sequence[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """One row per training run, and their total when the model took several (a fine-tuned lineage).

    ``earlier``: rows of the runs before ``runs`` (:func:`recorded_runs`), first in the lineage.

    Raises:
        ValueError: a run recorded no CPU time (started before runs recorded it, or still running).
    """
    rows: list[dict[str, Any]] = [dict(row) for row in earlier]
    for run in runs:
        seconds = training_cpu_seconds(run)
        if seconds is None:
            raise ValueError(f"{run} recorded no CPU time (no cpu_seconds in run.json, no cpu.log)")
        rows.append({"work": f"training run {run.name}", "unit": "run", "cpu_seconds": round(seconds, 1)})
    if len(rows) > 1:
        total = sum(row["cpu_seconds"] for row in rows)
        rows.append({"work": f"training, {len(rows)} runs in all", "unit": "model", "cpu_seconds": round(total, 1)})
    return rows

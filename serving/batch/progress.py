"""What a batch job says while it runs and when it ends.

On a terminal, a rich progress bar (frames done of total, frames/s, elapsed, ETA) with warnings
printed above it; otherwise (a log file, a scheduler) one plain line every ``every_s`` seconds. At the
end, :class:`Summary` gives the counts: frames, written, deposits, incidents, skipped, duplicates,
errors by kind.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

__all__ = ["Reporter", "Summary"]

MAX_ERROR_LINES = 20
"""Frame errors printed one by one; after that only counted."""


@dataclass
class Summary:
    """The counts of one run.

    Attributes:
        frames: frames in the source (sidecar rows without a file included).
        written: frames written by this run (new reports, or new JSON lines).
        deposits: of those, frames whose verdict is dumping.
        incidents: what the written deposits did to incidents (opened, joined, late).
        skipped: frames an earlier run already wrote (same camera, same sha256).
        duplicates: frames written earlier in this run, or meanwhile by another way (same camera and sha256).
        analysed: frames the engine analysed in this run.
        errors: frames that could not be used, by kind (the service's error codes, and missing_file,
            no_camera, unknown_camera, unreadable, changed, location_missing).
        elapsed_s: wall time of the run, seconds.
    """

    frames: int = 0
    written: int = 0
    deposits: int = 0
    incidents: Counter[str] = field(default_factory=Counter)
    skipped: int = 0
    duplicates: int = 0
    analysed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0

    @property
    def done(self) -> int:
        """Frames dealt with so far, however."""
        return self.written + self.skipped + self.duplicates + sum(self.errors.values())

    @property
    def rate(self) -> float:
        """Frames analysed per second of the run."""
        return self.analysed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def lines(self) -> list[str]:
        """The summary as lines of text."""
        incidents = ", ".join(f"{n} {action}" for action, n in sorted(self.incidents.items())) or "none"
        errors = ", ".join(f"{n} {kind}" for kind, n in sorted(self.errors.items())) or "none"
        return [
            f"frames      {self.frames}",
            f"written     {self.written} ({self.deposits} with deposits; incidents: {incidents})",
            f"skipped     {self.skipped} (written by an earlier run)",
            f"duplicates  {self.duplicates}",
            f"errors      {sum(self.errors.values())} ({errors})",
            f"time        {self.elapsed_s:.2f} s, {self.analysed} frames analysed, {self.rate:.1f} frames/s",
        ]


class _RateColumn(ProgressColumn):
    """frames/s over rich's recent window."""

    def render(self, task: Task) -> Text:
        speed = task.speed
        return Text(f"{speed:.1f} frames/s" if speed else "- frames/s", style="progress.data.speed")


class Reporter:
    """Progress on a terminal (rich) or as plain log lines.

    Args:
        stream: where to write (stderr).
        live: a progress bar; default: when ``stream`` is a terminal.
        every_s: seconds between plain lines.
    """

    def __init__(self, stream: TextIO | None = None, *, live: bool | None = None, every_s: float = 10.0) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.every_s = every_s
        self._errors_shown = 0
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._start = self._last = time.monotonic()
        self._summary: Summary | None = None

    def start(self, summary: Summary, description: str) -> None:
        """Begin: ``summary.frames`` frames to go."""
        self._summary = summary
        self._start = self._last = time.monotonic()
        if self.live:
            console = Console(file=self.stream)
            self._progress = Progress(
                TextColumn("[bold]batch"),
                BarColumn(),
                MofNCompleteColumn(),
                _RateColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task("frames", total=summary.frames)
        self.note(description)

    def note(self, message: str) -> None:
        """A line for the operator, above the bar on a terminal."""
        if self._progress is not None:
            self._progress.console.print(message, markup=False, highlight=False)
        else:
            print(message, file=self.stream, flush=True)

    def frame_error(self, name: str, kind: str, message: str) -> None:
        """Report one frame's error (the first :data:`MAX_ERROR_LINES`, then only counted)."""
        self._errors_shown += 1
        if self._errors_shown <= MAX_ERROR_LINES:
            self.note(f"error: {name}: {kind}: {message}")
        elif self._errors_shown == MAX_ERROR_LINES + 1:
            self.note("error: more errors are only counted (see the summary)")

    def update(self) -> None:
        """Show the counts so far (the bar, or a plain line at most every ``every_s`` seconds)."""
        summary = self._summary
        if summary is None:
            return
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=summary.done)
            return
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self.note(self._plain(summary, now))

    def _plain(self, summary: Summary, now: float) -> str:
        elapsed = now - self._start
        rate = summary.analysed / elapsed if elapsed > 0 else 0.0
        left = summary.frames - summary.done
        eta = f"{left / rate:.0f} s" if rate > 0 else "?"
        percent = 100.0 * summary.done / summary.frames if summary.frames else 100.0
        return (
            f"batch: {summary.done}/{summary.frames} frames ({percent:.0f}%), {rate:.1f} frames/s, eta {eta}, "
            f"{summary.deposits} deposits, {sum(summary.errors.values())} errors"
        )

    def finish(self) -> None:
        """Stop the bar (its last state stays on screen)."""
        if self._progress is not None:
            self.update()
            self._progress.stop()
            self._progress = None

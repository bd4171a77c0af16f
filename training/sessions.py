"""Split a photo set by shooting session, so that near-identical shots never straddle the split.

A phone's file names carry the time the photo was taken (``20231005_163458``): shots a few seconds
apart show the same pile from another step, and a split that puts one in training and the next in
the held-out set measures memory, not generalisation. Photos are grouped into sessions (a gap of
more than ``gap_s`` seconds between consecutive shots starts a new one); whole sessions are then
drawn, in a seeded order, into the held-out part until it holds at least ``min_holdout`` photos.
Photos whose names carry no time (a dataset exporter's numbers) are held out by a hash of their
name instead (:func:`split_by_name_hash`): a stable share, whatever else is in the folder.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

STAMP = re.compile(r"(?P<date>\d{8})_(?P<time>\d{6})")
SESSION_GAP_S = 20.0
MIN_HOLDOUT = 40
HOLDOUT_SHARE = 0.1
PARTS = ("fit", "holdout")


@dataclass(frozen=True)
class SessionSplit:
    """File names in each part, and the sessions they came from (first file name of each)."""

    fit: tuple[str, ...]
    holdout: tuple[str, ...]
    sessions: tuple[tuple[str, ...], ...]

    def part(self, name: str) -> tuple[str, ...]:
        """The file names of ``fit`` or ``holdout``."""
        if name not in PARTS:
            raise ValueError(f"part must be one of {PARTS}, got {name!r}")
        return self.fit if name == "fit" else self.holdout


def taken_at(name: str) -> dt.datetime:
    """The time in a file name such as ``20231005_163458_jpg.jpg``.

    Raises:
        ValueError: when the name holds no ``YYYYMMDD_HHMMSS`` stamp.
    """
    match = STAMP.search(Path(name).name)
    if match is None:
        raise ValueError(f"{name}: no YYYYMMDD_HHMMSS time in the file name; cannot tell its session")
    return dt.datetime.strptime(match["date"] + match["time"], "%Y%m%d%H%M%S")


def sessions(names: Sequence[str], gap_s: float = SESSION_GAP_S) -> list[tuple[str, ...]]:
    """Names grouped into shooting sessions, in time order."""
    ordered = sorted(names, key=lambda n: (taken_at(n), n))
    groups: list[list[str]] = []
    last: dt.datetime | None = None
    for name in ordered:
        when = taken_at(name)
        if last is None or (when - last).total_seconds() > gap_s:
            groups.append([])
        groups[-1].append(name)
        last = when
    return [tuple(g) for g in groups]


def split_by_session(
    names: Sequence[str], min_holdout: int = MIN_HOLDOUT, gap_s: float = SESSION_GAP_S, seed: int = 0
) -> SessionSplit:
    """Whole sessions drawn into the held-out part until it has ``min_holdout`` photos.

    Raises:
        ValueError: when the photos cannot leave at least one session for fitting.
    """
    groups = sessions(names, gap_s)
    order = list(range(len(groups)))
    random.Random(seed).shuffle(order)
    held: set[int] = set()
    count = 0
    for index in order:
        if count >= min_holdout:
            break
        held.add(index)
        count += len(groups[index])
    if count < min_holdout or len(held) == len(groups):
        raise ValueError(
            f"{len(names)} photos in {len(groups)} sessions cannot hold out {min_holdout} and keep a session to fit on"
        )
    fit = tuple(n for i, g in enumerate(groups) if i not in held for n in g)
    holdout = tuple(n for i, g in enumerate(groups) if i in held for n in g)
    return SessionSplit(fit, holdout, tuple(groups))


def split_by_name_hash(names: Sequence[str], share: float = HOLDOUT_SHARE) -> SessionSplit:
    """Each photo held out when the sha256 of its file name falls in the first ``share`` of the range."""
    def held(name: str) -> bool:
        digest = hashlib.sha256(Path(name).name.encode()).digest()
        return int.from_bytes(digest[:8], "big") < share * 2**64

    ordered = sorted(names)
    fit = tuple(n for n in ordered if not held(n))
    holdout = tuple(n for n in ordered if held(n))
    return SessionSplit(fit, holdout, tuple((n,) for n in ordered))


def split_parts(names: Sequence[str]) -> SessionSplit:
    """By shooting session when every name carries its time, else by a hash of the name."""
    if names and all(STAMP.search(Path(n).name) for n in names):
        return split_by_session(names)
    return split_by_name_hash(names)

"""Which split each photo goes to: train, val or test, by place and time.

Photos of one place look alike, so a split by photo would put near-copies of the same deposit in
train and val. Photos are grouped first: the photos of one incident (or of a chain of incidents that
recurred at one place) form one group; photos without an incident form one group per ~100 m cell and
ISO week of observation. A group's split comes from a hash of its key (``u`` in [0, 1): ``test``
below ``test_fraction``, ``val`` below ``test_fraction + val_fraction``, else ``train``), so a group
keeps its split from one export to the next, whatever else was reviewed meanwhile. With few groups
the hash may leave a requested split empty; then the groups are taken in the same ``u`` order and
counted so that train, then val, then test hold at least one group each when there are enough (the
``u`` order is kept, so a group never lands in a split "above" one with a larger ``u``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from serving.dataset.select import Sample
from serving.models import Incident
from vipare.geotag import EARTH_RADIUS_M

__all__ = [
    "CELL_M",
    "SPLITS",
    "Split",
    "SplitFractions",
    "assign_splits",
    "group_key",
    "incident_roots",
]

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")
CELL_M = 100.0
"""Side of the place cells that group photos without an incident, in metres."""

_METRES_PER_DEGREE = math.pi * EARTH_RADIUS_M / 180.0


@dataclass(frozen=True)
class SplitFractions:
    """Shares of the groups (incidents, place-and-week cells) that go to val and test; the rest is train.

    The default keeps no test split: a city's first reviews are few, and the fine-tuning step judges
    a new model on val, which no training step sees. Ask for a test share when there are enough
    groups to spare some that no decision looks at.
    """

    val: float = 0.2
    test: float = 0.0

    def __post_init__(self) -> None:
        if not (0.0 <= self.val < 1.0 and 0.0 <= self.test < 1.0 and self.val + self.test < 1.0):
            raise ValueError(
                f"val ({self.val}) and test ({self.test}) fractions must each be in [0, 1) and leave some for "
                "train (val + test < 1)"
            )


def incident_roots(session: Session, incident_ids: Iterable[int]) -> dict[int, int]:
    """Each incident's first ancestor along ``recurrence_of``: a deposit that came back at one place."""
    parent: dict[int, int | None] = {}
    todo = set(incident_ids)
    while todo:
        rows = session.execute(select(Incident.id, Incident.recurrence_of_id).where(Incident.id.in_(sorted(todo))))
        todo = set()
        for incident_id, recurrence_of in rows:
            parent[incident_id] = recurrence_of
            if recurrence_of is not None and recurrence_of not in parent:
                todo.add(recurrence_of)
    roots: dict[int, int] = {}
    for start in parent:
        node, seen = start, {start}
        while (up := parent.get(node)) is not None and up not in seen:
            node = up
            seen.add(node)
        roots[start] = node
    return roots


def group_key(sample: Sample, incident_root: int | None = None) -> str:
    """The group a photo is split with: its incident (the root of a recurrence chain), else place and week.

    Args:
        sample: the photo.
        incident_root: the first incident of the chain of recurrences ``sample.incident_id`` belongs to;
            None: the incident itself.

    Returns:
        ``incident:<id>``, or ``cell:<row>:<column>:<ISO year>-W<week>`` for a photo without an incident
        (cells of :data:`CELL_M` metres: rows along the meridian, columns along the cell row's parallel).
    """
    if sample.incident_id is not None:
        return f"incident:{incident_root if incident_root is not None else sample.incident_id}"
    row = math.floor(sample.lat * _METRES_PER_DEGREE / CELL_M)
    row_lat = (row + 0.5) * CELL_M / _METRES_PER_DEGREE
    metres_per_lon_degree = max(_METRES_PER_DEGREE * math.cos(math.radians(row_lat)), 1e-6)
    column = math.floor(sample.lon * metres_per_lon_degree / CELL_M)
    year, week, _ = sample.observed_at.isocalendar()
    return f"cell:{row}:{column}:{year}-W{week:02d}"


def _unit(key: str) -> float:
    digest = hashlib.sha256(f"vipare-split:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(keys: Iterable[str], fractions: SplitFractions) -> dict[str, Split]:
    """The split of each group, from a hash of its key (see the module doc).

    Args:
        keys: group keys (:func:`group_key`); repeats count once.
        fractions: the val and test shares.

    Returns:
        ``{key: "train" | "val" | "test"}``.
    """
    ranked = sorted(set(keys), key=lambda k: (_unit(k), k))
    n = len(ranked)
    units = [_unit(k) for k in ranked]
    n_test = sum(u < fractions.test for u in units)
    n_val = sum(fractions.test <= u < fractions.test + fractions.val for u in units)
    # Hash shares on few groups can leave a split empty: then count instead, train first, then val, then test.
    if fractions.val > 0 and n_val == 0 and n >= 2:
        n_val = 1
    if fractions.test > 0 and n_test == 0 and n >= 3:
        n_test = 1
    while n and n_test + n_val > n - 1:
        if n_val > n_test or (n_val == n_test and n_val > 1):
            n_val -= 1
        else:
            n_test -= 1
    splits: dict[str, Split] = {}
    for rank, key in enumerate(ranked):
        splits[key] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return splits

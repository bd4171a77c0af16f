"""How big a deposit is: S (a bag or two), M (a pile), L (a truckload).

A manager's word wins (``incidents.size``, set on the incident's page or with
``PUT /v1/incidents/{id}/size``). Until then the service estimates it from the photos
(``incidents.size_estimate``): the largest deposit box of any of the incident's reports, as a
share of its photo's area (``Detection.area_fraction``):

=====  =====================  ==============================================
size   largest deposit box    what it usually is in a street photo
=====  =====================  ==============================================
S      under 3 % of the photo  one or two bags, a small item, seen from the pavement
M      3 % to under 15 %       a pile, a piece of furniture, a few bulky items
L      15 % or more            a heap or a truckload: a van or a crane is needed
=====  =====================  ==============================================

The share depends on how far the agent stood, so the estimate is a first guess for planning,
shown as such ("estimated"), never as a measure. ``python -m benchmarks.bench_sizes DATA_DIR``
prints how often the estimate agrees with the sizes managers set on a service's own incidents.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

__all__ = ["L_FROM", "M_FROM", "SIZES", "Size", "estimate_size", "larger"]

Size = Literal["S", "M", "L"]
SIZES: tuple[Size, ...] = ("S", "M", "L")
M_FROM = 0.03
"""Share of the photo from which the largest deposit box makes an M."""
L_FROM = 0.15
"""Share of the photo from which it makes an L."""


def estimate_size(detections: Iterable[Mapping[str, Any]]) -> Size | None:
    """The size the largest deposit box of one photo suggests; None without a deposit box.

    Args:
        detections: a report's detections as stored (``deposit`` and ``area_fraction`` in [0, 1]).
    """
    areas = [float(d.get("area_fraction") or 0.0) for d in detections if d.get("deposit")]
    if not areas:
        return None
    area = max(areas)
    return "L" if area >= L_FROM else "M" if area >= M_FROM else "S"


def larger(a: str | None, b: str | None) -> Size | None:
    """The larger of two sizes (None is smaller than any)."""
    best: Size | None = None
    for size in SIZES:  # smallest first: the last one found wins
        if size in (a, b):
            best = size
    return best

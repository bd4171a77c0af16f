"""How long planning a day's round takes, and how far from the shortest round it lands.

Stops and the depot are drawn uniformly (seeded) over a city-sized box, 20 km x 11 km around
Berlin's centre. It prints:

- for ``--stops`` stops (200 by default), the best of ``--runs`` planning times against the 2 s
  target, and the round's length against the nearest-neighbour round's (construction only);
- for ``--small-cases`` small rounds (3 to 9 stops, closed and open in turn, as in
  ``tests/serving/test_rounds.py``), the worst and the mean gap to the brute-force optimum, with the
  kicks and with local search alone (``kicks=0``).

    python -m benchmarks.bench_round
    python -m benchmarks.bench_round --stops 200 --runs 5 --small-cases 300
"""

from __future__ import annotations

import itertools
import random
import statistics
import time

import click
import numpy as np

from benchmarks.cli import command
from serving.rounds import KICKS, Stop, distance_matrix_m, plan_round
from vipare.machine import machine

CENTRE = (13.40, 52.52)
TARGET_S = 2.0


def _city_case(seed: int, count: int) -> tuple[tuple[float, float], list[Stop]]:
    """A depot and ``count`` stops, uniform over +-0.15 degrees of longitude and +-0.05 of latitude."""
    rng = random.Random(seed)

    def place() -> tuple[float, float]:
        return CENTRE[0] + rng.uniform(-0.15, 0.15), CENTRE[1] + rng.uniform(-0.05, 0.05)

    return place(), [Stop(f"incident-{k}", *place()) for k in range(count)]


def _optimum_m(depot: tuple[float, float], stops: list[Stop], closed: bool) -> float:
    """The shortest round over every visiting order, metres."""
    distances = distance_matrix_m([depot[0], *(s.lon for s in stops)], [depot[1], *(s.lat for s in stops)])
    orders = np.array(list(itertools.permutations(range(1, len(stops) + 1))), dtype=np.intp)
    zeros = np.zeros((len(orders), 1), dtype=np.intp)
    tours = np.hstack([zeros, orders, zeros] if closed else [zeros, orders])
    return float(distances[tours[:, :-1], tours[:, 1:]].sum(axis=1).min())


@command(__doc__)
@click.option("--stops", "count", type=click.IntRange(2), default=200, show_default=True,
              help="Stops of the big round.")
@click.option("--runs", type=click.IntRange(1), default=5, show_default=True, help="Timed runs; the best counts.")
@click.option("--small-cases", type=click.IntRange(1), default=10, show_default=True,
              help="Small rounds compared with brute force.")
def main(count: int, runs: int, small_cases: int) -> None:
    depot, stops = _city_case(200, count)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        plan = plan_round(depot, stops)
        times.append(time.perf_counter() - start)
    nearest = plan_round(depot, stops, improve=False)
    best = min(times)
    print(f"{machine()}; {count} stops over 20 km x 11 km, closed round, best of {runs} runs")
    print(f"planning: {best * 1000:.0f} ms (target {TARGET_S:.0f} s: {'met' if best < TARGET_S else 'MISSED'}), "
          f"median {statistics.median(times) * 1000:.0f} ms")
    print(f"length: {plan.length_m / 1000:.1f} km against {nearest.length_m / 1000:.1f} km nearest-neighbour only "
          f"({100 * (plan.length_m / nearest.length_m - 1):+.1f} %)")

    gaps: dict[int, list[float]] = {KICKS: [], 0: []}
    for seed in range(small_cases):
        size, closed = 3 + seed % 7, seed % 2 == 0
        depot, stops = _city_case(seed, size)
        optimum = _optimum_m(depot, stops, closed)
        for kicks, found in gaps.items():
            # no round beats the optimum; below zero is rounding, so clip it
            found.append(max(0.0, plan_round(depot, stops, closed=closed, kicks=kicks).length_m / optimum - 1))
    for kicks, found in gaps.items():
        print(f"{small_cases} small rounds (3-9 stops), kicks={kicks}: worst gap to the optimum "
              f"{100 * max(found):.2f} %, mean {100 * statistics.fmean(found):.3f} %, "
              f"optimal in {sum(g < 1e-9 for g in found)}")


if __name__ == "__main__":
    main()

"""Reverse geocoding: import a département's BAN export, then find the nearest address of 10,000 incidents.

Writes, in a temporary folder, a file in the exact format of BAN's ``adresses-XX.csv`` with
``--addresses`` lines (default 500,000, about a large département's count), seeded: ``--towns``
communes spread over a 110 km x 110 km box around Metz, each with its own postcode, 60 streets and
addresses scattered around its centre (half the towns within 1 km, the largest within 4 km), 1 in
12 numbers with a ``bis``. Then, each step in a fresh process so one step's memory does not hide
another's:

1. ``vipare addresses import``'s work (:func:`serving.addresses.import_ban`): CSV to ``.npz``;
2. what the service does at start-up and per page: load the index, build the k-d tree, and find the
   nearest address of ``--points`` points (default 10,000; half within 30 m of an address, like
   incidents on a street, half anywhere in the box), as :class:`Address` values.

Each step reports its seconds and how much the process's peak resident memory (VmHWM) grew over its
imports (numpy, SciPy, the module): for step 2, the index and the tree the service keeps per worker
process, at its peak while loading and resident afterwards. Linux only (it reads ``/proc/self/status``).

    python -m benchmarks.bench_geocode
    python -m benchmarks.bench_geocode --addresses 100000 --points 1000
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import click
import numpy as np

from benchmarks.cli import command
from serving.addresses import BAN_COLUMNS
from vipare.geotag import EARTH_RADIUS_M

HEADER = (
    "id;id_fantoir;numero;rep;nom_voie;code_postal;code_insee;nom_commune;code_insee_ancienne_commune;"
    "nom_ancienne_commune;x;y;lon;lat;type_position;alias;nom_ld;libelle_acheminement;nom_afnor;source_position;"
    "source_nom;certification_commune;cad_parcelles"
)
CENTRE = (49.1193, 6.1757)
"""Metz, degrees."""
HALF_SIDE_M = 55_000.0
STREET_KINDS = ("Rue", "Avenue", "Chemin", "Impasse", "Allée", "Place", "Route", "Boulevard")
STREET_NAMES = (
    "des Jardins", "de la Gare", "Saint-Pierre", "du Moulin", "des Écoles", "de l'Église", "Victor Hugo",
    "Jean Jaurès", "des Vignes", "du Château", "de la Paix", "des Tilleuls", "Pasteur", "du Général de Gaulle",
    "de la Moselle", "des Prés", "du Stade", "des Roses", "Foch", "de Verdun",
)

STREETS_PER_TOWN = 60


def _street_name(town: int, street: int, towns: int) -> str:
    """Names common to many communes (Rue de la Gare), and roads named after a neighbour (Route de Commune 12)."""
    if street < 40:
        combo = (town * 7 + street * 13) % (len(STREET_KINDS) * len(STREET_NAMES))
        return f"{STREET_KINDS[combo % len(STREET_KINDS)]} {STREET_NAMES[combo // len(STREET_KINDS)]}"
    return f"{'Route' if street % 2 else 'Chemin'} de Commune {(town + street) % towns}"


# VmHWM, the peak resident memory of this process's own address space (ru_maxrss would carry over
# the parent's peak across fork and exec).
_PEAK = """
import re, sys, time, json
def peak_kib(field="VmHWM"):
    with open("/proc/self/status") as status:
        return int(re.search(field + r":\\s+(\\d+)", status.read())[1])
"""
_IMPORT = _PEAK + """
from pathlib import Path
from serving.addresses import import_ban
before = peak_kib()
start = time.perf_counter()
table = import_ban(Path(sys.argv[1]), Path(sys.argv[2]))
print(json.dumps({"seconds": time.perf_counter() - start, "grown_mib": (peak_kib() - before) / 1024,
                  "addresses": len(table), "streets": len(table.streets), "localities": len(table.cities)}))
"""
_QUERY = _PEAK + """
from pathlib import Path
import numpy as np
from serving.addresses import ReverseGeocoder
points = np.load(sys.argv[2])
before, resident = peak_kib(), peak_kib("VmRSS")
start = time.perf_counter()
geocoder = ReverseGeocoder.load(Path(sys.argv[1]), max_distance_m=float(sys.argv[3]))
loaded = time.perf_counter()
found = geocoder.addresses(points[:, 0], points[:, 1])
done = time.perf_counter()
print(json.dumps({"load_s": loaded - start, "query_s": done - loaded, "grown_mib": (peak_kib() - before) / 1024,
                  "resident_mib": (peak_kib("VmRSS") - resident) / 1024,
                  "found": sum(a is not None for a in found), "example": next(a.label for a in found if a)}))
"""


def _offsets(rng: np.random.Generator, n: int, sigma_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(north, east) metres: ``n`` gaussian offsets of standard deviation ``sigma_m`` (shape (n,))."""
    return rng.normal(0.0, sigma_m), rng.normal(0.0, sigma_m)


def _to_degrees(north_m: np.ndarray, east_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lat = CENTRE[0] + np.degrees(north_m / EARTH_RADIUS_M)
    lon = CENTRE[1] + np.degrees(east_m / (EARTH_RADIUS_M * np.cos(np.radians(CENTRE[0]))))
    return lat, lon


def write_ban(path: Path, addresses: int, towns: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Write a BAN-format file; returns the addresses' (north, east) metres from :data:`CENTRE`."""
    assert HEADER.split(";")[:5] == ["id", "id_fantoir", "numero", "rep", "nom_voie"]
    assert set(BAN_COLUMNS) <= set(HEADER.split(";"))
    rng = np.random.default_rng(seed)
    town_north, town_east = rng.uniform(-HALF_SIDE_M, HALF_SIDE_M, (2, towns))
    town_radius = np.where(rng.random(towns) < 0.5, 1000.0, rng.uniform(1000.0, 4000.0, towns)) / 2
    weight = town_radius**2 / (town_radius**2).sum()  # bigger towns, more addresses
    town = rng.choice(towns, size=addresses, p=weight)
    north, east = _offsets(rng, addresses, town_radius[town])
    north, east = np.clip(north + town_north[town], -HALF_SIDE_M, HALF_SIDE_M), np.clip(
        east + town_east[town], -HALF_SIDE_M, HALF_SIDE_M
    )
    lat, lon = _to_degrees(north, east)
    street = rng.integers(0, STREETS_PER_TOWN, addresses)
    number = rng.integers(1, 200, addresses)
    bis = rng.random(addresses) < 1 / 12
    with path.open("w", encoding="utf-8", newline="\n") as out:
        out.write(HEADER + "\n")
        for i in range(addresses):
            t, s = int(town[i]), int(street[i])
            insee = f"57{t:03d}"
            name = _street_name(t, s, towns)
            rep = "bis" if bis[i] else ""
            fantoir = f"{insee}_{s:04d}"
            x, y = 930_000 + east[i], 6_895_000 + north[i]
            out.write(
                f"{fantoir}_{number[i]:05d}{'_' + rep if rep else ''};{fantoir};{number[i]};{rep};{name};"
                f"57{t % 1000:03d};{insee};Commune {t};;;{x:.2f};{y:.2f};{lon[i]:.6f};{lat[i]:.6f};entrée;;;"
                f"COMMUNE {t};{name.upper()};commune;commune;1;{insee}000AB{i % 10000:04d}\n"
            )
    return north, east


def incident_points(north: np.ndarray, east: np.ndarray, count: int, seed: int) -> np.ndarray:
    """(lat, lon) degrees, shape (count, 2): half within 30 m of an address, half anywhere in the box."""
    rng = np.random.default_rng(seed + 1)
    near = count // 2
    picked = rng.choice(len(north), size=near)
    dn, de = rng.uniform(-30.0, 30.0, (2, near))
    anywhere_n, anywhere_e = rng.uniform(-HALF_SIDE_M, HALF_SIDE_M, (2, count - near))
    lat, lon = _to_degrees(
        np.concatenate([north[picked] + dn, anywhere_n]), np.concatenate([east[picked] + de, anywhere_e])
    )
    return np.stack([lat, lon], axis=1)


def _child(code: str, *args: str) -> dict[str, float | int | str]:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    result: dict[str, float | int | str] = json.loads(done.stdout)
    return result


@command(__doc__)
@click.option("--addresses", type=click.IntRange(1), default=500_000, show_default=True, help="Lines of the file.")
@click.option("--towns", type=click.IntRange(1), default=700, show_default=True, help="Communes.")
@click.option("--points", type=click.IntRange(1), default=10_000, show_default=True, help="Points to geocode.")
@click.option("--max-distance", "max_distance_m", type=float, default=100.0, show_default=True,
              help="VIPARE_ADDRESS_MAX_DISTANCE_M, metres.")
@click.option("--seed", type=int, default=0, show_default=True)
def main(addresses: int, towns: int, points: int, max_distance_m: float, seed: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source, index, queries = folder / "adresses-57.csv", folder / "addresses.npz", folder / "points.npy"
        north, east = write_ban(source, addresses, towns, seed)
        np.save(queries, incident_points(north, east, points, seed))
        click.echo(f"BAN file: {addresses} lines, {towns} communes, {source.stat().st_size / 1e6:.1f} MB")
        imported = _child(_IMPORT, str(source), str(index))
        click.echo(
            f"import: {imported['seconds']:.2f} s, peak memory +{imported['grown_mib']:.0f} MiB; index "
            f"{index.stat().st_size / 1e6:.1f} MB ({imported['addresses']} addresses, {imported['streets']} street "
            f"names, {imported['localities']} postcode and commune pairs)"
        )
        answered = _child(_QUERY, str(index), str(queries), str(max_distance_m))
        load_s, query_s = float(answered["load_s"]), float(answered["query_s"])
        click.echo(f"load the index and build the tree: {load_s:.2f} s")
        click.echo(
            f"nearest address of {points} points: {query_s:.3f} s ({answered['found']} within {max_distance_m:g} m; "
            f"e.g. {answered['example']})"
        )
        click.echo(f"after the import, in all: {load_s + query_s:.2f} s (target < 5 s)")
        click.echo(
            f"memory of the loaded index and tree, per process: peak +{answered['grown_mib']:.0f} MiB while loading, "
            f"+{answered['resident_mib']:.0f} MiB resident after"
        )


if __name__ == "__main__":
    main()

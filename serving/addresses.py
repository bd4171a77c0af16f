"""Addresses of incidents: the nearest address, offline, from the Base Adresse Nationale (BAN).

Two steps, the first one done once per département (``vipare addresses import``):

1. :func:`import_ban` streams BAN's CSV export (``adresses-XX.csv``, plain or gzipped: semicolons,
   UTF-8, one header line naming at least :data:`BAN_COLUMNS`) into a compact index, an ``.npz``
   file: positions as float64 degrees, and per address three int32 ids into tables of distinct
   house numbers, street names and (postcode, commune) pairs, each table one UTF-8 blob with its
   offsets (no pickled objects: the file is loaded with ``allow_pickle=False``).
2. :class:`ReverseGeocoder` loads the index once (the service does at start-up, when
   ``VIPARE_ADDRESSES_PATH`` is set) and answers the nearest address of one point or of arrays of
   points, with its distance in metres, or none beyond ``max_distance_m``. Points are unit vectors
   on a sphere of :data:`vipare.geotag.EARTH_RADIUS_M` in a k-d tree (``scipy.spatial.cKDTree``): the
   straight-line (chord) distance orders neighbours exactly as the great-circle one does, which is
   then computed from it, so no projection is needed anywhere in France, overseas included.

A BAN line without a number (``numero`` empty, or ``99999`` as BAN writes a lieu-dit) is an address
without a house number; one without a street name (``nom_voie``) takes its lieu-dit's (``nom_ld``).
Labels read ``12 bis Rue des Jardins, 57000 Metz``.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import os
import tempfile
from collections.abc import Generator, Iterator, Sequence
from contextlib import closing, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.spatial import cKDTree

from vipare.geotag import EARTH_RADIUS_M

__all__ = [
    "BAN_COLUMNS",
    "INDEX_FORMAT",
    "Address",
    "AddressFileError",
    "AddressIndexError",
    "AddressTable",
    "ReverseGeocoder",
    "import_ban",
    "load_index",
    "read_ban",
    "unit_vectors",
    "write_index",
]

BAN_COLUMNS = ("numero", "rep", "nom_voie", "code_postal", "nom_commune", "lon", "lat")
"""The columns of BAN's export the import reads (the others are ignored), by name, in any order."""
LIEU_DIT_NUMBER = "99999"
"""The ``numero`` BAN gives a lieu-dit: no house number."""
INDEX_FORMAT = 1
"""Version of the index file's layout; an index of another version is refused (import the file again)."""
NO_NUMBER = -1
"""``number_id`` of an address without a house number."""
_TABLES = ("numbers", "streets", "postcodes", "cities")


class AddressFileError(ValueError):
    """A BAN file that cannot be imported; the message names the file, the line or column, and the problem."""


class AddressIndexError(RuntimeError):
    """An address index that cannot be loaded (missing, unreadable, another format); the message says what to do."""


@dataclass(frozen=True)
class Address:
    """One address, as found near a point.

    Attributes:
        house_number: number and repetition index, e.g. ``12 bis``; None for a lieu-dit.
        street: street name (or lieu-dit), e.g. ``Rue des Jardins``.
        postcode: five digits, e.g. ``57000``.
        city: the commune, e.g. ``Metz``.
        distance_m: great-circle distance from the point asked about, metres.
    """

    house_number: str | None
    street: str
    postcode: str
    city: str
    distance_m: float

    @property
    def label(self) -> str:
        """One line, e.g. ``12 bis Rue des Jardins, 57000 Metz``."""
        place = f"{self.house_number} {self.street}" if self.house_number else self.street
        return f"{place}, {self.postcode} {self.city}"


@dataclass(frozen=True)
class AddressTable:
    """Addresses as arrays: what the index file holds.

    Attributes:
        lat, lon: positions, WGS 84 degrees, float64, shape (N,).
        number_id: index into ``numbers`` or :data:`NO_NUMBER`, int32, shape (N,).
        street_id: index into ``streets``, int32, shape (N,).
        locality_id: index into ``postcodes`` and ``cities`` (a pair), int32, shape (N,).
        numbers, streets, postcodes, cities: the distinct values.
    """

    lat: NDArray[np.float64]
    lon: NDArray[np.float64]
    number_id: NDArray[np.int32]
    street_id: NDArray[np.int32]
    locality_id: NDArray[np.int32]
    numbers: tuple[str, ...]
    streets: tuple[str, ...]
    postcodes: tuple[str, ...]
    cities: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.lat)


# --------------------------------------------------------------------------------------------------
# Reading BAN's export


class _Interner:
    """Distinct strings in order of first sight, each with its id."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def id(self, value: str) -> int:
        found = self.ids.get(value)
        if found is None:
            found = self.ids[value] = len(self.ids)
        return found

    def values(self) -> tuple[str, ...]:
        return tuple(self.ids)


def _rows(path: Path) -> Generator[tuple[int, list[str]], None, None]:
    """(line number, fields) of each line, the header first as line 1; gunzipped when the file starts
    with gzip's magic bytes, whatever its name."""
    name = path.name
    try:
        with path.open("rb") as raw:
            gzipped = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            with gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else nullcontext(raw) as binary:
                reader = csv.reader(io.TextIOWrapper(binary, encoding="utf-8-sig", newline=""), delimiter=";")
                for fields in reader:
                    yield reader.line_num, fields
    except UnicodeDecodeError as exc:
        raise AddressFileError(f"{name}: not UTF-8 text ({exc.reason}); BAN's export is UTF-8") from None
    except (csv.Error, gzip.BadGzipFile, EOFError) as exc:
        raise AddressFileError(f"{name}: unreadable ({exc}); is it BAN's adresses-XX.csv or .csv.gz?") from None


def _coordinate(text: str, column: str, limit: float, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise AddressFileError(f"{where}, column {column}: {text!r} is not a decimal number") from None
    if not -limit <= value <= limit:  # also refuses nan
        raise AddressFileError(f"{where}, column {column}: {text} is outside [-{limit:g}, {limit:g}]")
    return value


def read_ban(path: Path) -> AddressTable:
    """Read BAN's CSV export of a département (plain or gzipped), streamed line by line.

    Args:
        path: ``adresses-XX.csv`` or ``adresses-XX.csv.gz``: semicolon-separated UTF-8 with a header.

    Returns:
        Every address of the file, in file order.

    Raises:
        AddressFileError: not UTF-8, a missing column, a line with another number of fields than the
            header, an empty street, or a longitude or latitude that is no number or out of range;
            the message names the line and column. Also an empty file or one without addresses.
        OSError: the file cannot be opened.
    """
    with closing(_rows(path)) as rows:
        return _table(path.name, rows)


def _table(name: str, rows: Iterator[tuple[int, list[str]]]) -> AddressTable:
    first = next(rows, None)
    if first is None:
        raise AddressFileError(f"{name}: empty file; expected BAN's header line (id;id_fantoir;numero;...)")
    header = [name.strip() for name in first[1]]
    missing = [column for column in BAN_COLUMNS if column not in header]
    if missing:
        raise AddressFileError(
            f"{name} line 1: the header lacks the column(s) {', '.join(missing)}; expected BAN's export "
            "(semicolon-separated, with id;id_fantoir;numero;rep;nom_voie;...;lon;lat;...)"
        )
    at = {column: header.index(column) for column in (*BAN_COLUMNS, "nom_ld") if column in header}
    lats: list[float] = []
    lons: list[float] = []
    number_ids: list[int] = []
    street_ids: list[int] = []
    locality_ids: list[int] = []
    numbers, streets, localities = _Interner(), _Interner(), _Interner()
    for line, fields in rows:
        if not fields:  # a blank line
            continue
        where = f"{name} line {line}"
        if len(fields) != len(header):
            raise AddressFileError(f"{where}: {len(fields)} fields where the header has {len(header)}")
        street = fields[at["nom_voie"]].strip() or (fields[at["nom_ld"]].strip() if "nom_ld" in at else "")
        if not street:
            raise AddressFileError(f"{where}, column nom_voie: empty, and no lieu-dit name (nom_ld) either")
        numero = fields[at["numero"]].strip()
        if numero and numero != LIEU_DIT_NUMBER:
            rep = fields[at["rep"]].strip()
            number_ids.append(numbers.id(f"{numero} {rep}" if rep else numero))
        else:
            number_ids.append(NO_NUMBER)
        lons.append(_coordinate(fields[at["lon"]], "lon", 180.0, where))
        lats.append(_coordinate(fields[at["lat"]], "lat", 90.0, where))
        street_ids.append(streets.id(street))
        locality = f"{fields[at['code_postal']].strip()}\n{fields[at['nom_commune']].strip()}"
        locality_ids.append(localities.id(locality))
    if not lats:
        raise AddressFileError(f"{name}: a header but no address")
    pairs = [locality.split("\n") for locality in localities.values()]
    return AddressTable(
        lat=np.array(lats, dtype=np.float64),
        lon=np.array(lons, dtype=np.float64),
        number_id=np.array(number_ids, dtype=np.int32),
        street_id=np.array(street_ids, dtype=np.int32),
        locality_id=np.array(locality_ids, dtype=np.int32),
        numbers=numbers.values(),
        streets=streets.values(),
        postcodes=tuple(pair[0] for pair in pairs),
        cities=tuple(pair[1] for pair in pairs),
    )


# --------------------------------------------------------------------------------------------------
# The index file


def _pack(values: Sequence[str]) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
    """Strings as one UTF-8 blob and the (len + 1) offsets where each starts and the last ends."""
    encoded = [value.encode("utf-8") for value in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets


def _unpack(blob: NDArray[np.uint8], offsets: NDArray[np.int64]) -> tuple[str, ...]:
    data = blob.tobytes()
    return tuple(data[start:end].decode("utf-8") for start, end in zip(offsets[:-1], offsets[1:], strict=True))


def write_index(table: AddressTable, out: Path) -> None:
    """Write the index file (``.npz``), atomically: a reader sees the previous file or the whole new one."""
    arrays: dict[str, NDArray[np.generic]] = {
        "format": np.array(INDEX_FORMAT),
        "lat": table.lat,
        "lon": table.lon,
        "number_id": table.number_id,
        "street_id": table.street_id,
        "locality_id": table.locality_id,
    }
    for name in _TABLES:
        arrays[f"{name}_blob"], arrays[f"{name}_offsets"] = _pack(getattr(table, name))
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, **arrays)  # type: ignore[arg-type]  # the stub reads the dict as its allow_pickle
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, out)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def import_ban(source: Path, out: Path) -> AddressTable:
    """Read BAN's export (:func:`read_ban`) and write its index (:func:`write_index`); returns what was read."""
    table = read_ban(source)
    write_index(table, out)
    return table


def load_index(path: Path) -> AddressTable:
    """Read an index file written by :func:`write_index`.

    Raises:
        AddressIndexError: missing, unreadable, or written in another layout than :data:`INDEX_FORMAT`.
    """
    again = f"import the département's BAN file again: vipare addresses import FILE --out {path}"
    if not path.is_file():
        raise AddressIndexError(f"the address index {path} does not exist: {again}, or unset VIPARE_ADDRESSES_PATH")
    try:
        with np.load(path, allow_pickle=False) as data:
            if int(data["format"]) != INDEX_FORMAT:
                raise AddressIndexError(
                    f"the address index {path} has layout {int(data['format'])}, this version reads "
                    f"{INDEX_FORMAT}: {again}"
                )
            tables = {name: _unpack(data[f"{name}_blob"], data[f"{name}_offsets"]) for name in _TABLES}
            return AddressTable(
                lat=data["lat"], lon=data["lon"], number_id=data["number_id"], street_id=data["street_id"],
                locality_id=data["locality_id"], **tables,
            )
    except (OSError, ValueError, KeyError, UnicodeDecodeError) as exc:
        raise AddressIndexError(f"the address index {path} cannot be read ({exc}): {again}") from None


# --------------------------------------------------------------------------------------------------
# Nearest address


def unit_vectors(lat: ArrayLike, lon: ArrayLike) -> NDArray[np.float64]:
    """Points on the unit sphere, shape (N, 3), from latitudes and longitudes in degrees, shape (N,)."""
    phi = np.radians(np.asarray(lat, dtype=np.float64))
    lam = np.radians(np.asarray(lon, dtype=np.float64))
    cos_phi = np.cos(phi)
    return np.stack([cos_phi * np.cos(lam), cos_phi * np.sin(lam), np.sin(phi)], axis=-1).reshape(-1, 3)


def _chord(distance_m: float) -> float:
    """The straight-line distance on the unit sphere between two points ``distance_m`` apart on the ground."""
    return 2.0 * math.sin(min(math.pi, distance_m / EARTH_RADIUS_M) / 2.0)


class ReverseGeocoder:
    """The nearest address of points, from an index loaded once; safe to share between threads.

    Memory: about 70 bytes per address once loaded (the tree's unit vectors, indices and nodes, three
    int32 ids) plus the distinct names, about 100 while loading: 33 MiB and 49 MiB for 500,000
    addresses, per worker process (``python -m benchmarks.bench_geocode`` measures it).
    """

    def __init__(self, table: AddressTable, *, max_distance_m: float) -> None:
        """Build the tree.

        Args:
            table: the addresses; their positions are not kept, only the tree's unit vectors.
            max_distance_m: farther than this from every address, a point has none (metres, > 0).
        """
        if not max_distance_m > 0:
            raise ValueError(f"max_distance_m must be positive, not {max_distance_m}")
        self.max_distance_m = max_distance_m
        self._tree = cKDTree(unit_vectors(table.lat, table.lon))
        self._number_id, self._street_id, self._locality_id = table.number_id, table.street_id, table.locality_id
        self._numbers, self._streets = table.numbers, table.streets
        self._postcodes, self._cities = table.postcodes, table.cities

    @classmethod
    def load(cls, path: Path, *, max_distance_m: float) -> ReverseGeocoder:
        """The geocoder of an index file (:func:`load_index`); raises :class:`AddressIndexError`."""
        return cls(load_index(path), max_distance_m=max_distance_m)

    def __len__(self) -> int:
        return int(self._tree.n)

    def nearest(self, lat: ArrayLike, lon: ArrayLike) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
        """Index and distance of each point's nearest address, vectorised.

        Args:
            lat, lon: WGS 84 degrees, shape (N,) (or scalars).

        Raises:
            ValueError: ``lat`` and ``lon`` differ in shape.

        Returns:
            ``(index, distance_m)``, each shape (N,): the address's row in the index, or -1 where none
            lies within ``max_distance_m`` (or the point is not finite), with the great-circle
            distance in metres (``inf`` where none).
        """
        lats = np.atleast_1d(np.asarray(lat, dtype=np.float64))
        lons = np.atleast_1d(np.asarray(lon, dtype=np.float64))
        if lats.shape != lons.shape or lats.ndim != 1:
            raise ValueError(f"lat and lon must have the same shape (N,), not {lats.shape} and {lons.shape}")
        index = np.full(len(lats), -1, dtype=np.intp)
        distance_m = np.full(len(lats), np.inf)
        finite = np.flatnonzero(np.isfinite(lats) & np.isfinite(lons))
        if not len(finite):
            return index, distance_m
        # A hair more than the limit in chord units: the exact limit is applied on metres below.
        chord, found = self._tree.query(
            unit_vectors(lats[finite], lons[finite]), k=1,
            distance_upper_bound=_chord(self.max_distance_m) * (1 + 1e-9),
        )
        metres = 2.0 * EARTH_RADIUS_M * np.arcsin(np.minimum(1.0, chord / 2.0))  # inf stays inf
        within = metres <= self.max_distance_m
        index[finite[within]] = found[within]
        distance_m[finite[within]] = metres[within]
        return index, distance_m

    def addresses(self, lat: ArrayLike, lon: ArrayLike) -> list[Address | None]:
        """The nearest address of each point (see :meth:`nearest`), None where none is near enough."""
        found, distance_m = self.nearest(lat, lon)
        return [None if i < 0 else self._address(int(i), float(d)) for i, d in zip(found, distance_m, strict=True)]

    def address(self, lat: float, lon: float) -> Address | None:
        """The nearest address of one point (WGS 84 degrees), or None beyond ``max_distance_m``."""
        return self.addresses([lat], [lon])[0]

    def _address(self, row: int, distance_m: float) -> Address:
        number = int(self._number_id[row])
        locality = int(self._locality_id[row])
        return Address(
            house_number=None if number == NO_NUMBER else self._numbers[number],
            street=self._streets[int(self._street_id[row])],
            postcode=self._postcodes[locality],
            city=self._cities[locality],
            distance_m=distance_m,
        )

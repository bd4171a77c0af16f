"""The address index: importing BAN's export, nearest addresses, the limits, malformed files, the command.

``tests/data/ban-sample.csv`` is an invented file in BAN's exact format: 30 addresses in Metz and
Montigny-lès-Metz around :data:`ORIGIN`. Rue des Jardins runs east from it, one number every 15 m
(1 at the origin, 12 at 165 m, 12 bis and 12 ter a few metres off); Rue Serpenoise runs east 200 m
north of it (5 bis at 204 m north, 33 m east); four numbers of Rue de Pont-à-Mousson lie 1.5 km south;
one lieu-dit (no number, no street name: Grange-aux-Bois) 900 m north, 1200 m east.
"""

from __future__ import annotations

import gzip
import tomllib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from serving.addresses import (
    INDEX_FORMAT,
    Address,
    AddressFileError,
    AddressIndexError,
    ReverseGeocoder,
    import_ban,
    load_index,
    read_ban,
    unit_vectors,
)
from serving.addresses_cli import addresses
from tests.serving.helpers import moved

ROOT = Path(__file__).resolve().parents[2]
BAN_SAMPLE = ROOT / "tests" / "data" / "ban-sample.csv"
ORIGIN = (49.1180, 6.1700)
"""1 Rue des Jardins, 57000 Metz."""


def near(north_m: float, east_m: float) -> tuple[float, float]:
    """A point ``north_m`` and ``east_m`` metres from :data:`ORIGIN`."""
    return moved(*ORIGIN, north_m=north_m, east_m=east_m)


@pytest.fixture(scope="module")
def geocoder(tmp_path_factory: pytest.TempPathFactory) -> ReverseGeocoder:
    index = tmp_path_factory.mktemp("addresses") / "addresses.npz"
    import_ban(BAN_SAMPLE, index)
    return ReverseGeocoder.load(index, max_distance_m=100.0)


def test_the_sample_imports_whole() -> None:
    table = read_ban(BAN_SAMPLE)
    assert len(table) == 30
    assert set(table.cities) == {"Metz", "Montigny-lès-Metz"}
    assert {"12 bis", "12 ter", "5 bis"} <= set(table.numbers)
    assert (table.number_id == -1).sum() == 1  # the lieu-dit
    assert table.lat.dtype == np.float64 and table.number_id.dtype == np.int32


def test_a_gzipped_export_reads_as_the_plain_one(tmp_path: Path) -> None:
    packed = tmp_path / "adresses-57.csv.gz"
    packed.write_bytes(gzip.compress(BAN_SAMPLE.read_bytes()))
    plain, unpacked = read_ban(BAN_SAMPLE), read_ban(packed)
    assert unpacked.streets == plain.streets and unpacked.numbers == plain.numbers
    np.testing.assert_array_equal(unpacked.lat, plain.lat)


def test_the_index_holds_what_was_read(tmp_path: Path) -> None:
    table = import_ban(BAN_SAMPLE, tmp_path / "deep" / "addresses.npz")
    loaded = load_index(tmp_path / "deep" / "addresses.npz")
    assert loaded.streets == table.streets and loaded.cities == table.cities and loaded.postcodes == table.postcodes
    np.testing.assert_array_equal(loaded.lon, table.lon)
    np.testing.assert_array_equal(loaded.locality_id, table.locality_id)
    assert [p.name for p in (tmp_path / "deep").iterdir()] == ["addresses.npz"]  # no temporary file left


@pytest.mark.parametrize(
    ("north_m", "east_m", "label", "distance_m"),
    [
        (0.0, 0.0, "1 Rue des Jardins, 57000 Metz", 0.0),
        (5.0, 31.0, "3 Rue des Jardins, 57000 Metz", 5.1),
        (5.0, 168.0, "12 bis Rue des Jardins, 57000 Metz", 1.0),
        (8.0, 172.0, "12 ter Rue des Jardins, 57000 Metz", 1.0),
        (-6.0, 165.0, "12 Rue des Jardins, 57000 Metz", 6.0),
        (204.0, 34.0, "5 bis Rue Serpenoise, 57000 Metz", 1.0),
        (-1500.0, -262.0, "14 Rue de Pont-à-Mousson, 57950 Montigny-lès-Metz", 2.0),
        (900.0, 1250.0, "Grange-aux-Bois, 57070 Metz", 50.0),
        (900.0, 1400.0, None, None),  # 200 m from the lieu-dit, farther from anything else
        (-800.0, 0.0, None, None),
    ],
)
def test_nearest_address(
    geocoder: ReverseGeocoder, north_m: float, east_m: float, label: str | None, distance_m: float | None
) -> None:
    found = geocoder.address(*near(north_m, east_m))
    if label is None:
        assert found is None
    else:
        assert found is not None and found.label == label
        assert found.distance_m == pytest.approx(distance_m, abs=0.3)


def test_many_points_at_once_answer_as_one_by_one(geocoder: ReverseGeocoder) -> None:
    points = [near(n, e) for n, e in ((0, 0), (900, 1400), (204, 34), (-1500, -262))]
    lats, lons = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    assert geocoder.addresses(lats, lons) == [geocoder.address(lat, lon) for lat, lon in points]
    index, distance_m = geocoder.nearest(lats, lons)
    assert index.shape == distance_m.shape == (4,)
    assert index[1] == -1 and np.isinf(distance_m[1]) and (index[[0, 2, 3]] >= 0).all()


@pytest.mark.parametrize(
    ("lats", "lons", "found"),
    [
        ([], [], []),
        ([float("nan")], [6.17], [False]),
        ([ORIGIN[0], float("inf")], [ORIGIN[1], 0.0], [True, False]),
    ],
)
def test_empty_and_not_finite_points_have_no_address(
    geocoder: ReverseGeocoder, lats: list[float], lons: list[float], found: list[bool]
) -> None:
    assert [a is not None for a in geocoder.addresses(lats, lons)] == found


@pytest.mark.parametrize(("max_distance_m", "found"), [(40.0, False), (49.0, False), (51.0, True), (5000.0, True)])
def test_beyond_the_maximum_distance_there_is_no_address(max_distance_m: float, found: bool) -> None:
    geocoder = ReverseGeocoder(read_ban(BAN_SAMPLE), max_distance_m=max_distance_m)
    address = geocoder.address(*near(900.0, 1250.0))  # 50 m from the lieu-dit
    assert (address is not None) is found
    if address is not None:
        assert address.street == "Grange-aux-Bois" and address.distance_m == pytest.approx(50.0, abs=0.1)


@pytest.mark.parametrize("max_distance_m", [0.0, -1.0, float("nan")])
def test_the_maximum_distance_is_positive(max_distance_m: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        ReverseGeocoder(read_ban(BAN_SAMPLE), max_distance_m=max_distance_m)


def test_unit_vectors_are_on_the_unit_sphere() -> None:
    vectors = unit_vectors([0.0, 90.0, 49.118], [0.0, 0.0, -179.9])
    assert vectors.shape == (3, 3)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0)
    np.testing.assert_allclose(vectors[:2], [[1, 0, 0], [0, 0, 1]], atol=1e-12)


@pytest.mark.parametrize(
    ("house_number", "street", "label"),
    [
        ("12 bis", "Rue des Jardins", "12 bis Rue des Jardins, 57000 Metz"),
        ("3", "Place Saint-Louis", "3 Place Saint-Louis, 57000 Metz"),
        (None, "Grange-aux-Bois", "Grange-aux-Bois, 57000 Metz"),
    ],
)
def test_labels(house_number: str | None, street: str, label: str) -> None:
    assert Address(house_number, street, "57000", "Metz", 0.0).label == label


# --------------------------------------------------------------------------------------------------
# Malformed files

SAMPLE_LINES = BAN_SAMPLE.read_text(encoding="utf-8").splitlines()
HEADER, FIRST = SAMPLE_LINES[0], SAMPLE_LINES[1]


def _with_field(line: str, column: str, value: str) -> str:
    fields = line.split(";")
    fields[HEADER.split(";").index(column)] = value
    return ";".join(fields)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (f"{HEADER}\n".encode(), "a header but no address"),
        (f"{HEADER.replace(';lat;', ';latitude;')}\n{FIRST}\n".encode(), "line 1: the header lacks the column(s) lat"),
        (f"{HEADER.replace(';', ',')}\n".encode(), "line 1: the header lacks the column(s) numero, rep, nom_voie"),
        (f"{HEADER}\n{FIRST}\n{FIRST.rsplit(';', 1)[0]}\n".encode(), "line 3: 22 fields where the header has 23"),
        (f"{HEADER}\n{_with_field(FIRST, 'lat', '49,118')}\n".encode(), "line 2, column lat: '49,118' is not"),
        (f"{HEADER}\n{_with_field(FIRST, 'lon', '')}\n".encode(), "line 2, column lon: '' is not"),
        (f"{HEADER}\n{FIRST}\n{_with_field(FIRST, 'lat', '94.1')}\n".encode(), "line 3, column lat: 94.1 is outside"),
        (f"{HEADER}\n{_with_field(FIRST, 'lon', 'nan')}\n".encode(), "line 2, column lon: nan is outside"),
        (f"{HEADER}\n{_with_field(FIRST, 'nom_voie', ' ')}\n".encode(), "line 2, column nom_voie: empty"),
        (f"{HEADER}\n{FIRST}\n".encode("utf-16"), "not UTF-8"),
        (gzip.compress(f"{HEADER}\n{FIRST}\n".encode())[:-12], "unreadable"),
    ],
    ids=[
        "empty", "header-only", "missing-column", "commas", "short-line", "decimal-comma", "no-lon", "lat-range",
        "nan", "no-street", "utf-16", "truncated-gzip",
    ],
)
def test_malformed_files_are_refused_naming_the_line_and_column(tmp_path: Path, content: bytes, message: str) -> None:
    source = tmp_path / "adresses-57.csv"
    source.write_bytes(content)
    with pytest.raises(AddressFileError) as caught:
        import_ban(source, tmp_path / "addresses.npz")
    assert str(caught.value).startswith("adresses-57.csv")
    assert message in str(caught.value)
    assert not (tmp_path / "addresses.npz").exists()


def test_blank_lines_and_a_byte_order_mark_are_fine(tmp_path: Path) -> None:
    source = tmp_path / "adresses-57.csv"
    source.write_text(f"\ufeff{HEADER}\n{FIRST}\n\n", encoding="utf-8")
    assert len(read_ban(source)) == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        (b"not an index", "cannot be read"),
    ],
)
def test_an_unusable_index_is_refused_saying_what_to_do(tmp_path: Path, content: bytes | None, message: str) -> None:
    index = tmp_path / "addresses.npz"
    if content is not None:
        index.write_bytes(content)
    with pytest.raises(AddressIndexError, match=message) as caught:
        ReverseGeocoder.load(index, max_distance_m=100.0)
    assert "vipare addresses import" in str(caught.value)


def test_an_index_of_another_layout_is_refused(tmp_path: Path) -> None:
    index = tmp_path / "addresses.npz"
    import_ban(BAN_SAMPLE, index)
    with np.load(index) as data:
        arrays = dict(data)
    arrays["format"] = np.array(INDEX_FORMAT + 1)
    with index.open("wb") as file:
        np.savez(file, **arrays)
    with pytest.raises(AddressIndexError, match=f"layout {INDEX_FORMAT + 1}"):
        load_index(index)


# --------------------------------------------------------------------------------------------------
# The command


def test_the_command_is_declared() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["vipare.commands"]
    assert declared["addresses"] == "serving.addresses_cli:addresses [serve]"


def test_import_command_writes_the_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIPARE_ADDRESSES_PATH", raising=False)
    out = tmp_path / "index" / "moselle.npz"
    result = CliRunner().invoke(addresses, ["import", str(BAN_SAMPLE), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "30 addresses" in result.stdout and str(out) in result.stdout
    assert f"VIPARE_ADDRESSES_PATH={out}" in result.stderr
    assert len(load_index(out)) == 30


@pytest.mark.parametrize("configured", [True, False])
def test_import_command_writes_where_the_service_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, configured: bool
) -> None:
    expected = tmp_path / "configured.npz" if configured else tmp_path / "data" / "addresses.npz"
    if configured:
        monkeypatch.setenv("VIPARE_ADDRESSES_PATH", str(expected))
    else:
        monkeypatch.delenv("VIPARE_ADDRESSES_PATH", raising=False)
    result = CliRunner().invoke(addresses, ["import", str(BAN_SAMPLE), "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    assert expected.is_file()
    assert ("VIPARE_ADDRESSES_PATH=" in result.stderr) is not configured


def test_import_command_explains_a_malformed_file(tmp_path: Path) -> None:
    source = tmp_path / "adresses-57.csv"
    source.write_text(f"{HEADER}\n{_with_field(FIRST, 'lat', 'x')}\n", encoding="utf-8")
    result = CliRunner().invoke(addresses, ["import", str(source), "--out", str(tmp_path / "a.npz")])
    assert result.exit_code == 1
    assert "adresses-57.csv line 2, column lat: 'x' is not a decimal number" in result.stderr


def test_latitudes_and_longitudes_must_pair(geocoder: ReverseGeocoder) -> None:
    with pytest.raises(ValueError, match="same shape"):
        geocoder.nearest([49.1, 49.2], [6.1])

"""A national store: a million incidents over France, on SQLite and on PostgreSQL, timed through vipare's own code.

For each database it makes a new store with the project's migrations and seeds it (``--incidents``,
default 1,000,000): 70 % around 40 French cities (3 km spread), 30 % anywhere in mainland France;
80 % cleaned, 8 % rejected or merged, 12 % open; first seen over the last three years (the open
ones within the last month); one report per incident (a note on 5 %) and its history (opened, then
its last status); and five hotspots of 3,000 incidents cleaned one after the other at one place.
PostgreSQL's tables are then vacuumed and analysed (``VACUUM ANALYZE``, as autovacuum does after such a
load); SQLite has no statistics, as a store never runs ``ANALYZE``. Then, on that store:

* grouping lookup: reading the incidents a new report may reach and choosing among them
  (:class:`serving.grouping.Candidates`, then ``near``) in a write transaction rolled back, for 300
  reports drawn like the seed and 60 at the hotspots; p50/p95 of each;
* a 32-frame batch transaction: 32 frames of one fixed camera written as a batch job does
  (``write_session`` over the camera's place, ``store_reports``, commit), 20 times at cameras in cities;
* bbox query: the managers' list of a city-sized box (about 9 x 9 km: count, first page, latest photos,
  as ``GET /v1/incidents`` runs them), three times at each city;
* writes/s: processes each committing one photo's report at a time (as an upload does) at their
  own city, far from the others, for ``--seconds``: one writer, then four together; and the CPU one
  write costs (the writer's, and its PostgreSQL server process's, from /proc), which bounds what the
  machine's cores allow whatever the locks;
* a département's CSV over HTTP: ``GET /v1/exports/incidents.csv`` for Moselle's box from a real
  ``vipare serve`` on the store, rows per second from the request to the last byte, ``--csv-requests``
  times one after the other (the first one on a server that has answered nothing yet);
* the query plans of the grouping lookup and the bbox query.

PostgreSQL runs when ``--postgres`` gives a server URL (a new database is made there and dropped at the
end); start one with fsync on, as a server runs: ``PG_FSYNC=on tests/pg_cluster.sh start DIR``. SQLite
files are in ``--work-dir`` (default: a temporary folder on the same disk as the system's).

    python -m benchmarks.bench_national --postgres "$(PG_FSYNC=on tests/pg_cluster.sh start /tmp/pg)"
"""

from __future__ import annotations

import math
import multiprocessing
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import httpx2
import numpy as np
from sqlalchemy import Engine, event, insert, text
from sqlalchemy.engine import make_url

from benchmarks.cli import command
from serving.auth import Principal, Role
from serving.cells import cell_of
from serving.config import ServiceSettings
from serving.db import make_engine, migrate, session_factory, write_session
from serving.grouping import Candidates, GroupingPolicy
from serving.launch import cli_key, start_server
from serving.models import STATUS_TIMES, Incident, Report, Transition
from serving.queries import IncidentFilter, count_incidents, latest_reports, list_incidents, parse_bbox
from serving.reports.store import NewReport, places_of, store_reports
from serving.storage import grouping_policy
from vipare.machine import machine
from vipare.results import ImageInfo, ImageResult, Location, ModelInfo, Verdict

CITIES: tuple[tuple[str, float, float], ...] = (
    ("Paris", 48.8566, 2.3522), ("Marseille", 43.2965, 5.3698), ("Lyon", 45.7640, 4.8357),
    ("Toulouse", 43.6047, 1.4442), ("Nice", 43.7102, 7.2620), ("Nantes", 47.2184, -1.5536),
    ("Montpellier", 43.6108, 3.8767), ("Strasbourg", 48.5734, 7.7521), ("Bordeaux", 44.8378, -0.5792),
    ("Lille", 50.6292, 3.0573), ("Rennes", 48.1173, -1.6778), ("Reims", 49.2583, 4.0317),
    ("Toulon", 43.1242, 5.9280), ("Saint-Étienne", 45.4397, 4.3872), ("Le Havre", 49.4944, 0.1079),
    ("Grenoble", 45.1885, 5.7245), ("Dijon", 47.3220, 5.0415), ("Angers", 47.4784, -0.5632),
    ("Nîmes", 43.8367, 4.3601), ("Clermont-Ferrand", 45.7772, 3.0870), ("Le Mans", 48.0061, 0.1996),
    ("Aix-en-Provence", 43.5297, 5.4474), ("Brest", 48.3904, -4.4861), ("Tours", 47.3941, 0.6848),
    ("Amiens", 49.8941, 2.2958), ("Limoges", 45.8336, 1.2611), ("Metz", 49.1193, 6.1757),
    ("Besançon", 47.2378, 6.0241), ("Perpignan", 42.6887, 2.8948), ("Orléans", 47.9030, 1.9093),
    ("Rouen", 49.4432, 1.0999), ("Mulhouse", 47.7508, 7.3359), ("Caen", 49.1829, -0.3707),
    ("Nancy", 48.6921, 6.1844), ("Avignon", 43.9493, 4.8055), ("Poitiers", 46.5802, 0.3404),
    ("Pau", 43.2951, -0.3708), ("La Rochelle", 46.1603, -1.1511), ("Thionville", 49.3579, 6.1683),
    ("Bayonne", 43.4929, -1.4748),
)
HOTSPOTS = 5
HOTSPOT_INCIDENTS = 3000
MOSELLE_BBOX = "5.89,48.52,7.64,49.51"
FRANCE = (42.4, 51.1, -4.8, 8.2)  # min/max lat, min/max lon
_BLOCK = 20_000
_NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
_MODEL = ModelInfo(name="bench", sha256="0" * 64, input_size=(320, 320), stride=32, classes=["dumped_waste"])


# --------------------------------------------------------------------------------------------------
# The store


def _metres_to_degrees(lat: float, north_m: np.ndarray, east_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return north_m / 111_320.0, east_m / (111_320.0 * math.cos(math.radians(lat)))


def _positions(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` positions: 70 % around the cities (3 km spread), the rest anywhere in mainland France."""
    lat, lon = np.empty(n), np.empty(n)
    around = rng.random(n) < 0.7
    city = rng.integers(0, len(CITIES), n)
    for k, (_, clat, clon) in enumerate(CITIES):
        at = around & (city == k)
        dlat, dlon = _metres_to_degrees(clat, rng.normal(0, 3000, at.sum()), rng.normal(0, 3000, at.sum()))
        lat[at], lon[at] = clat + dlat, clon + dlon
    rest = ~around
    lat[rest] = rng.uniform(FRANCE[0], FRANCE[1], rest.sum())
    lon[rest] = rng.uniform(FRANCE[2], FRANCE[3], rest.sum())
    return lat, lon


def _hotspots() -> list[tuple[float, float]]:
    return [(lat + 0.004, lon - 0.003) for _, lat, lon in CITIES[:HOTSPOTS]]


def seed(engine: Engine, n: int, rng: np.random.Generator) -> None:
    """Seed ``n`` incidents (with their reports and histories) as the module doc says."""
    statuses = np.array(["cleaned", "rejected", "duplicate", "new", "confirmed", "scheduled"])
    hot = HOTSPOTS * HOTSPOT_INCIDENTS
    lat, lon = _positions(rng, n)
    status = statuses[rng.choice(len(statuses), n, p=[0.80, 0.06, 0.02, 0.06, 0.03, 0.03])]
    age_s = rng.uniform(0, 3 * 365 * 86400, n)
    is_open = np.isin(status, ["new", "confirmed", "scheduled"])
    age_s[is_open] = rng.uniform(0, 30 * 86400, is_open.sum())
    for h, (hlat, hlon) in enumerate(_hotspots()):  # cleaned one after the other at one place
        at = slice(h * HOTSPOT_INCIDENTS, (h + 1) * HOTSPOT_INCIDENTS)
        dlat, dlon = _metres_to_degrees(hlat, rng.normal(0, 3, HOTSPOT_INCIDENTS), rng.normal(0, 3, HOTSPOT_INCIDENTS))
        lat[at], lon[at], status[at] = hlat + dlat, hlon + dlon, "cleaned"
        age_s[at] = np.linspace(3 * 365 * 86400, 2 * 86400, HOTSPOT_INCIDENTS)
    seen_s = rng.uniform(0, 3 * 86400, n)
    label = np.where(rng.random(n) < 0.85, "dumped_waste", "overflowing_bin")
    score = rng.uniform(0.4, 0.95, n)
    size = np.array(["S", "M", "L"])[rng.integers(0, 3, n)]
    noted = rng.random(n) < 0.05
    with engine.begin() as connection:
        for start in range(0, n, _BLOCK):
            incidents, reports, transitions = [], [], []
            for i in range(start, min(n, start + _BLOCK)):
                first = _NOW - timedelta(seconds=float(age_s[i]))
                last = min(_NOW, first + timedelta(seconds=float(seen_s[i])))
                st = str(status[i])
                cleaned = last + timedelta(hours=1 + float(seen_s[i]) / 3600) if st == "cleaned" else None
                if i < hot:
                    cleaned = last + timedelta(hours=2)
                ident = i + 1
                incidents.append({
                    "id": ident, "family": "waste", "label": str(label[i]), "status": st, "lat": float(lat[i]),
                    "lon": float(lon[i]), "cell": cell_of(float(lat[i]), float(lon[i])), "first_seen": first,
                    "last_seen": last, "max_score": float(score[i]), "report_count": 1, "recurrence_count": 0,
                    "cleaned_at": cleaned, "size_estimate": str(size[i]), "to_review": False,
                    "created_at": first, "updated_at": cleaned or last,
                    **dict.fromkeys(STATUS_TIMES.values()), "new_at": first,
                    **({STATUS_TIMES[st]: cleaned or last} if st != "new" else {}),
                })
                reports.append({
                    "id": ident, "client_ref": "camera:seed", "submitted_by": "seed", "sha256": f"{ident:064x}",
                    "photo_ext": "jpg", "received_at": first, "observed_at": first, "dumping": True,
                    "score": float(score[i]), "label": str(label[i]), "lat": float(lat[i]), "lon": float(lon[i]),
                    "location_source": "camera", "model_sha256": _MODEL.sha256, "image": {}, "detections": [],
                    "verdict": {}, "location": {}, "model": {}, "incident_id": ident, "incident_action": "opened",
                    "note": "sacs devant la porte" if noted[i] else None, "agent_says_deposit": False,
                })
                transitions.append({"incident_id": ident, "from_status": None, "to_status": "new", "at": first,
                                    "actor": "seed", "comment": f"opened by report #{ident}"})
                if st != "new":
                    transitions.append({"incident_id": ident, "from_status": "new", "to_status": st,
                                        "at": cleaned or last, "actor": "seed", "comment": None})
            connection.execute(insert(Incident), incidents)
            connection.execute(insert(Report), reports)
            connection.execute(insert(Transition), transitions)
        if connection.dialect.name == "postgresql":
            for table in ("incidents", "reports", "transitions"):
                connection.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                        f"(SELECT max(id) FROM {table}))"))
    if engine.dialect.name == "postgresql":  # as autovacuum does after a load; a SQLite store has no statistics
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE"))


# --------------------------------------------------------------------------------------------------
# Measurements


def _ms(values: list[float]) -> str:
    q = statistics.quantiles(values, n=20, method="inclusive")
    return f"p50 {statistics.median(values) * 1000:7.2f} ms  p95 {q[18] * 1000:7.2f} ms  (n={len(values)})"


def _new_report(lat: float, lon: float, at: datetime) -> Report:
    return Report(lat=lat, lon=lon, label="dumped_waste", observed_at=at)


def time_lookups(sessions: Any, policy: GroupingPolicy, places: list[tuple[float, float]]) -> list[float]:
    """Seconds to read and choose the incidents each new report at ``places`` may reach."""
    times = []
    for lat, lon in places:
        report = _new_report(lat, lon, _NOW)
        with sessions() as session, session.begin():
            start = time.perf_counter()
            Candidates(session, [report], policy).near(report)
            times.append(time.perf_counter() - start)
            session.rollback()
    return times


def frame_result(lat: float, lon: float, sha_seed: str, at: datetime) -> ImageResult:
    """A camera frame with a deposit, at ``(lat, lon)``."""
    import hashlib

    from vipare.results import Detection

    return ImageResult(
        source=f"{sha_seed}.jpg",
        image=ImageInfo(width=1920, height=1080, format="JPEG", sha256=hashlib.sha256(sha_seed.encode()).hexdigest(),
                        size_bytes=400_000, captured_at=at),
        detections=[Detection(label="dumped_waste", class_id=0, score=0.8, box=(100, 200, 300, 400),
                              area_fraction=0.05, deposit=True)],
        verdict=Verdict(dumping=True, score=0.8, threshold=0.4),
        location=Location(lat=lat, lon=lon, source="camera", camera_id="cam"),
        model=_MODEL,
    )


_CAMERA = Principal(key_id=None, name="bench camera", role=Role.CAMERA, permissions=frozenset(), camera_id="cam")


def time_batches(sessions: Any, policy: GroupingPolicy, rng: np.random.Generator, count: int) -> list[float]:
    """Seconds for ``count`` committed transactions of 32 frames of one camera in a city."""
    times = []
    for k in range(count):
        _, clat, clon = CITIES[k % len(CITIES)]
        lat, lon = clat + rng.normal(0, 0.01), clon + rng.normal(0, 0.01)
        reports = [
            NewReport(_CAMERA, frame_result(lat, lon, f"batch-{k}-{f}", _NOW + timedelta(seconds=f)), "jpg", _NOW)
            for f in range(32)
        ]
        start = time.perf_counter()
        with write_session(sessions, places=places_of((r.result for r in reports), policy)) as session:
            store_reports(session, reports, policy=policy)
        times.append(time.perf_counter() - start)
    return times


def city_list(sessions: Any, lat: float, lon: float, page_size: int) -> None:
    """The managers' list of a city-sized box around (lat, lon), as ``GET /v1/incidents`` runs it."""
    flt = IncidentFilter(bbox=parse_bbox(f"{lon - 0.06},{lat - 0.04},{lon + 0.06},{lat + 0.04}"))
    with sessions() as session:
        count_incidents(session, flt)
        page = list_incidents(session, flt, limit=page_size)
        latest_reports(session, [i.id for i in page])


def time_bboxes(sessions: Any, page_size: int) -> list[float]:
    """Seconds for :func:`city_list` at each city, 3 times."""
    times = []
    for _ in range(3):
        for _, lat, lon in CITIES:
            start = time.perf_counter()
            city_list(sessions, lat, lon, page_size)
            times.append(time.perf_counter() - start)
    return times


def _cpu_s(pid: int) -> float:
    """CPU seconds a process of this machine has used (user + system), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _writer(url: str, city: int, seconds: float, go: Any, results: Any) -> None:
    """One writing process: one report per transaction at its own city until ``seconds`` have passed.

    Puts (commits, seconds, its CPU seconds, its PostgreSQL server process's CPU seconds or 0).
    """
    engine = make_engine(url)
    sessions = session_factory(engine)
    policy = GroupingPolicy(radius_m=30.0, window=timedelta(days=7))
    rng = np.random.default_rng(city)
    _, clat, clon = CITIES[city]
    backend = None
    if engine.dialect.name == "postgresql":  # the pool keeps this one connection for the writer's transactions
        with engine.connect() as connection:
            backend = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
    go.wait()
    done, start, cpu = 0, time.perf_counter(), time.process_time()
    server = _cpu_s(backend) if backend else 0.0
    while time.perf_counter() - start < seconds:
        lat, lon = clat + rng.normal(0, 0.02), clon + rng.normal(0, 0.02)
        result = frame_result(lat, lon, f"writer-{city}-{done}-{os.getpid()}", _NOW)
        with write_session(sessions, places=places_of([result], policy)) as session:
            store_reports(session, [NewReport(_CAMERA, result, "jpg", _NOW)], policy=policy)
        done += 1
    server = _cpu_s(backend) - server if backend else 0.0
    results.put((done, time.perf_counter() - start, time.process_time() - cpu, server))
    engine.dispose()


def writes_per_second(url: str, writers: int, seconds: float, first_city: int) -> tuple[float, float]:
    """Commits per second of ``writers`` processes together, each at its own city, and the CPU seconds
    (writer and database server) each commit took."""
    context = multiprocessing.get_context("spawn")
    go, results = context.Event(), context.Queue()
    processes = [
        context.Process(target=_writer, args=(url, first_city + w * 7, seconds, go, results)) for w in range(writers)
    ]
    for process in processes:
        process.start()
    time.sleep(3.0)  # imports and connections, before the start
    go.set()
    counts = [results.get(timeout=seconds + 120) for _ in processes]
    for process in processes:
        process.join()
    done = sum(c[0] for c in counts)
    return done / max(c[1] for c in counts), sum(c[2] + c[3] for c in counts) / done


def csv_rows_per_second(data_dir: Path, url: str, requests: int) -> tuple[int, list[float]]:
    """Rows and seconds of each of ``requests`` Moselle CSVs, one after the other, from a real server on the store."""
    settings = {"VIPARE_DATABASE_URL": url}
    key = cli_key(data_dir, "manager", "bench", settings)
    server = start_server(data_dir, settings)
    try:
        counts, seconds = set(), []
        for _ in range(requests):
            start = time.perf_counter()
            lines = 0
            with httpx2.stream("GET", f"{server.url}/v1/exports/incidents.csv", params={"bbox": MOSELLE_BBOX},
                               headers={"Authorization": f"Bearer {key}"}, timeout=600) as response:
                response.raise_for_status()
                for chunk in response.iter_bytes():
                    lines += chunk.count(b"\n")
            seconds.append(time.perf_counter() - start)
            counts.add(lines - 1)
        if len(counts) != 1:
            raise RuntimeError(f"the same export gave different row counts: {sorted(counts)}")
        return counts.pop(), seconds
    finally:
        server.stop()


@contextmanager
def _statements(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def plans(engine: Engine, run: Callable[[], None]) -> list[str]:
    """The plan of each SELECT on incidents that ``run`` sends, as the database gives it."""
    with _statements(engine) as seen:
        run()
    explain = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
    out = []
    with engine.connect() as connection:
        for statement, parameters in seen:
            if not statement.lstrip().startswith("SELECT") or "incidents" not in statement:
                continue
            rows = connection.exec_driver_sql(explain + statement, parameters).all()
            first = " ".join(statement.split())[:110]
            out.append(f"  {first}...\n" + "\n".join(f"      {' | '.join(map(str, r))}" for r in rows))
    return out


# --------------------------------------------------------------------------------------------------
# The run


def run_backend(name: str, url: str, data_dir: Path, incidents: int, seconds: float, csv_requests: int) -> None:
    engine = make_engine(url)
    migrate(engine)
    rng = np.random.default_rng(2026)
    start = time.perf_counter()
    seed(engine, incidents, rng)
    print(f"\n== {name}: {incidents:,} incidents seeded in {time.perf_counter() - start:.0f} s ({url.split('?')[0]})")
    sessions = session_factory(engine)
    policy = grouping_policy(ServiceSettings(data_dir=data_dir))
    lat, lon = _positions(np.random.default_rng(7), 300)
    ordinary = list(zip(lat.tolist(), lon.tolist(), strict=True))
    hot = [(hlat, hlon) for hlat, hlon in _hotspots() for _ in range(12)]
    time_lookups(sessions, policy, ordinary[:20])  # warm the caches
    print(f"grouping lookup, new report:      {_ms(time_lookups(sessions, policy, ordinary))}")
    print(f"grouping lookup, at a hotspot:    {_ms(time_lookups(sessions, policy, hot))}"
          f"  ({HOTSPOT_INCIDENTS:,} cleaned incidents there)")
    print(f"32-frame batch transaction:       {_ms(time_batches(sessions, policy, rng, 20))}")
    page = ServiceSettings(data_dir=data_dir).page_size
    print(f"bbox query, city box (~9x9 km):   {_ms(time_bboxes(sessions, page))}  (count + page of {page})")
    (one, cpu), (four, _) = writes_per_second(url, 1, seconds, 0), writes_per_second(url, 4, seconds, 1)
    print(f"writes/s at distant places:       1 writer {one:.0f}/s, 4 writers {four:.0f}/s: {four / one:.2f}x")
    cores = os.cpu_count() or 1
    print(f"  one write costs {cpu * 1000:.1f} ms CPU (writer + database server): {cores} cores take at most "
          f"{cores / cpu:.0f}/s, {cores / cpu / one:.2f}x one writer")
    rows, took = csv_rows_per_second(data_dir, url, csv_requests)
    rates = ", ".join(f"{rows / t:,.0f}" for t in took)
    print(f"Moselle CSV over HTTP:            {rows:,} rows: {rows / statistics.median(took):,.0f} rows/s "
          f"(median of {len(took)} requests: {rates})")
    print("plans, grouping lookup at a hotspot:")
    report = _new_report(*_hotspots()[0], _NOW)

    def lookup() -> None:
        with sessions() as session:
            Candidates(session, [report], policy)

    def bbox() -> None:
        city_list(sessions, *_hotspots()[0], page)

    print("\n".join(plans(engine, lookup)))
    print("plans, bbox query:")
    print("\n".join(plans(engine, bbox)))
    engine.dispose()


@contextmanager
def _postgres_database(server_url: str) -> Iterator[str]:
    """A new database on the server for this run, dropped at the end."""
    name = f"vipare_bench_{os.getpid()}"
    admin = make_engine(server_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@command(__doc__)
@click.option("--incidents", type=click.IntRange(HOTSPOTS * HOTSPOT_INCIDENTS + 1), default=1_000_000,
              show_default=True, help="Incidents to seed.")
@click.option("--postgres", "postgres_url", default=None, help="A PostgreSQL server URL (a database is made there).")
@click.option("--sqlite/--no-sqlite", default=True, show_default=True, help="Run on SQLite.")
@click.option("--seconds", type=click.FloatRange(1), default=15.0, show_default=True,
              help="How long writes/s are measured.")
@click.option("--csv-requests", type=click.IntRange(1), default=3, show_default=True,
              help="How many times the département's CSV is asked for.")
@click.option("--work-dir", type=click.Path(path_type=Path), default=None, help="Where the data folders go.")
def main(incidents: int, postgres_url: str | None, sqlite: bool, seconds: float, csv_requests: int,
         work_dir: Path | None) -> None:
    print(f"machine: {machine()}, Python {platform.python_version()}, load {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        if sqlite:
            data_dir = Path(tmp) / "sqlite"
            url = ServiceSettings(data_dir=data_dir).resolved_database_url
            run_backend("SQLite", url, data_dir, incidents, seconds, csv_requests)
        if postgres_url:
            with _postgres_database(postgres_url) as url:
                run_backend("PostgreSQL", url, Path(tmp) / "postgres", incidents, seconds, csv_requests)
    print(f"\nload at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

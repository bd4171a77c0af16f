"""How often the size estimated from the photos agrees with the size managers set, on a service's own data.

Reads the database of a data folder (``vipare serve --data-dir``; or ``--database-url``), takes every
incident a manager gave a size (``PUT /v1/incidents/{id}/size``), estimates its size again from its
reports' detections with :func:`serving.sizes.estimate_size`, and prints the agreement and the
confusion table (rows: the managers' sizes, columns: the estimates). Run it on a city's reviewed
incidents before relying on the estimate for planning.

    python -m benchmarks.bench_sizes /var/lib/vipare
"""

from __future__ import annotations

from collections import Counter
from functools import reduce
from pathlib import Path

import click
from sqlalchemy import select

from benchmarks.cli import command
from serving.config import ServiceSettings
from serving.db import make_engine, session_factory
from serving.models import Incident, Report
from serving.sizes import SIZES, estimate_size, larger


@command(__doc__)
@click.argument("data_dir", type=click.Path(file_okay=False, path_type=Path), required=False)
@click.option("--database-url", default=None, help="A database URL instead of a data folder's SQLite file.")
def main(data_dir: Path | None, database_url: str | None) -> None:
    if data_dir is None and database_url is None:
        raise click.UsageError("give a data folder or --database-url")
    settings = ServiceSettings(data_dir=data_dir or Path("."), database_url=database_url)
    engine = make_engine(settings.resolved_database_url)
    pairs: Counter[tuple[str, str]] = Counter()
    with session_factory(engine)() as session:
        for incident in session.scalars(select(Incident).where(Incident.size.is_not(None))):
            detections = session.scalars(select(Report.detections).where(Report.incident_id == incident.id))
            estimate = reduce(larger, (estimate_size(d) for d in detections), None) or "-"
            pairs[(str(incident.size), estimate)] += 1
    engine.dispose()
    total = sum(pairs.values())
    if not total:
        print("no incident has a size set by a manager yet: nothing to compare")
        return
    agree = sum(n for (manager, estimate), n in pairs.items() if manager == estimate)
    print(f"{total} incidents sized by a manager; the estimate agrees on {agree} ({agree / total:.0%})")
    columns = [*SIZES, "-"]
    print("manager / estimate " + " ".join(f"{c:>5}" for c in columns))
    for manager in SIZES:
        print(f"{manager:>18} " + " ".join(f"{pairs[(manager, c)]:>5}" for c in columns))


if __name__ == "__main__":
    main()

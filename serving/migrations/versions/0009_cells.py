"""Each incident's grid cell (serving.cells), indexed with its class family, status and cleaning time or
last sighting; indexes for the facts exports and lists fetch per incident.

Looking for the incidents near a new report becomes an equality lookup on a few cells, whatever the
number of incidents elsewhere. Existing incidents get their cell from their position, a block at a time.
Each incident's latest photo still kept, and when it entered each status, are read from an index alone;
the managers' list of a box is sorted from the position index, which now holds the sort's columns.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BLOCK = 10_000


def _cell(lat: float, lon: float) -> int:
    """serving.cells.cell_of at the time of this revision (0.001 degree cells)."""
    row = min(179_999, max(0, math.floor((lat + 90.0) * 1000.0)))
    column = min(359_999, max(0, math.floor((lon + 180.0) * 1000.0)))
    return row * 360_000 + column


def upgrade() -> None:
    """Add the column, fill it, index it."""
    with op.batch_alter_table("incidents") as batch:
        batch.add_column(sa.Column("cell", sa.BigInteger(), nullable=True))
    connection = op.get_bind()
    last = 0
    while True:
        rows = connection.execute(
            sa.text("SELECT id, lat, lon FROM incidents WHERE id > :last ORDER BY id LIMIT :n"),
            {"last": last, "n": _BLOCK},
        ).all()
        if not rows:
            break
        connection.execute(
            sa.text("UPDATE incidents SET cell = :cell WHERE id = :id"),
            [{"cell": _cell(lat, lon), "id": incident_id} for incident_id, lat, lon in rows],
        )
        last = rows[-1][0]
    op.create_index(
        "ix_incidents_cell_family_status_cleaned_at", "incidents", ["cell", "family", "status", "cleaned_at"]
    )
    op.create_index(
        "ix_incidents_cell_family_status_last_seen", "incidents", ["cell", "family", "status", "last_seen"]
    )
    op.create_index(
        "ix_reports_incident_id_photo_deleted_at_id", "reports", ["incident_id", "photo_deleted_at", "id"]
    )
    op.create_index("ix_transitions_incident_id_to_status_at", "transitions", ["incident_id", "to_status", "at"])
    op.create_index(
        "ix_incidents_lat_lon_to_review_last_seen_id", "incidents", ["lat", "lon", "to_review", "last_seen", "id"]
    )
    op.drop_index("ix_incidents_lat_lon", table_name="incidents")


def downgrade() -> None:
    """Drop the indexes and the column."""
    op.create_index("ix_incidents_lat_lon", "incidents", ["lat", "lon"])
    op.drop_index("ix_incidents_lat_lon_to_review_last_seen_id", table_name="incidents")
    op.drop_index("ix_transitions_incident_id_to_status_at", table_name="transitions")
    op.drop_index("ix_reports_incident_id_photo_deleted_at_id", table_name="reports")
    op.drop_index("ix_incidents_cell_family_status_last_seen", table_name="incidents")
    op.drop_index("ix_incidents_cell_family_status_cleaned_at", table_name="incidents")
    with op.batch_alter_table("incidents") as batch:
        batch.drop_column("cell")

"""When each incident last entered each status, kept on the incident; an index of the reports that have a note.

The CSV export writes these times for every incident it lists: read from the incident's own row
instead of six lookups in its history each. Existing incidents get theirs from their history (the
transitions that changed the status: a review or an erasure noted in the history keeps it); the
cleaning time was already kept. Only the few reports with a note are in the new index, which gives
each incident's latest note in one lookup.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATUSES = ("new", "confirmed", "scheduled", "rejected", "duplicate")
_NOTED = sa.text("note IS NOT NULL AND note != ''")


def upgrade() -> None:
    """Add the columns, fill them from the history, index the noted reports."""
    with op.batch_alter_table("incidents") as batch:
        for status in _STATUSES:
            batch.add_column(sa.Column(f"{status}_at", sa.DateTime(), nullable=True))
    entered = ", ".join(
        f"{status}_at = (SELECT max(t.at) FROM transitions t WHERE t.incident_id = incidents.id "
        f"AND t.to_status = '{status}' AND (t.from_status IS NULL OR t.from_status != t.to_status))"
        for status in _STATUSES
    )
    op.execute(f"UPDATE incidents SET {entered}")
    op.create_index(
        "ix_reports_noted", "reports", ["incident_id", "id"], sqlite_where=_NOTED, postgresql_where=_NOTED
    )


def downgrade() -> None:
    """Drop the index and the columns."""
    op.drop_index("ix_reports_noted", table_name="reports")
    with op.batch_alter_table("incidents") as batch:
        for status in reversed(_STATUSES):
            batch.drop_column(f"{status}_at")

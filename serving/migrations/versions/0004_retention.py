"""Retention and erasure: photos deleted after their incident closed, one report erased on request.

- ``reports.photo_deleted_at``: when the report's photo stopped being kept (purged after the
  retention period, or erased); the row, its detections, place and time stay;
- ``reports.erased_at``, ``reports.erased_by``: an administrator erased the report's photo and
  personal fields (``erased_by`` is the administrator, never the person the data was about);
- ``scheduled_passes``: when each periodic pass of the service (the daily purge) last started and
  finished; the workers claim a pass by updating its row in a write transaction.

Plain nullable columns: SQLite adds them without rebuilding ``reports``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Timestamps are naive UTC in the database (serving.models.UTCDateTime adds the zone when reading).
UTC_DATETIME = sa.DateTime()


def upgrade() -> None:
    """Add the deletion and erasure marks of reports and create ``scheduled_passes``."""
    op.add_column("reports", sa.Column("photo_deleted_at", UTC_DATETIME, nullable=True))
    op.add_column("reports", sa.Column("erased_at", UTC_DATETIME, nullable=True))
    op.add_column("reports", sa.Column("erased_by", sa.String(length=240), nullable=True))
    op.create_index(op.f("ix_reports_photo_deleted_at"), "reports", ["photo_deleted_at"])
    op.create_table(
        "scheduled_passes",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("started_at", UTC_DATETIME, nullable=True),
        sa.Column("finished_at", UTC_DATETIME, nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_scheduled_passes")),
    )


def downgrade() -> None:
    """Drop the marks (deleted photos stay deleted) and ``scheduled_passes``."""
    op.drop_table("scheduled_passes")
    op.drop_index(op.f("ix_reports_photo_deleted_at"), table_name="reports")
    with op.batch_alter_table("reports") as batch:
        batch.drop_column("erased_by")
        batch.drop_column("erased_at")
        batch.drop_column("photo_deleted_at")

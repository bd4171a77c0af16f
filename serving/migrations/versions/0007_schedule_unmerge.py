"""A crew and a date for scheduled incidents; merges that can be undone.

- ``incidents.scheduled_for``: when the crew is to clean it (Open311 ``expected_datetime``);
  ``incidents.crew``: which crew. Both set by the "scheduled" transition.
- ``reports.merged_from``: the incident a report belonged to before a merge moved it; an unmerge
  moves it back.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Timestamps are naive UTC in the database (serving.models.UTCDateTime adds the zone when reading).
UTC_DATETIME = sa.DateTime()


def upgrade() -> None:
    """Add the schedule's columns and ``reports.merged_from``."""
    with op.batch_alter_table("incidents") as batch:
        batch.add_column(sa.Column("scheduled_for", UTC_DATETIME, nullable=True))
        batch.add_column(sa.Column("crew", sa.String(length=100), nullable=True))
        batch.create_index(op.f("ix_incidents_scheduled_for"), ["scheduled_for"])
    with op.batch_alter_table("reports") as batch:
        batch.add_column(sa.Column("merged_from", sa.Integer(), nullable=True))
        batch.create_foreign_key(op.f("fk_reports_merged_from_incidents"), "incidents", ["merged_from"], ["id"])
        batch.create_index(op.f("ix_reports_merged_from"), ["merged_from"])


def downgrade() -> None:
    """Drop them."""
    with op.batch_alter_table("reports") as batch:
        batch.drop_index(op.f("ix_reports_merged_from"))
        batch.drop_constraint(op.f("fk_reports_merged_from_incidents"), type_="foreignkey")
        batch.drop_column("merged_from")
    with op.batch_alter_table("incidents") as batch:
        batch.drop_index(op.f("ix_incidents_scheduled_for"))
        batch.drop_column("crew")
        batch.drop_column("scheduled_for")

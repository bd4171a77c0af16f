"""Photos taken after a cleaning, as proof: ``reports.after_of``.

- ``reports.after_of``: the incident whose place a crew member photographed after cleaning it. Such a
  report joins no incident (``incident_id`` stays null) and is shown to managers beside the
  incident's "before" photos; when the model sees no deposit in it, "cleaned" is proposed.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``reports.after_of`` and its index."""
    with op.batch_alter_table("reports") as batch:
        batch.add_column(sa.Column("after_of", sa.Integer(), nullable=True))
        batch.create_foreign_key(op.f("fk_reports_after_of_incidents"), "incidents", ["after_of"], ["id"])
        batch.create_index(op.f("ix_reports_after_of"), ["after_of"])


def downgrade() -> None:
    """Drop ``reports.after_of``."""
    with op.batch_alter_table("reports") as batch:
        batch.drop_index(op.f("ix_reports_after_of"))
        batch.drop_constraint(op.f("fk_reports_after_of_incidents"), type_="foreignkey")
        batch.drop_column("after_of")

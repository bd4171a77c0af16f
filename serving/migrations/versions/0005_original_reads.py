"""Unblurred originals kept for a few days (``VIPARE_KEEP_ORIGINALS_DAYS``), every read logged.

- ``original_reads``: who read the unblurred original of which report, when and why. The row stays
  when the original is gone (expired, purged, erased): the log outlives what it logs.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Timestamps are naive UTC in the database (serving.models.UTCDateTime adds the zone when reading).
UTC_DATETIME = sa.DateTime()


def upgrade() -> None:
    """Create ``original_reads``."""
    op.create_table(
        "original_reads",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("report_id", sa.Integer(), nullable=False),
        sa.Column("read_at", UTC_DATETIME, nullable=False),
        sa.Column("reader", sa.String(length=240), nullable=False),
        sa.Column("reader_key_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["report_id"], ["reports.id"], name=op.f("fk_original_reads_report_id_reports")),
        sa.ForeignKeyConstraint(
            ["reader_key_id"], ["api_keys.id"], name=op.f("fk_original_reads_reader_key_id_api_keys")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_original_reads")),
    )
    op.create_index(op.f("ix_original_reads_report_id"), "original_reads", ["report_id"])
    op.create_index(op.f("ix_original_reads_read_at"), "original_reads", ["read_at"])


def downgrade() -> None:
    """Drop ``original_reads``."""
    op.drop_index(op.f("ix_original_reads_read_at"), table_name="original_reads")
    op.drop_index(op.f("ix_original_reads_report_id"), table_name="original_reads")
    op.drop_table("original_reads")

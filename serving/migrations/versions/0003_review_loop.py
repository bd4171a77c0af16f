"""The review loop: reports sent anyway, managers' reviews of a photo, the models promoted.

- ``reports.agent_says_deposit``: the agent sent the photo as a deposit whatever the model said;
- ``incidents.to_review``: an incident a manager should look at first (a report sent anyway, not
  yet reviewed);
- ``report_reviews``: what a manager says is in a report's photo (boxes and classes, or no deposit),
  one row per review, the latest one current; the model's detections stay in ``reports``;
- ``model_promotions``: every model the service was told to use, the latest one current.

New tables rather than foreign keys added to existing ones: SQLite cannot add a foreign key to a
table without rebuilding it (see 0002). The new columns are plain booleans with a server default.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Timestamps are naive UTC in the database (serving.models.UTCDateTime adds the zone when reading).
UTC_DATETIME = sa.DateTime()


def upgrade() -> None:
    """Add the two flags and create ``report_reviews`` and ``model_promotions``."""
    op.add_column("reports", sa.Column("agent_says_deposit", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("incidents", sa.Column("to_review", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "report_reviews",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("report_id", sa.Integer(), nullable=False),
        sa.Column("reviewer", sa.String(length=240), nullable=False),
        sa.Column("reviewer_key_id", sa.Integer(), nullable=True),
        sa.Column("reviewed_at", UTC_DATETIME, nullable=False),
        sa.Column("deposit", sa.Boolean(), nullable=False),
        sa.Column("boxes", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["report_id"], ["reports.id"], name=op.f("fk_report_reviews_report_id_reports")),
        sa.ForeignKeyConstraint(
            ["reviewer_key_id"], ["api_keys.id"], name=op.f("fk_report_reviews_reviewer_key_id_api_keys")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_report_reviews")),
    )
    op.create_index(op.f("ix_report_reviews_report_id"), "report_reviews", ["report_id"])
    op.create_index(op.f("ix_report_reviews_reviewed_at"), "report_reviews", ["reviewed_at"])
    op.create_table(
        "model_promotions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("file", sa.String(length=400), nullable=False),
        sa.Column("promoted_at", UTC_DATETIME, nullable=False),
        sa.Column("promoted_by", sa.String(length=240), nullable=False),
        sa.Column("previous_sha256", sa.String(length=64), nullable=True),
        sa.Column("card", sa.JSON(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_promotions")),
    )


def downgrade() -> None:
    """Drop the review loop's tables and flags (the reviews are lost)."""
    op.drop_table("model_promotions")
    op.drop_index(op.f("ix_report_reviews_reviewed_at"), table_name="report_reviews")
    op.drop_index(op.f("ix_report_reviews_report_id"), table_name="report_reviews")
    op.drop_table("report_reviews")
    with op.batch_alter_table("incidents") as batch:
        batch.drop_column("to_review")
    with op.batch_alter_table("reports") as batch:
        batch.drop_column("agent_says_deposit")

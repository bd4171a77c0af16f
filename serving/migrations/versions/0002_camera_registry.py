"""Camera registry: cameras (id, position, heading, description) and the keys tied to them.

A new table links keys to cameras rather than a new ``api_keys`` column: SQLite cannot add a foreign
key to an existing table without rebuilding it, and rebuilding a table that reports reference fails
with foreign keys on.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Timestamps are naive UTC in the database (serving.models.UTCDateTime adds the zone when reading).
UTC_DATETIME = sa.DateTime()


def upgrade() -> None:
    """Create ``cameras`` and ``camera_keys``."""
    op.create_table(
        "cameras",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("lon", sa.Float(), nullable=True),
        sa.Column("accuracy_m", sa.Float(), nullable=True),
        sa.Column("heading_deg", sa.Float(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("updated_at", UTC_DATETIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cameras")),
    )
    op.create_table(
        "camera_keys",
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("camera_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(["camera_id"], ["cameras.id"], name=op.f("fk_camera_keys_camera_id_cameras")),
        sa.ForeignKeyConstraint(["key_id"], ["api_keys.id"], name=op.f("fk_camera_keys_key_id_api_keys")),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_camera_keys")),
    )
    op.create_index(op.f("ix_camera_keys_camera_id"), "camera_keys", ["camera_id"])


def downgrade() -> None:
    """Drop the registry (reports keep their camera_id strings)."""
    op.drop_table("camera_keys")
    op.drop_table("cameras")

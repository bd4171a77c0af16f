"""The database's own id, which the photo store it uses records.

- ``installation``: one row, ``uid`` a random 32-digit hex id made here. A photo store keeps the
  id of the database whose reports refer to its photos (:func:`serving.storage.claim_photos`); a
  service or batch job whose database is another refuses to use it, since the store's sweep would
  delete every photo the other database keeps.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``installation`` with its one row."""
    table = op.create_table(
        "installation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uid", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_installation")),
    )
    now = datetime.now(UTC).replace(tzinfo=None)  # naive UTC, as serving.models.UTCDateTime stores it
    op.bulk_insert(table, [{"id": 1, "uid": uuid.uuid4().hex, "created_at": now}])


def downgrade() -> None:
    """Drop ``installation``."""
    op.drop_table("installation")

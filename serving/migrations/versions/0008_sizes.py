"""The size of a deposit: S, M or L (see serving.sizes).

- ``incidents.size``: a manager's; ``incidents.size_estimate``: the service's, from the photos.
  Existing incidents get their estimate from their reports' detections.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

M_FROM, L_FROM = 0.03, 0.15  # serving.sizes at the time of this revision


def upgrade() -> None:
    """Add the two columns and estimate the size of the incidents already there."""
    with op.batch_alter_table("incidents") as batch:
        batch.add_column(sa.Column("size", sa.String(length=1), nullable=True))
        batch.add_column(sa.Column("size_estimate", sa.String(length=1), nullable=True))
    connection = op.get_bind()
    largest: dict[int, float] = {}
    rows = connection.execute(sa.text("SELECT incident_id, detections FROM reports WHERE incident_id IS NOT NULL"))
    for incident_id, detections in rows:
        boxes = json.loads(detections) if isinstance(detections, str) else detections or []
        areas = [float(d.get("area_fraction") or 0.0) for d in boxes if d.get("deposit")]
        if areas:
            largest[incident_id] = max(largest.get(incident_id, 0.0), *areas)
    for incident_id, area in largest.items():
        size = "L" if area >= L_FROM else "M" if area >= M_FROM else "S"
        connection.execute(
            sa.text("UPDATE incidents SET size_estimate = :s WHERE id = :i"), {"s": size, "i": incident_id}
        )


def downgrade() -> None:
    """Drop them."""
    with op.batch_alter_table("incidents") as batch:
        batch.drop_column("size_estimate")
        batch.drop_column("size")

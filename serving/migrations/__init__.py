"""Alembic migrations of the service's database (``serving.db.migrate`` runs them at start-up)."""

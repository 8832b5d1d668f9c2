"""Alembic migrations of the event store; ``serving.store.migrate`` runs them to head."""

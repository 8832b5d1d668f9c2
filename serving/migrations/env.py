"""Alembic environment: migrations run on the connection the caller hands over
(``config.attributes["connection"]``), or on ``sqlalchemy.url`` when run from the alembic CLI."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from serving.tables import metadata

config = context.config
target_metadata = metadata


def run() -> None:
    conn = config.attributes.get("connection")
    if conn is not None:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = sa.create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as c:
        context.configure(connection=c, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run()

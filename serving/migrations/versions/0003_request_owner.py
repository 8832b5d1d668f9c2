"""exposures.api_key: the key that made each request, so feedback and judgments bind to it

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("exposures") as batch:  # batch mode: SQLite cannot ALTER in place
        batch.add_column(sa.Column("api_key", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("exposures") as batch:
        batch.drop_column("api_key")

"""judgments: people's pairwise ratings of candidates

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "judgments",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("idempotency_key", sa.String(128), nullable=False, unique=True),
        sa.Column("request_a", sa.String(36), sa.ForeignKey("exposures.request_id"), nullable=False),
        sa.Column("request_b", sa.String(36), sa.ForeignKey("exposures.request_id"), nullable=False),
        sa.Column("preference_choice", sa.String(1), nullable=False),
        sa.Column("identity_choice", sa.String(1), nullable=False),
        sa.Column("rater", sa.String(128)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("judgments")

"""request_errors: generations that failed (timeout, overload, error), per arm, for the guardrails

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "request_errors",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("experiment", sa.String(128), nullable=False),
        sa.Column("arm", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(256), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
    )
    op.create_index("ix_request_errors_experiment_arm", "request_errors", ["experiment", "arm"])


def downgrade() -> None:
    op.drop_table("request_errors")

"""exposures and feedback

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "exposures",
        sa.Column("request_id", sa.String(36), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("experiment", sa.String(128), nullable=False),
        sa.Column("arm", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(256), nullable=False),
        sa.Column("reference_item_id", sa.String(256)),
        sa.Column("reference_source", sa.String(512), nullable=False),
        sa.Column("method", sa.String(32), nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("seed", sa.BigInteger, nullable=False),
        sa.Column("chosen", sa.Integer, nullable=False),
        sa.Column("fallback", sa.String(64)),
        sa.Column("payload", sa.JSON, nullable=False),
    )
    op.create_index("ix_exposures_experiment_arm", "exposures", ["experiment", "arm"])
    op.create_index("ix_exposures_user", "exposures", ["user_id"])
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("idempotency_key", sa.String(128), nullable=False, unique=True),
        sa.Column("request_id", sa.String(36), sa.ForeignKey("exposures.request_id"), nullable=False),
        sa.Column("image_index", sa.Integer, nullable=False),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_feedback_request", "feedback", ["request_id"])


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_table("exposures")

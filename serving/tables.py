"""The event store's tables (SQLAlchemy Core). Migrations in ``serving/migrations`` create them;
this module is what the code reads and writes through, and a test checks the two agree."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

#: one row per served request, written in one transaction before the response leaves
exposures = sa.Table(
    "exposures", metadata,
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
    sa.Column("payload", sa.JSON, nullable=False),  # scores per candidate, history weights, timings
    sa.Column("api_key", sa.String(64)),  # the name of the key that made the request (feedback binds to it)
    sa.Index("ix_exposures_experiment_arm", "experiment", "arm"),
    sa.Index("ix_exposures_user", "user_id"),
)

#: clicks, likes and skips; the idempotency key makes a retried POST a no-op
feedback = sa.Table(
    "feedback", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("idempotency_key", sa.String(128), nullable=False, unique=True),
    sa.Column("request_id", sa.String(36), sa.ForeignKey("exposures.request_id"), nullable=False),
    sa.Column("image_index", sa.Integer, nullable=False),
    sa.Column("event", sa.String(16), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_feedback_request", "request_id"),
)

#: a person's pairwise judgment of two candidates of one request pair (two methods, same seed)
judgments = sa.Table(
    "judgments", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("idempotency_key", sa.String(128), nullable=False, unique=True),
    sa.Column("request_a", sa.String(36), sa.ForeignKey("exposures.request_id"), nullable=False),
    sa.Column("request_b", sa.String(36), sa.ForeignKey("exposures.request_id"), nullable=False),
    sa.Column("preference_choice", sa.String(1), nullable=False),  # "a" or "b": fits the user better
    sa.Column("identity_choice", sa.String(1), nullable=False),    # "a" or "b": keeps the reference better
    sa.Column("rater", sa.String(128)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

#: generations that failed after the request was accepted (timeout, overload, an error), per arm:
#: the guardrails' error rate (a request refused by its rate limit or a full queue is not one)
request_errors = sa.Table(
    "request_errors", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("experiment", sa.String(128), nullable=False),
    sa.Column("arm", sa.String(128), nullable=False),
    sa.Column("user_id", sa.String(256), nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("reason", sa.String(64), nullable=False),
    sa.Index("ix_request_errors_experiment_arm", "experiment", "arm"),
)

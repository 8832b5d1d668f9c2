"""Data contracts: the polars schemas every adapter produces and every consumer relies on.

A dataset directory holds ``items.parquet``, ``interactions.parquet`` and ``users.parquet``
(plus the images the items reference, relative to the directory). Extra columns are allowed and
carried along; the required ones below must exist with exactly these dtypes.
"""

from __future__ import annotations

import polars as pl

ITEMS_FILE = "items.parquet"
INTERACTIONS_FILE = "interactions.parquet"
USERS_FILE = "users.parquet"

#: item_id -> one row per catalog item; ``image`` is a path relative to the dataset directory;
#: ``attributes`` is a JSON object as text (free-form per dataset).
ITEMS_SCHEMA: dict[str, pl.DataType] = {
    "item_id": pl.String(),
    "title": pl.String(),
    "category": pl.String(),
    "identity_id": pl.String(),
    "image": pl.String(),
    "attributes": pl.String(),
}

#: One row per event. ``request_id`` groups the impressions shown together (a slate) and the
#: events they caused; ``position`` is the 0-based slot in that slate.
INTERACTIONS_SCHEMA: dict[str, pl.DataType] = {
    "user_id": pl.String(),
    "item_id": pl.String(),
    "timestamp": pl.Datetime("us"),
    "event_type": pl.String(),
    "request_id": pl.String(),
    "position": pl.Int32(),
}

USERS_SCHEMA: dict[str, pl.DataType] = {
    "user_id": pl.String(),
}

EVENT_TYPES = ("impression", "click", "like", "skip", "rating", "view")

#: Events that say the user wanted the item: what a history and a held-out target are made of.
POSITIVE_EVENTS = ("click", "like", "view")

SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "items": ITEMS_SCHEMA,
    "interactions": INTERACTIONS_SCHEMA,
    "users": USERS_SCHEMA,
}
FILES = {"items": ITEMS_FILE, "interactions": INTERACTIONS_FILE, "users": USERS_FILE}


def conform(df: pl.DataFrame, table: str) -> pl.DataFrame:
    """Cast the required columns to the contract's dtypes and put them first (adapters call this)."""
    schema = SCHEMAS[table]
    missing = [c for c in schema if c not in df.columns]
    if missing:
        raise ValueError(f"{table}: missing required columns {missing}")
    casts = [pl.col(c).cast(t) for c, t in schema.items()]
    extra = [c for c in df.columns if c not in schema]
    return df.with_columns(casts).select([*schema, *extra])

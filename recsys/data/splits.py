"""Time-based splits. Both work on lazy or eager frames, so the large world streams.

Random splits leak the future into training; every evaluation in this project splits by time.
"""

from __future__ import annotations

from datetime import datetime
from typing import TypeVar

import polars as pl

from recsys.data.schema import POSITIVE_EVENTS

F = TypeVar("F", pl.DataFrame, pl.LazyFrame)


def global_time_split(interactions: F, cut: datetime | float) -> tuple[F, F]:
    """Everything strictly before ``cut`` is train, the rest is test.

    ``cut`` is a datetime, or a quantile in (0, 1) of the timestamps (0.8 = last 20% is test).
    Rows are never split inside a request: a request belongs to the side of its first event.
    """
    if isinstance(cut, float):
        if not 0 < cut < 1:
            raise ValueError(f"a quantile cut must be in (0, 1), got {cut}")
        lf = interactions.lazy()
        cut = lf.select(pl.col("timestamp").quantile(cut, interpolation="lower")).collect().item()
        if cut is None:
            raise ValueError("cannot split an empty interaction log")
    req_start = pl.col("timestamp").min().over("request_id")
    train = interactions.filter(req_start < cut)
    test = interactions.filter(req_start >= cut)
    return train, test


def leave_last_out(interactions: F, n: int = 1, events: tuple[str, ...] = POSITIVE_EVENTS) -> tuple[F, F]:
    """Per user, the last ``n`` positive events are test; every earlier event is train.

    Users with at most ``n`` positive events stay wholly in train (nothing to learn from otherwise).
    Events at or after the first held-out timestamp of a user are dropped from train, so no
    training row comes from the held-out future.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    pos = interactions.filter(pl.col("event_type").is_in(events))
    ranked = pos.with_columns(
        pl.col("timestamp").rank("ordinal", descending=True).over("user_id").alias("_r"),
        pl.len().over("user_id").alias("_n"),
    )
    test = ranked.filter((pl.col("_r") <= n) & (pl.col("_n") > n)).drop("_r", "_n")
    first_test = test.group_by("user_id").agg(pl.col("timestamp").min().alias("_t0"))
    train = (
        interactions.join(first_test, on="user_id", how="left")
        .filter(pl.col("_t0").is_null() | (pl.col("timestamp") < pl.col("_t0")))
        .drop("_t0")
    )
    return train, test

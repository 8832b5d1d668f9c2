"""User histories as padded batches for the preference module.

A history is the user's positive events strictly before a cut time (per request), one row per
item (the strongest event wins: like > click > view; the latest time is kept), newest last, at
most ``max_len`` items.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl

from recsys.data.schema import POSITIVE_EVENTS

_EVENT_RANK = {"view": 0, "click": 1, "like": 2}


@dataclass
class HistoryBatch:
    user_ids: list[str]
    item_ids: list[list[str]]   # per row, oldest first
    positions: np.ndarray       # (B, N) row positions in the embedding table, -1 on padding
    mask: np.ndarray            # (B, N) bool
    event_types: list[list[str]]
    age_days: np.ndarray        # (B, N) age at the cut time, 0 on padding

    def lengths(self) -> np.ndarray:
        return self.mask.sum(1)

    def _rows(self) -> list[list[tuple[str, str, int, float]]]:
        """Each row's real slots as (item id, event type, position, age), oldest first."""
        return [list(zip(ids, evs, pos[: len(ids)].tolist(), ages[: len(ids)].tolist(), strict=True))
                for ids, evs, pos, ages in zip(self.item_ids, self.event_types, self.positions, self.age_days,
                                               strict=True)]

    def tail(self, k: int) -> HistoryBatch:
        """The newest ``k`` items of each row: what :func:`build_histories` with ``max_len=k`` gives,
        so one history built at the longest length serves every consumer (preference, ranker)."""
        if int(self.lengths().max(initial=0)) <= k:
            return self
        return _padded(self.user_ids, [r[-k:] for r in self._rows()])

    def remap(self, item_positions: dict[str, int]) -> HistoryBatch:
        """The same histories as rows of another embedding table (items it lacks are dropped,
        as :func:`build_histories` drops them)."""
        rows = self._rows()
        if all(item_positions.get(i) == p for r in rows for i, _, p, _ in r):
            return self
        return _padded(self.user_ids, [[(i, e, item_positions[i], a) for i, e, _, a in r if i in item_positions]
                                       for r in rows])

    def embeddings(self, vectors: np.ndarray) -> np.ndarray:
        """(B, N, D) rows of ``vectors`` at the history's positions (padding gets row 0; the mask
        says which slots are real)."""
        return vectors[np.where(self.mask, self.positions, 0)]


def _padded(user_ids: list[str], rows: list[list[tuple[str, str, int, float]]]) -> HistoryBatch:
    """Rows of (item id, event type, position, age) as a padded batch (at least one slot wide)."""
    b, n = len(rows), max(1, max((len(r) for r in rows), default=0))
    positions, age = np.full((b, n), -1, np.int64), np.zeros((b, n), np.float32)
    for row, r in enumerate(rows):
        positions[row, : len(r)] = [p for _, _, p, _ in r]
        age[row, : len(r)] = [a for _, _, _, a in r]
    return HistoryBatch(user_ids, [[i for i, _, _, _ in r] for r in rows], positions, positions >= 0,
                        [[e for _, e, _, _ in r] for r in rows], age)


def collapse_positives(interactions: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    """One row per (user, item): the strongest positive event and its latest time."""
    return (
        interactions.lazy().filter(pl.col("event_type").is_in(POSITIVE_EVENTS))
        .with_columns(pl.col("event_type").replace_strict(_EVENT_RANK, default=0, return_dtype=pl.Int8)
                      .alias("_rank"))
        .group_by("user_id", "item_id")
        .agg(pl.col("timestamp").max(), pl.col("_rank").max())
        .with_columns(pl.col("_rank").replace_strict({v: k for k, v in _EVENT_RANK.items()},
                                                     return_dtype=pl.String).alias("event_type"))
        .drop("_rank")
    )


def build_histories(interactions: pl.DataFrame | pl.LazyFrame, requests: pl.DataFrame,
                    item_positions: dict[str, int], max_len: int = 200,
                    events: tuple[str, ...] = POSITIVE_EVENTS) -> HistoryBatch:
    """``requests`` has ``user_id`` and ``as_of`` (datetime): one history row per request, built
    from ``events`` strictly before ``as_of``. Items missing from ``item_positions`` are dropped."""
    req = requests.select("user_id", "as_of").with_row_index("_row")
    ev = interactions.lazy().filter(pl.col("event_type").is_in(events)).join(
        req.lazy().select("user_id").unique(), on="user_id", how="semi")
    ev = ev.join(req.lazy(), on="user_id").filter(pl.col("timestamp") < pl.col("as_of"))
    ev = (
        ev.with_columns(pl.col("event_type").replace_strict(_EVENT_RANK, default=0, return_dtype=pl.Int8)
                        .alias("_rank"))
        .group_by("_row", "item_id").agg(pl.col("timestamp").max(), pl.col("_rank").max(), pl.col("as_of").first())
        .filter(pl.col("item_id").is_in(list(item_positions)))
        .sort("_row", "timestamp", "item_id")  # ties in time: a fixed order, so float sums repeat exactly
        .group_by("_row", maintain_order=True)
        .agg(pl.col("item_id").tail(max_len), pl.col("_rank").tail(max_len),
             ((pl.col("as_of") - pl.col("timestamp")).dt.total_microseconds() / 86_400e6).tail(max_len).alias("age"))
        .collect()
    )
    b = req.height
    n = max(1, int(ev["item_id"].list.len().max() or 0)) if ev.height else 1
    positions = np.full((b, n), -1, np.int64)
    age = np.zeros((b, n), np.float32)
    item_ids: list[list[str]] = [[] for _ in range(b)]
    events: list[list[str]] = [[] for _ in range(b)]
    inv_rank = {v: k for k, v in _EVENT_RANK.items()}
    for row, items, ranks, ages in ev.iter_rows():
        positions[row, : len(items)] = [item_positions[i] for i in items]
        age[row, : len(items)] = ages
        item_ids[row] = list(items)
        events[row] = [inv_rank[r] for r in ranks]
    return HistoryBatch(req["user_id"].to_list(), item_ids, positions, positions >= 0, events, age)


def requests_at(user_ids: list[str], as_of: list[datetime] | datetime) -> pl.DataFrame:
    if isinstance(as_of, datetime):
        as_of = [as_of] * len(user_ids)
    return pl.DataFrame({"user_id": user_ids, "as_of": as_of}).with_columns(pl.col("as_of").cast(pl.Datetime("us")))

"""Score any images for any users: catalog items, generated images, or uploads.

``score(user_ids, candidate_embeddings)`` takes image embeddings (the ranker's candidate space),
builds each user's history and skips as of a time (default: after the last logged event), and
returns calibrated click probabilities at the top slot. A user with no history (unknown, or new)
gets cold-start features and the result says so per user.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import torch

from recsys.data.schema import POSITIVE_EVENTS
from recsys.history import build_histories, requests_at
from recsys.ranking.din import DINRanker
from recsys.ranking.features import ItemTable, skips_of


@dataclass
class ScoreResult:
    probabilities: np.ndarray   # (U, C) click probability at the top slot
    logits: np.ndarray          # (U, C)
    cold_start: list[bool]      # per user: no usable history
    history_len: list[int]


class PreferenceScorer:
    def __init__(self, model: DINRanker, items: ItemTable, interactions: pl.DataFrame | pl.LazyFrame,
                 max_len: int = 100):
        self.model = model.eval()
        self.items = items
        self.interactions = interactions.lazy().collect() if isinstance(interactions, pl.LazyFrame) else interactions
        self.skips = skips_of(self.interactions)
        self.max_len = max_len
        self._end = self.interactions["timestamp"].max()

    def _user_stats(self, user_ids: list[str], as_of: datetime, hist_len: np.ndarray) -> np.ndarray:
        ev = self.interactions.filter(pl.col("timestamp") < as_of).group_by("user_id").agg(
            pl.col("event_type").is_in(POSITIVE_EVENTS).sum().alias("pos"),
            (pl.col("event_type") == "click").sum().alias("clk"),
            (pl.col("event_type") == "impression").sum().alias("imp"))
        got = pl.DataFrame({"user_id": user_ids}).join(ev, on="user_id", how="left", maintain_order="left").fill_null(0)
        ctr = (got["clk"].to_numpy() + 0.1) / (got["imp"].to_numpy() + 1.0)
        return np.stack([np.log1p(hist_len), np.log1p(got["pos"].to_numpy()), ctr], 1).astype(np.float32)

    def score(self, user_ids: list[str], candidates: np.ndarray, as_of: datetime | None = None,
              grad: bool = False) -> ScoreResult:
        """``candidates``: (C, D) scored for every user, or (U, C, D) per user."""
        cand = np.asarray(candidates, dtype=np.float32)
        dim = self.model.config.cand_dim
        if cand.ndim == 2:
            cand = np.broadcast_to(cand[None], (len(user_ids), *cand.shape))
        if cand.ndim != 3 or cand.shape[0] != len(user_ids) or cand.shape[2] != dim:
            raise ValueError(f"candidate embeddings must be (C, {dim}) or ({len(user_ids)}, C, {dim}), "
                             f"got {np.asarray(candidates).shape}")
        if not np.isfinite(cand).all():
            raise ValueError("candidate embeddings contain NaN or inf")
        if len(user_ids) == 0:
            return ScoreResult(np.zeros((0, cand.shape[1])), np.zeros((0, cand.shape[1])), [], [])
        if as_of is None:  # just after the last logged event: the whole log is the past
            as_of = self._end + timedelta(microseconds=1) if self._end is not None else datetime.now()
        reqs = requests_at(list(user_ids), as_of)
        pos = self.items.positions
        hist = build_histories(self.interactions, reqs, pos, self.max_len)
        skip = build_histories(self.skips, reqs, pos, self.max_len, events=("skip",))
        u, c = cand.shape[:2]
        rep = lambda a: np.repeat(a, c, axis=0)  # noqa: E731 - one row per (user, candidate)
        stats = self._user_stats(list(user_ids), as_of, hist.mask.sum(1))
        with torch.set_grad_enabled(grad):
            logits = self.model.forward_positions(
                torch.from_numpy(np.ascontiguousarray(cand.reshape(u * c, -1))), torch.from_numpy(rep(hist.positions)),
                torch.from_numpy(rep(hist.mask)), torch.from_numpy(self.items.image),
                torch.from_numpy(self.items.combined), torch.from_numpy(rep(stats)),
                torch.from_numpy(rep(skip.positions)), torch.from_numpy(rep(skip.mask))).reshape(u, c)
            prob = self.model.click_probability(logits)
        lens = hist.mask.sum(1).tolist()
        return ScoreResult(prob.detach().numpy(), logits.detach().numpy(), [n == 0 for n in lens], lens)


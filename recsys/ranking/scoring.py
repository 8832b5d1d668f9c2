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
from recsys.history import HistoryBatch, build_histories, requests_at
from recsys.ranking.din import DINRanker
from recsys.ranking.features import ItemTable, skips_of


@dataclass
class ScoreResult:
    probabilities: np.ndarray   # (U, C) click probability at the top slot
    logits: np.ndarray          # (U, C)
    cold_start: list[bool]      # per user: no usable history
    history_len: list[int]


@dataclass
class UserInputs:
    """The user side of the torch ranker for a batch of requests."""

    hist_pos: torch.Tensor    # (U, N) catalog positions, -1 on padding
    mask: torch.Tensor        # (U, N)
    stats: torch.Tensor       # (U, 3)
    skip_pos: torch.Tensor
    skip_mask: torch.Tensor

    def take(self, rows: torch.Tensor) -> UserInputs:
        return UserInputs(*(getattr(self, f)[rows.to(self.mask.device)]
                            for f in ("hist_pos", "mask", "stats", "skip_pos", "skip_mask")))

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> UserInputs:
        """On ``device``; the float features in ``dtype`` (positions and masks keep theirs)."""
        return UserInputs(self.hist_pos.to(device), self.mask.to(device), self.stats.to(device, dtype),
                          self.skip_pos.to(device), self.skip_mask.to(device))


class PreferenceScorer:
    def __init__(self, model: DINRanker, items: ItemTable, interactions: pl.DataFrame | pl.LazyFrame,
                 max_len: int = 100):
        self.model = model.eval()
        self.items = items
        self.interactions = interactions.lazy().collect() if isinstance(interactions, pl.LazyFrame) else interactions
        self.skips = skips_of(self.interactions)
        self.max_len = max_len
        self._end = self.interactions["timestamp"].max()
        self._image = torch.from_numpy(items.image)
        self._combined = torch.from_numpy(items.combined)
        self.device, self.dtype = torch.device("cpu"), torch.float32

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> PreferenceScorer:
        """The ranker and the catalog tables it reads on ``device`` in ``dtype``; inputs follow."""
        self.device, self.dtype = torch.device(device), dtype
        self.model.to(device=self.device, dtype=dtype)
        self._image = self._image.to(self.device, dtype)
        self._combined = self._combined.to(self.device, dtype)
        return self

    def _user_stats(self, reqs: pl.DataFrame, hist_len: np.ndarray) -> np.ndarray:
        """Per request: log history length, log past positives, smoothed past CTR (before as_of)."""
        r = reqs.with_row_index("_row")
        ev = (r.join(self.interactions.select("user_id", "timestamp", "event_type"), on="user_id")
              .filter(pl.col("timestamp") < pl.col("as_of")).group_by("_row").agg(
                  pl.col("event_type").is_in(POSITIVE_EVENTS).sum().alias("pos"),
                  (pl.col("event_type") == "click").sum().alias("clk"),
                  (pl.col("event_type") == "impression").sum().alias("imp")))
        got = r.select("_row").join(ev, on="_row", how="left", maintain_order="left").fill_null(0)
        ctr = (got["clk"].to_numpy() + 0.1) / (got["imp"].to_numpy() + 1.0)
        return np.stack([np.log1p(hist_len), np.log1p(got["pos"].to_numpy()), ctr], 1).astype(np.float32)

    def user_inputs(self, user_ids: list[str], as_of: datetime | list[datetime] | None = None,
                    history: HistoryBatch | None = None) -> UserInputs:
        """The ranker's user side for each request (history and skips strictly before ``as_of``;
        default: after the whole log). Build once, score many candidates (or train against it).
        ``history``: the requests' histories as the caller built them for the same ``as_of`` (the
        personalizer's, so a request's history is built once); the newest ``max_len`` are read."""
        if as_of is None:  # just after the last logged event: the whole log is the past
            as_of = self._end + timedelta(microseconds=1) if self._end is not None else datetime.now()
        reqs = requests_at(list(user_ids), as_of)
        pos = self.items.positions
        if history is not None and history.user_ids != list(user_ids):
            raise ValueError("the history batch is for other users than the ones scored")
        hist = (build_histories(self.interactions, reqs, pos, self.max_len) if history is None
                else history.remap(pos).tail(self.max_len))
        skip = build_histories(self.skips, reqs, pos, self.max_len, events=("skip",))
        stats = self._user_stats(reqs, hist.mask.sum(1))
        t = torch.from_numpy
        return UserInputs(t(hist.positions), t(hist.mask), t(stats), t(skip.positions), t(skip.mask)).to(self.device,
                                                                                                        self.dtype)

    def logits(self, inputs: UserInputs, cand: torch.Tensor) -> torch.Tensor:
        """(U, C) logits for ``cand`` (U, C, D) image embeddings; differentiable in ``cand``."""
        u, c = cand.shape[:2]
        cand = cand.to(self.device, self.dtype)
        rep = lambda a: a.repeat_interleave(c, 0)  # noqa: E731 - one row per (user, candidate)
        return self.model.forward_positions(
            cand.reshape(u * c, -1), rep(inputs.hist_pos), rep(inputs.mask), self._image, self._combined,
            rep(inputs.stats), rep(inputs.skip_pos), rep(inputs.skip_mask)).reshape(u, c)

    def score(self, user_ids: list[str], candidates: np.ndarray, as_of: datetime | list[datetime] | None = None,
              history: HistoryBatch | None = None) -> ScoreResult:
        """``candidates``: (C, D) scored for every user, or (U, C, D) per user; ``history`` as in
        :meth:`user_inputs`."""
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
        inputs = self.user_inputs(list(user_ids), as_of, history)
        with torch.no_grad():
            logits = self.logits(inputs, torch.from_numpy(np.ascontiguousarray(cand)))
            prob = self.model.click_probability(logits)
        lens = inputs.mask.sum(1).tolist()
        return ScoreResult(prob.float().cpu().numpy(), logits.float().cpu().numpy(), [n == 0 for n in lens], lens)

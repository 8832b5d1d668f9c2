"""Features for (user, candidate) pairs at a request time, with no leakage from the future.

Candidates are represented by their *image* embedding, so a generated image (no title, not in the
catalog) is scored exactly like a catalog item. History items are catalog items: their image
embeddings give the similarity features, and the torch ranker also sees their text.

Per request with history ``H`` (n x D, unit rows) and candidates ``C`` (c x D): ``S = C H^T``
holds every candidate-history cosine, ``G = H H^T`` the history Gram matrix, and the cosine between
a candidate and its retrieval-weighted preference embedding ``p = sum_i w_i h_i`` is
``(w . s) / sqrt(w^T G w)``: the weights come from :func:`recsys.preference.preference_weights`,
without materialising a (c, n, D) history copy per candidate.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import polars as pl
import torch

from recsys.data.schema import POSITIVE_EVENTS
from recsys.history import build_histories
from recsys.preference import PreferenceConfig, preference_weights

#: feature groups; the "uniform" variant replaces the retrieval-weighted group by a uniform one
COMMON = ["hist_len", "user_past_pos", "user_past_ctr", "item_past_imp", "item_past_ctr", "cat_past_ctr"]
RETRIEVAL = ["cos_pref", "max_sim", "cat_count", "cat_share", "cat_mean_sim", "cat_max_sim",
             "skip_cat_count", "skip_cat_mean_sim", "skip_cat_max_sim"]
UNIFORM = ["cos_mean", "mean_sim", "skip_mean_sim"]

#: slots at the top of a slate: an impression there without a click is negative feedback
SKIP_TOP_SLOTS = 3


def feature_names(variant: str) -> list[str]:
    if variant == "ragar":
        return RETRIEVAL + COMMON
    if variant == "uniform":
        return UNIFORM + COMMON
    raise ValueError(f"unknown feature variant {variant!r} (ragar or uniform)")


@dataclass
class ItemTable:
    """Catalog embeddings the features read: unit image vectors, categories, ids."""

    ids: np.ndarray
    image: np.ndarray       # (N, Di) unit rows
    combined: np.ndarray    # (N, D) unit rows (image + text): the history side of the torch ranker
    category: np.ndarray    # (N,) category index
    categories: list[str]

    @cached_property
    def positions(self) -> dict[str, int]:
        """Item id -> row; built once (the scorer reads it on every request)."""
        return {k: i for i, k in enumerate(self.ids)}


def impressions_with_labels(interactions: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """One row per impression: click / like labels and a graded relevance (0, 1 click, 2 like)."""
    lf = interactions.lazy()
    imp = lf.filter(pl.col("event_type") == "impression").select("user_id", "item_id", "request_id",
                                                                 "timestamp", "position")
    # events carry the slot they happened in: (request, item, position) identifies an impression
    # exactly, even in a log whose slates repeat an item
    pos = (lf.filter(pl.col("event_type").is_in(["click", "like"]))
           .group_by("request_id", "item_id", "position")
           .agg((pl.col("event_type") == "click").any().alias("click"),
                (pl.col("event_type") == "like").any().alias("like")))
    out = imp.join(pos, on=["request_id", "item_id", "position"], how="left").with_columns(
        pl.col("click").fill_null(False), pl.col("like").fill_null(False))
    return out.with_columns((pl.col("click").cast(pl.Int8) + pl.col("like").cast(pl.Int8)).alias("grade")
                            ).sort("timestamp", "request_id", "position").collect()


def past_stats(interactions: pl.DataFrame | pl.LazyFrame, samples: pl.DataFrame, items: ItemTable) -> pl.DataFrame:
    """User, item and category statistics strictly before each sample's timestamp (as-of joins)."""
    lf = interactions.lazy().select("user_id", "item_id", "timestamp", "event_type")
    ev = lf.with_columns((pl.col("event_type") == "impression").cast(pl.Int32).alias("imp"),
                         (pl.col("event_type") == "click").cast(pl.Int32).alias("clk"),
                         pl.col("event_type").is_in(POSITIVE_EVENTS).cast(pl.Int32).alias("pos"))
    cat = pl.DataFrame({"item_id": items.ids, "cat": items.category.astype(np.int32)}).lazy()
    key = samples.lazy().select("user_id", "item_id", "timestamp").with_row_index("_i").join(
        cat, on="item_id", how="left")

    def cum(by: str, frame: pl.LazyFrame, prefix: str) -> pl.LazyFrame:
        return (frame.sort(by, "timestamp").group_by(by, "timestamp", maintain_order=True)
                .agg(pl.col("imp", "clk", "pos").sum())
                .with_columns(pl.col("imp", "clk", "pos").cum_sum().over(by).name.prefix(prefix)))

    u = cum("user_id", ev, "u_").select("user_id", "timestamp", "u_imp", "u_clk", "u_pos")
    it = cum("item_id", ev, "i_").select("item_id", "timestamp", "i_imp", "i_clk")
    c = cum("cat", ev.join(cat, on="item_id", how="left"), "c_").select("cat", "timestamp", "c_imp", "c_clk")
    # both sides are sorted by timestamp within each `by` group (polars cannot verify that itself)
    asof = {"on": "timestamp", "strategy": "backward", "allow_exact_matches": False, "check_sortedness": False}
    out = (key.sort("timestamp")
           .join_asof(u, by="user_id", **asof)
           .join_asof(it, by="item_id", **asof)
           .join_asof(c, by="cat", **asof)
           .sort("_i").collect().fill_null(0))
    return pl.DataFrame({
        "user_past_pos": out["u_pos"].cast(pl.Float32),
        "user_past_ctr": ((out["u_clk"] + 0.1) / (out["u_imp"] + 1.0)).cast(pl.Float32),
        "item_past_imp": out["i_imp"].cast(pl.Float32),
        "item_past_ctr": ((out["i_clk"] + 1.0) / (out["i_imp"] + 10.0)).cast(pl.Float32),
        "cat_past_ctr": ((out["c_clk"] + 1.0) / (out["c_imp"] + 10.0)).cast(pl.Float32),
    })


@dataclass
class FeatureBatch:
    features: pl.DataFrame      # one row per sample, every feature of both variants
    hist_positions: np.ndarray  # (S_req, N) per request, -1 padded (for the torch ranker)
    hist_mask: np.ndarray
    request_row: np.ndarray     # (S,) which request row each sample belongs to
    skip_positions: np.ndarray  # (S_req, K) per request: skipped items, -1 padded
    skip_mask: np.ndarray


def skips_of(interactions: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """Negative feedback: impressions in the top slots that drew no click, as ``skip`` events."""
    imp = impressions_with_labels(interactions)
    return imp.filter((pl.col("position") < SKIP_TOP_SLOTS) & ~pl.col("click")).select(
        "user_id", "item_id", "timestamp", pl.lit("skip").alias("event_type"))


def _category_stats(s: torch.Tensor, same: torch.Tensor, prefix: str) -> dict[str, torch.Tensor]:
    n = same.sum(-1)
    neg = torch.tensor(-1.0)
    return {
        f"{prefix}cat_count": n.float(),
        f"{prefix}cat_mean_sim": torch.where(n > 0, (s * same).sum(-1) / n.clamp_min(1), neg),
        f"{prefix}cat_max_sim": torch.where(n > 0, s.masked_fill(~same, -2).amax(-1), neg),
    }


def skip_features(cand: torch.Tensor, cand_cat: torch.Tensor, skip: torch.Tensor, skip_cat: torch.Tensor,
                  mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Similarity of each candidate to what the user skipped: in its category, and overall."""
    s = torch.bmm(cand, skip.transpose(1, 2))
    m = mask[:, None, :].expand_as(s)
    same = (skip_cat[:, None, :] == cand_cat[:, :, None]) & m
    out = _category_stats(s, same, "skip_")
    out["skip_mean_sim"] = torch.where(m.any(-1), (s * m).sum(-1) / m.sum(-1).clamp_min(1), torch.tensor(-1.0))
    return out


def similarity_features(cand: torch.Tensor, cand_cat: torch.Tensor, hist: torch.Tensor, hist_cat: torch.Tensor,
                        mask: torch.Tensor, config: PreferenceConfig, event_weight: torch.Tensor | None = None,
                        age_days: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """``cand`` (B, C, D), ``hist`` (B, N, D) unit rows; categories as ints; returns (B, C) tensors."""
    s = torch.bmm(cand, hist.transpose(1, 2))                      # (B, C, N)
    g = torch.bmm(hist, hist.transpose(1, 2))                      # (B, N, N)
    m = mask[:, None, :].expand_as(s)
    nh = mask.sum(-1, keepdim=True).clamp_min(1)                   # (B, 1)
    ew = None if event_weight is None else event_weight[:, None, :]
    age = None if age_days is None else age_days[:, None, :]
    sim = s.masked_fill(~m, float("nan"))

    def cos_to(w: torch.Tensor) -> torch.Tensor:
        num = (w * s).sum(-1)
        den = torch.einsum("bcn,bnm,bcm->bc", w, g, w).clamp_min(1e-12).sqrt()
        return torch.where(w.sum(-1) > 0, num / den, torch.zeros_like(num))

    w_ragar = preference_weights(sim, m, config.model_copy(update={"method": "ragar"}), ew, age)
    w_unif = preference_weights(sim, m, config.model_copy(update={"method": "uniform"}))
    same = (hist_cat[:, None, :] == cand_cat[:, :, None]) & m      # (B, C, N)
    cat = _category_stats(s, same, "")
    return {
        "cos_pref": cos_to(w_ragar),
        "cos_mean": cos_to(w_unif),
        "max_sim": torch.where(m.any(-1), s.masked_fill(~m, -2).amax(-1), torch.tensor(-1.0)),
        "mean_sim": (s * m).sum(-1) / nh,
        **cat,
        "cat_share": cat["cat_count"] / nh,
        "hist_len": mask.sum(-1, keepdim=True).expand_as(cat["cat_count"]).float(),
    }


def build_features(samples: pl.DataFrame, interactions: pl.DataFrame | pl.LazyFrame, items: ItemTable,
                   config: PreferenceConfig | None = None, max_len: int = 100, chunk: int = 512,
                   progress: bool = False) -> FeatureBatch:
    """Features for every sample (user_id, item_id, request_id, timestamp); samples of a request
    share its history (events strictly before the request's first timestamp)."""
    from tqdm.auto import tqdm

    config = config or PreferenceConfig()
    reqs = samples.group_by("request_id", maintain_order=True).agg(pl.col("user_id").first(),
                                                                   pl.col("timestamp").min().alias("as_of"))
    req_row = samples.join(reqs.with_row_index("_r").select("request_id", "_r"), on="request_id",
                           how="left", maintain_order="left")["_r"].to_numpy()
    pos = items.positions
    hist = build_histories(interactions, reqs.select("user_id", "as_of"), pos, max_len=max_len)
    skip = build_histories(skips_of(interactions), reqs.select("user_id", "as_of"), pos, max_len=max_len,
                           events=("skip",))
    cand_pos = np.asarray([pos[i] for i in samples["item_id"]])
    ew = torch.ones(hist.mask.shape)
    for b, evs in enumerate(hist.event_types):
        for i, e in enumerate(evs):
            ew[b, i] = config.event_weights.get(e, 1.0)
    img = torch.from_numpy(items.image)
    cats = torch.from_numpy(items.category.astype(np.int64))
    order = np.argsort(req_row, kind="stable")
    feats = {k: np.zeros(len(samples), np.float32) for k in RETRIEVAL + UNIFORM + ["hist_len", "cat_share"]}
    c_max = int(np.bincount(req_row).max())
    for lo in tqdm(range(0, len(reqs), chunk), desc="features", disable=not progress):
        hi = min(len(reqs), lo + chunk)
        sel = order[(req_row[order] >= lo) & (req_row[order] < hi)]
        r = req_row[sel] - lo
        slot = np.zeros(len(sel), np.int64)
        counts = np.zeros(hi - lo, np.int64)
        for j, rr in enumerate(r):
            slot[j] = counts[rr]
            counts[rr] += 1
        cp = np.full((hi - lo, c_max), 0, np.int64)
        cp[r, slot] = cand_pos[sel]
        hp = hist.positions[lo:hi]
        hm = torch.from_numpy(hist.mask[lo:hi])
        hsafe = torch.from_numpy(np.where(hp >= 0, hp, 0))
        out = similarity_features(img[torch.from_numpy(cp)], cats[torch.from_numpy(cp)], img[hsafe], cats[hsafe],
                                  hm, config, ew[lo:hi], torch.from_numpy(hist.age_days[lo:hi]))
        sp = skip.positions[lo:hi]
        ssafe = torch.from_numpy(np.where(sp >= 0, sp, 0))
        out |= skip_features(img[torch.from_numpy(cp)], cats[torch.from_numpy(cp)], img[ssafe], cats[ssafe],
                             torch.from_numpy(skip.mask[lo:hi]))
        for k, v in out.items():
            feats[k][sel] = v.numpy()[r, slot]
    stats = past_stats(interactions, samples, items)
    df = pl.DataFrame(feats).hstack(stats)
    return FeatureBatch(df, hist.positions, hist.mask, req_row, skip.positions, skip.mask)

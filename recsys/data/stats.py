"""Dataset statistics: counts and the per-category / per-user distributions a person checks first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from recsys.data.io import read_table, scan_interactions
from recsys.data.schema import POSITIVE_EVENTS


def dataset_stats(root: str | Path) -> dict:
    """Computed lazily over the interaction log, so it works on the large world."""
    items = read_table(root, "items")
    lf = scan_interactions(root)
    events = lf.group_by("event_type").len().collect().sort("event_type")
    per_user = lf.group_by("user_id").agg(
        pl.len().alias("events"),
        pl.col("event_type").is_in(POSITIVE_EVENTS).sum().alias("positives"),
    ).collect()
    per_cat_inter = (
        lf.filter(pl.col("event_type").is_in(POSITIVE_EVENTS)).select("item_id")
        .join(items.lazy().select("item_id", "category"), on="item_id").group_by("category").len()
        .collect().rename({"len": "positives"})
    )
    per_cat = items.group_by("category").agg(pl.len().alias("items"), pl.col("identity_id").n_unique()
                                             .alias("identities"))
    per_cat = per_cat.join(per_cat_inter, on="category", how="left").fill_null(0).sort("category")
    span = lf.select(pl.col("timestamp").min().alias("first"), pl.col("timestamp").max().alias("last")).collect()
    imp = events.filter(pl.col("event_type") == "impression")["len"].sum()
    clicks = events.filter(pl.col("event_type") == "click")["len"].sum()

    def q(s: pl.Series) -> dict:
        a = s.to_numpy()
        return {k: float(np.quantile(a, p)) for k, p in (("p10", 0.1), ("p50", 0.5), ("p90", 0.9))} | {
            "mean": float(a.mean()), "max": float(a.max())}

    return {
        "items": items.height,
        "identities": items["identity_id"].n_unique(),
        "categories": items["category"].n_unique(),
        "users": per_user.height,
        "interactions": int(events["len"].sum()),
        "events": dict(zip(events["event_type"].to_list(), events["len"].to_list(), strict=True)),
        "ctr": float(clicks / imp) if imp else None,
        "first": str(span["first"][0]),
        "last": str(span["last"][0]),
        "events_per_user": q(per_user["events"]),
        "positives_per_user": q(per_user["positives"]),
        "per_category": per_cat.to_dicts(),
        "_positives_hist": per_user["positives"].to_list(),
    }

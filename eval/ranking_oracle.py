"""The rankers against the world's oracle: do they order unseen views of held-out items as the
simulated users' utilities do (Spearman per ranker)."""

from __future__ import annotations

from pathlib import Path

from ragar.config import RagarConfig


def oracle_spearman(cfg: RagarConfig, data: Path, rankers, rd, items, image_encoder) -> dict:
    """Score a *different view* of each held-out item than the ranker saw, and compare with the
    oracle utility of that item for that user (``image_encoder``: the one the ranker was trained with)."""
    import numpy as np
    import polars as pl

    from ragar.encoders.catalog import embed_catalog
    from recsys.ranking.pipeline import subset, utility_spearman
    from recsys.world.oracle import World

    world = World(data)
    rng = np.random.default_rng(cfg.ranker.seed)
    n = min(cfg.ranker.spearman_pairs, rd.test.samples.height)
    rows = np.sort(rng.choice(rd.test.samples.height, n, replace=False))
    sp = subset(rd.test, rows)
    views = world.views.filter((pl.col("kind") == "view") & pl.col("view_id").str.ends_with("-v1"))
    other = views.select(pl.col("view_id").alias("item_id"), "image", pl.col("item_id").alias("of"))
    emb = embed_catalog(data, image_encoder, None, items=other.with_columns(pl.lit("").alias("title")), progress=False)
    vec = dict(zip(other["of"].to_list(), emb.image, strict=True))
    cand = np.stack([vec[i] for i in sp.samples["item_id"]])
    util = world.item_utility(sp.samples["user_id"].to_numpy(), sp.samples["item_id"].to_numpy())
    return {k: utility_spearman(m, sp, cand, util, items) for k, m in rankers.din.items()}

"""Offline evaluation of the rankers: NDCG/HR/AUC/GAUC on the held-out window against the cosine
baseline (paired bootstrap intervals), HR per category, calibration, and the rankers against the
world's oracle (do they order unseen views of held-out items as the simulated users' utilities do).
The metrics are :mod:`eval.metrics.ranking`'s, the ones the replay and the preference evaluation use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import torch

from eval.metrics.intervals import paired_bootstrap_ci
from eval.metrics.ranking import auc, gauc, hit_rate_at_k, ndcg_per_group
from ragar.config import RagarConfig
from recsys.ranking.din import DINRanker
from recsys.ranking.features import ItemTable
from recsys.ranking.pipeline import Rankers, RankingData, Split, din_logits, lgbm_features, subset


def score_split(rankers: Rankers, split: Split, items: ItemTable) -> dict[str, np.ndarray]:
    f = split.features
    scores = {
        "popularity": (f["item_past_ctr"] * (f["item_past_imp"] + 10.0)).to_numpy(),
        "cosine": f["cos_pref"].to_numpy(),
        "cosine-uniform": f["cos_mean"].to_numpy(),
    }
    for variant, m in rankers.lgbm.items():
        scores[f"lightgbm{'' if variant == 'ragar' else '-uniform'}"] = m.predict(lgbm_features(split, variant))
    for variant, m in rankers.din.items():
        logits = din_logits(m, split, split.cand_image(items), items)
        with torch.no_grad():
            prob = m.click_probability(torch.from_numpy(logits)).numpy()
        scores[f"din{'' if variant == 'ragar' else '-uniform'}"] = prob
    return scores


def evaluate_rankers(rankers: Rankers, data: RankingData, items: ItemTable, k: int = 10) -> dict:
    test, hr = data.test, data.hr
    s_test = score_split(rankers, test, items)
    s_hr = score_split(rankers, hr, items)
    g, grade, click = (test.samples[c].to_numpy() for c in ("request_id", "grade", "click"))
    hg, hy = hr.samples["request_id"].to_numpy(), hr.samples["click"].to_numpy()
    rows = []
    base = ndcg_per_group(s_test["cosine"], grade, g, k)
    for name in s_test:
        per = ndcg_per_group(s_test[name], grade, g, k)
        d, lo, hi = paired_bootstrap_ci(per, base)
        rows.append({"model": name, f"ndcg@{k}": float(per.mean()), f"ndcg@{k}_vs_cosine": d,
                     "vs_cosine_ci95_lo": lo, "vs_cosine_ci95_hi": hi,
                     f"hr@{k}": hit_rate_at_k(s_hr[name], hy, hg, k), "auc": auc(s_test[name], click),
                     "gauc": gauc(s_test[name], click, g)})
    # per category of the held-out item (HR@10 on sampled candidates)
    cat_of = dict(zip(items.ids, np.asarray(items.categories)[items.category], strict=True))
    target_cat = hr.samples.filter(pl.col("click") == 1).select("request_id", pl.col("item_id")
                                                                 .replace_strict(cat_of).alias("cat"))
    cats = hr.samples.join(target_cat, on="request_id", how="left", maintain_order="left")["cat"].to_numpy()
    per_cat = []
    for c in sorted(set(cats)):
        m = cats == c
        per_cat.append({"category": c, **{name: hit_rate_at_k(s_hr[name][m], hy[m], hg[m], k) for name in s_hr}})
    # calibration of the torch ranker on the test window, at the logged positions
    m = rankers.din["ragar"]
    logits = din_logits(m, test, test.cand_image(items), items)
    with torch.no_grad():
        p = m.click_probability(torch.from_numpy(logits), torch.from_numpy(test.samples["position"].to_numpy())).numpy()
    bins = np.clip((p * 10).astype(int), 0, 9)
    ece = sum(abs(p[bins == b].mean() - click[bins == b].mean()) * (bins == b).mean() for b in np.unique(bins))
    calib = {"mean_predicted": float(p.mean()), "observed_ctr": float(click.mean()), "ece": float(ece)}
    return {"rows": rows, "per_category": per_cat, "calibration": calib, "k": k}


def utility_spearman(model: DINRanker, split: Split, cand_image: np.ndarray, utility: np.ndarray,
                     items: ItemTable) -> float:
    """Spearman between the ranker's score of each image and the oracle utility of that image for
    its user, over the rows of ``split`` (``cand_image`` row-aligned with it)."""
    from scipy.stats import spearmanr

    logits = din_logits(model, split, cand_image.astype(np.float32), items)
    return float(spearmanr(logits, utility).statistic)


def oracle_spearman(cfg: RagarConfig, data: Path, rankers, rd, items, image_encoder) -> dict:
    """Score a *different view* of each held-out item than the ranker saw, and compare with the
    oracle utility of that item for that user (``image_encoder``: the one the ranker was trained with)."""
    from ragar.encoders.catalog import embed_catalog
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

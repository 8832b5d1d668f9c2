"""Measure preference methods on the world, where the oracle says what each user really wants.

For each (user, reference) pair, built from the user's last positive event (leave-last-out): the
reference is another catalog item of the held-out item's category (the thing to render), and the
history is everything the user liked or clicked before. Two measures, same pairs for every method:

- ``ideal_cos``: cosine between the preference embedding and the user's ideal for that category
  (the mean embedding of the catalog items of that category with the highest oracle utility);
- ``hr@k`` / ``ndcg@k``: the preference embedding queries the item index (history items
  excluded); a hit is the held-out item in the top k.

Means carry 95% bootstrap intervals over pairs (``_lo`` / ``_hi``, :mod:`eval.metrics.intervals`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from eval.metrics.intervals import bootstrap_ci
from eval.metrics.ranking import hit_and_ndcg
from recsys.data.splits import leave_last_out
from recsys.history import build_histories, requests_at
from recsys.index import ItemIndex
from recsys.preference import PreferenceConfig, weigh_histories
from recsys.world.oracle import World, user_index


@dataclass
class PreferencePairs:
    user_ids: list[str]
    target_ids: np.ndarray
    reference_pos: np.ndarray
    categories: np.ndarray
    history: object  # HistoryBatch


def make_pairs(world: World, ids: np.ndarray, max_pairs: int, seed: int = 0, held_out: int = 3
               ) -> PreferencePairs:
    """One pair per held-out positive (the last ``held_out`` of each user); each pair's history is
    everything strictly before its own held-out event."""
    _, test = leave_last_out(world.interactions(), n=held_out)
    test = test.collect().sort("user_id", "timestamp")
    rng = np.random.default_rng(seed)
    if test.height > max_pairs:
        test = test[np.sort(rng.choice(test.height, max_pairs, replace=False)).tolist()]
    items = world.items
    pos = {k: i for i, k in enumerate(ids)}
    cat_of = dict(zip(items["item_id"], items["category"], strict=True))
    by_cat: dict[str, list[int]] = {}
    for i, k in enumerate(ids):
        by_cat.setdefault(cat_of[k], []).append(i)
    targets = test["item_id"].to_numpy()
    cats = np.asarray([cat_of[t] for t in targets])
    refs = []
    for t, c in zip(targets, cats, strict=True):
        pool = [p for p in by_cat[c] if p != pos[t]]
        refs.append(pool[int(rng.integers(len(pool)))])
    hist = build_histories(world.interactions(), requests_at(test["user_id"].to_list(), test["timestamp"].to_list()),
                           pos)
    return PreferencePairs(test["user_id"].to_list(), targets, np.asarray(refs), cats, hist)


def ideal_vectors(world: World, ids: np.ndarray, vectors: np.ndarray, user_ids, categories) -> np.ndarray:
    items = world.items.select("item_id", "category", "palette", "pattern", "finish")
    items = pl.DataFrame({"item_id": ids}).join(items, on="item_id", how="left", maintain_order="left")
    o = world.oracle
    uidx = user_index(user_ids)
    out = np.zeros((len(uidx), vectors.shape[1]), np.float32)
    cat_arr = items["category"].to_numpy()
    pal, pat, fin = (items[c].to_numpy().astype(np.int64) for c in ("palette", "pattern", "finish"))
    for c in np.unique(categories):
        rows = np.flatnonzero(np.asarray(categories) == c)
        cols = np.flatnonzero(cat_arr == c)
        ci = o.category_index([c])[0]
        util = o.utility(uidx[rows, None], ci, pal[cols][None], pat[cols][None], fin[cols][None])
        best = util >= util.max(1, keepdims=True) - 1e-6
        mean = (best.astype(np.float32) @ vectors[cols]) / best.sum(1, keepdims=True)
        out[rows] = mean / np.linalg.norm(mean, axis=1, keepdims=True)
    return out


def evaluate_preference(world: World, ids: np.ndarray, vectors: np.ndarray, methods: list[str],
                        config: PreferenceConfig | None = None, k: int = 10, max_pairs: int = 2000,
                        seed: int = 0, index: ItemIndex | None = None) -> dict:
    config = config or PreferenceConfig()
    pairs = make_pairs(world, ids, max_pairs, seed)
    index = index or ItemIndex.build(ids, vectors)
    h = pairs.history
    ref = torch.from_numpy(vectors[pairs.reference_pos])
    ideal = ideal_vectors(world, ids, vectors, pairs.user_ids, pairs.categories)
    target_pos = np.asarray([index.position(t) for t in pairs.target_ids])
    rows, per_pair = [], {}
    for method in methods:
        res = weigh_histories(h, vectors, ref, config, method)
        p = torch.nn.functional.normalize(res.embedding, dim=-1).numpy()
        cos = (p * ideal).sum(1)
        found = index.search(p, k + h.mask.shape[1]).positions
        hit = np.zeros(len(p))
        ndcg = np.zeros(len(p))
        for i in range(len(p)):
            seen = set(h.positions[i][h.mask[i]].tolist())
            ranked = [x for x in found[i] if x >= 0 and x not in seen][:k]
            hit[i], ndcg[i] = hit_and_ndcg(ranked, {target_pos[i]}, k)
        per_pair[method] = {"ideal_cos": cos, f"hr@{k}": hit, f"ndcg@{k}": ndcg}
        (cm, clo, chi), (hm, hlo, hhi) = bootstrap_ci(cos, seed=seed), bootstrap_ci(hit, seed=seed)
        rows.append({
            "method": method, "pairs": len(p), "ideal_cos": cm, "ideal_cos_lo": clo, "ideal_cos_hi": chi,
            f"hr@{k}": hm, f"hr@{k}_lo": hlo, f"hr@{k}_hi": hhi, f"ndcg@{k}": float(ndcg.mean()),
            "fallbacks": sum(f is not None for f in res.fallback),
        })
        if method == methods[0]:
            example = {"weights": res.weights.numpy(), "similarity": res.similarity.numpy()}
    return {"rows": rows, "per_pair": per_pair, "pairs": pairs, "example": example, "k": k}

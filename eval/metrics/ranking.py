"""Ranking metrics over grouped scores (keys like ``ndcg@10``, RecBole style): the one module the
ranker evaluation, the replay and the preference evaluation share.

Ties are broken against the model everywhere: a positive tied with a negative ranks after it, so a
constant scorer earns nothing (NDCG sorts ties lower-relevance first; HR counts tied negatives as
ahead). ``hit_and_ndcg`` takes an already ranked list, so it has no ties to break."""

from __future__ import annotations

import numpy as np


def _groups(group: np.ndarray):
    order = np.argsort(group, kind="stable")
    g = group[order]
    cuts = np.flatnonzero(g[1:] != g[:-1]) + 1
    return np.split(order, cuts)


def ndcg_at_k(scores: np.ndarray, labels: np.ndarray, group: np.ndarray, k: int = 10) -> float:
    """Mean NDCG@k over groups with at least one positive label (graded labels allowed).
    Ties in score are broken against the model (positives last), so a constant scorer gets no credit."""
    vals = ndcg_per_group(scores, labels, group, k)
    return float(np.mean(vals)) if len(vals) else float("nan")


def ndcg_per_group(scores: np.ndarray, labels: np.ndarray, group: np.ndarray, k: int = 10) -> np.ndarray:
    """NDCG@k of each group with a positive, in a fixed group order (for paired comparisons)."""
    vals = []
    for idx in _groups(np.asarray(group)):
        rel = np.asarray(labels)[idx].astype(float)
        if rel.max() <= 0:
            continue
        s = np.asarray(scores)[idx]
        order = np.lexsort((rel, -s))[:k]  # by score desc, ties: lower relevance first
        gains = (2 ** rel[order] - 1) / np.log2(np.arange(2, len(order) + 2))
        ideal = np.sort(rel)[::-1][:k]
        idcg = ((2 ** ideal - 1) / np.log2(np.arange(2, len(ideal) + 2))).sum()
        vals.append(gains.sum() / idcg)
    return np.asarray(vals)


def hit_rate_at_k(scores: np.ndarray, labels: np.ndarray, group: np.ndarray, k: int = 10) -> float:
    """Share of groups whose positive ranks in the top k (ties count against the model)."""
    vals = []
    for idx in _groups(np.asarray(group)):
        rel = np.asarray(labels)[idx]
        if rel.max() <= 0:
            continue
        s = np.asarray(scores)[idx]
        best_pos = s[rel > 0].max()
        rank = (s > best_pos).sum() + (s[rel <= 0] == best_pos).sum()
        vals.append(float(rank < k))
    return float(np.mean(vals)) if vals else float("nan")


def hit_and_ndcg(ranked, relevant, k: int) -> tuple[float, float]:
    """HR@k and NDCG@k of one ranked list against a set of relevant ids (binary relevance; the
    ideal DCG puts min(|relevant|, k) hits first). The one definition the replay and the
    preference evaluation both use, so their ``hr@k`` / ``ndcg@k`` mean the same thing."""
    hits = np.asarray([i in relevant for i in list(ranked)[:k]], dtype=float)
    dcg = (hits / np.log2(np.arange(2, len(hits) + 2))).sum()
    ideal = (1 / np.log2(np.arange(2, min(len(relevant), k) + 2))).sum()
    return float(hits.any()), float(dcg / ideal) if ideal > 0 else 0.0


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    # imported here: sklearn (with the scipy and pandas it pulls in) costs ~2 s of start-up, which
    # every ``ragar`` command paid through the CLI's imports whether it computed an AUC or not
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels) > 0
    if labels.all() or not labels.any():
        return float("nan")
    return float(roc_auc_score(labels, scores))


def gauc(scores: np.ndarray, labels: np.ndarray, group: np.ndarray) -> float:
    """Impression-weighted mean of per-group AUC over groups with both classes.

    Each group's AUC is the Mann-Whitney statistic over average ranks (tied scores count a half,
    as ``roc_auc_score`` counts them), all groups at once: one sort instead of one sklearn call per
    request (tens of thousands on the demo world's test window)."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels) > 0
    if len(s) == 0:
        return float("nan")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or inf")
    _, g = np.unique(np.asarray(group), return_inverse=True)
    order = np.lexsort((s, g))
    gs, ss, ys = g[order], s[order], y[order]
    pos = np.arange(len(s))
    new_group = np.r_[True, gs[1:] != gs[:-1]]
    new_tie = new_group | np.r_[True, ss[1:] != ss[:-1]]
    first = pos[new_tie]
    last = np.r_[first[1:], len(s)] - 1
    group_start = np.maximum.accumulate(np.where(new_group, pos, 0))
    rank = ((first + last) / 2.0)[np.cumsum(new_tie) - 1] - group_start + 1.0  # average rank within the group
    n = np.bincount(gs)
    n_pos = np.bincount(gs, weights=ys.astype(np.float64))
    rank_pos = np.bincount(gs, weights=rank * ys)
    ok = (n_pos > 0) & (n_pos < n)
    if not ok.any():
        return float("nan")
    n_neg = n[ok] - n_pos[ok]
    per_group = (rank_pos[ok] - n_pos[ok] * (n_pos[ok] + 1) / 2.0) / (n_pos[ok] * n_neg)
    return float((per_group * n[ok]).sum() / n[ok].sum())

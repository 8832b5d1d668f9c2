"""Rankers: LightGBM LambdaRank training time on 1M impressions (vs a pointwise GBDT on the same
rows), and scoring rows/s of both rankers against the cosine baseline, all from embeddings."""

from __future__ import annotations

import time

import lightgbm as lgb
import numpy as np
import torch

from benchmarks.harness import Row, timeit
from recsys.preference import PreferenceConfig
from recsys.ranking.din import DINConfig, DINRanker
from recsys.ranking.features import feature_names, similarity_features, skip_features
from recsys.ranking.lgbm import DEFAULT_PARAMS, LambdaRankRanker


def _train_rows(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    names = feature_names("ragar")
    x = rng.normal(size=(n, len(names))).astype(np.float32)
    util = x[:, 0] + 0.5 * x[:, 4] + rng.normal(size=n)
    y = (util > 1.5).astype(int) + (util > 2.5).astype(int)
    group = np.repeat(np.arange(n // 10), 10)
    return names, x, y, group


def run(quick: bool = False) -> list[Row]:
    n = 100_000 if quick else 1_000_000
    names, x, y, group = _train_rows(n)
    params = {"num_threads": 0, "verbose": -1}
    t = time.perf_counter()
    LambdaRankRanker(names, params, num_boost_round=100).fit(x, y, group, x[:20_000], y[:20_000], group[:20_000],
                                                             early_stopping=1000)
    t_rank = time.perf_counter() - t
    t = time.perf_counter()
    lgb.train({**DEFAULT_PARAMS, **params, "objective": "binary", "metric": "auc"}, lgb.Dataset(x, (y > 0)), 100)
    t_bin = time.perf_counter() - t
    rows = [Row("ranking", f"lightgbm lambdarank train s ({n // 1000}k impressions, 100 rounds)", t_rank, "s",
                "pointwise binary GBDT, same rows", t_bin, higher_is_better=False)]
    # scoring from embeddings: B users x C candidates with N-item histories
    b, c, nh, di, dh = (64, 10, 50, 1280, 1664) if quick else (256, 10, 50, 1280, 1664)
    g = torch.Generator().manual_seed(0)
    unit = lambda *s: torch.nn.functional.normalize(torch.randn(*s, generator=g), dim=-1)  # noqa: E731
    cand, hist, skip = unit(b, c, di), unit(b, nh, di), unit(b, nh, di)
    cat_c, cat_h = torch.randint(0, 8, (b, c), generator=g), torch.randint(0, 8, (b, nh), generator=g)
    mask = torch.ones(b, nh, dtype=torch.bool)
    cfg = PreferenceConfig()
    model = LambdaRankRanker(names, params, num_boost_round=50).fit(x[:50_000], y[:50_000], group[:50_000],
                                                                    x[:5000], y[:5000], group[:5000])

    def cosine():
        return similarity_features(cand, cat_c, hist, cat_h, mask, cfg)["cos_pref"]

    def lightgbm():
        f = similarity_features(cand, cat_c, hist, cat_h, mask, cfg) | skip_features(cand, cat_c, skip, cat_h, mask)
        cols = [f.get(k, torch.zeros(b, c)).reshape(-1).numpy() for k in names]
        return model.predict(np.stack(cols, 1))

    din = DINRanker(DINConfig(di, dh, 3)).eval()
    table_i, table_c = unit(4096, di), unit(4096, dh)
    pos = torch.randint(0, 4096, (b * c, nh), generator=g)
    st = torch.zeros(b * c, 3)
    flat = cand.reshape(b * c, di)

    def din_score():
        with torch.no_grad():
            return din.forward_positions(flat, pos, mask.repeat_interleave(c, 0), table_i, table_c, st, pos,
                                         mask.repeat_interleave(c, 0))

    t_cos = timeit(cosine)
    rows += [Row("ranking", "lightgbm scoring rows/s (features + predict)", b * c / timeit(lightgbm), "rows/s",
                 "cosine(preference, item)", b * c / t_cos),
             Row("ranking", "din scoring rows/s", b * c / timeit(din_score), "rows/s", "cosine(preference, item)",
                 b * c / t_cos)]
    return rows

"""Preference embeddings per second: the batched torch module against the naive per-user loop."""

from __future__ import annotations

import torch

from benchmarks.harness import Row, timeit
from recsys.preference import PreferenceConfig, RetrievalPreference, naive_preference


def run(quick: bool = False) -> list[Row]:
    users, hist, dim = (128, 200, 512) if quick else (1024, 200, 512)
    g = torch.Generator().manual_seed(0)
    h = torch.randn(users, hist, dim, generator=g)
    r = torch.randn(users, dim, generator=g)
    cfg = PreferenceConfig(top_k=10, temperature=0.05)
    mod = RetrievalPreference(cfg)
    t_batched = timeit(lambda: mod(h, r), repeat=3)
    hn, rn = h.numpy(), r.numpy()
    n_naive = users if not quick else 64
    t_naive = timeit(lambda: [naive_preference(hn[i], rn[i], cfg) for i in range(n_naive)], repeat=1, warmup=0)
    return [Row("preference", f"users/s ({users}x{hist}x{dim})", users / t_batched, "users/s",
                "naive per-user loop", n_naive / t_naive)]

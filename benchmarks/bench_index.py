"""faiss on 1M items: build time, queries/s and recall@10 against exact (flat) search."""

from __future__ import annotations

import time

import numpy as np

from benchmarks.harness import Row
from recsys.index import ItemIndex


def embedding_like(n: int, d: int, seed: int = 0, latent: int = 32) -> np.ndarray:
    """Vectors with a low intrinsic dimension (a 32-d Gaussian latent mapped to ``d`` dims, plus
    noise), as learned embeddings are. Isotropic noise, or tight clusters of near-equidistant
    points, make exact top-10 a coin toss that only exhaustive scans win."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(12345).normal(size=(latent, d)).astype(np.float32)
    z = rng.normal(size=(n, latent)).astype(np.float32)
    return z @ basis + 0.5 * rng.normal(size=(n, d)).astype(np.float32)


def run(quick: bool = False) -> list[Row]:
    n, d, nq = (100_000, 128, 500) if quick else (1_000_000, 128, 1000)
    x = embedding_like(n, d)
    q = embedding_like(nq, d, seed=1)
    ids = np.arange(n).astype(str)
    t = time.perf_counter()
    exact = ItemIndex.build(ids, x, exact_below=n + 1)
    t_flat_build = time.perf_counter() - t
    t = time.perf_counter()
    truth = exact.search(q, 10)
    t_flat = time.perf_counter() - t
    rows = []
    for kind, params in (("ivf", {"ivf_nlist": 4096, "ivf_nprobe": 32}), ("hnsw", {"hnsw_m": 16})):
        t = time.perf_counter()
        idx = ItemIndex.build(ids, x, exact_below=1, kind=kind, **params)
        build = time.perf_counter() - t
        t = time.perf_counter()
        got = idx.search(q, 10)
        t_q = time.perf_counter() - t
        rec = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got.positions, truth.positions, strict=True)])
        if kind == "hnsw":  # the same graph searched wider: the recall / speed trade-off
            idx.index.hnsw.efSearch = 512
            t = time.perf_counter()
            wide = idx.search(q, 10)
            t_w = time.perf_counter() - t
            rec_w = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(wide.positions, truth.positions, strict=True)])
            rows += [Row("index", "hnsw efSearch=512 queries/s", nq / t_w, "q/s", "flat (exact) search", nq / t_flat),
                     Row("index", "hnsw efSearch=512 recall@10", float(rec_w), "", "exact", 1.0)]
        rows += [
            Row("index", f"{kind} build s ({n // 1000}k x {d})", build, "s", "flat build", t_flat_build,
                higher_is_better=False),
            Row("index", f"{kind} queries/s", nq / t_q, "q/s", "flat (exact) search", nq / t_flat),
            Row("index", f"{kind} recall@10", float(rec), "", "exact", 1.0),
        ]
    return rows

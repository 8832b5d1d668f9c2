"""Finer-Personalization Rank gallery: queries/s of the faiss gallery (HNSW past 50k images) on a
100k-image identity gallery, against a brute-force numpy search in the same run, and how often
both agree on the top-1 image."""

from __future__ import annotations

import time

import numpy as np

from benchmarks.bench_index import embedding_like
from benchmarks.harness import Row
from eval.metrics.identity import IdentityGallery


def _numpy_topk(q: np.ndarray, g: np.ndarray, k: int) -> np.ndarray:
    out = []
    for lo in range(0, len(q), 256):
        s = q[lo:lo + 256] @ g.T
        part = np.argpartition(-s, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(s, part, 1), axis=1)
        out.append(np.take_along_axis(part, order, 1))
    return np.concatenate(out)


def run(quick: bool = False) -> list[Row]:
    n, nq, d, k = (20_000, 500, 256, 100) if quick else (100_000, 2000, 256, 100)
    g = embedding_like(n, d, seed=3)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    labels = (np.arange(n) // 5).astype(str)  # 5 images per identity
    q = g[: nq * 5 : 5] + 0.05 * np.random.default_rng(4).normal(size=(nq, d)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    t = time.perf_counter()
    gal = IdentityGallery(g, labels)
    build = time.perf_counter() - t
    t = time.perf_counter()
    pq = gal.per_query(q, labels[: nq * 5 : 5], k)
    t_faiss = time.perf_counter() - t
    t = time.perf_counter()
    top = _numpy_topk(q, g, k)
    t_np = time.perf_counter() - t
    agree = float((gal.index.search(q, 1).positions[:, 0] == top[:, 0]).mean())
    return [Row("identity", f"FPR gallery queries/s ({n // 1000}k images, {gal.index.kind}, top-{k}; "
                f"build {build:.1f}s; top-1 agrees with exact {agree:.1%}; r@1 {float((pq['rank'] <= 1).mean()):.3f})",
                nq / t_faiss, "q/s", "numpy brute force top-k", nq / t_np)]

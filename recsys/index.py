"""The faiss item index: exact below a size threshold, HNSW or IVF above it; string ids in and out.

Vectors are L2-normalised on the way in, so inner product is cosine similarity. Faiss sees int64
positions; the index keeps the string ids beside it and saves both (``index.faiss`` +
``ids.parquet`` + ``index.json``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import polars as pl


def _as_unit(x: np.ndarray, what: str) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim != 2:
        raise ValueError(f"{what} must be a 2-d array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{what} contain NaN or inf")
    n = np.linalg.norm(x, axis=1, keepdims=True)
    if (n < 1e-12).any():
        raise ValueError(f"{what} contain zero vectors")
    return x / n


@dataclass
class SearchResult:
    ids: np.ndarray     # (Q, k) string ids ('' where fewer than k items exist)
    scores: np.ndarray  # (Q, k) cosine similarities (-inf where missing)
    positions: np.ndarray  # (Q, k) int64 positions (-1 where missing)


class ItemIndex:
    def __init__(self, dim: int, kind: str = "flat", hnsw_m: int = 32, hnsw_ef_search: int = 128,
                 ivf_nlist: int = 1024, ivf_nprobe: int = 32):
        if kind not in ("flat", "hnsw", "ivf"):
            raise ValueError(f"index kind must be flat, hnsw or ivf, not {kind!r}")
        self.dim, self.kind = dim, kind
        self.params = {"hnsw_m": hnsw_m, "hnsw_ef_search": hnsw_ef_search, "ivf_nlist": ivf_nlist,
                       "ivf_nprobe": ivf_nprobe}
        if kind == "flat":
            self.index = faiss.IndexFlatIP(dim)
        elif kind == "hnsw":
            # on unit vectors L2 ranks exactly like inner product, and HNSW builds a far better
            # graph with it (scores are mapped back to cosine in search)
            self.index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_L2)
            self.index.hnsw.efSearch = hnsw_ef_search
            self.index.hnsw.efConstruction = max(40, hnsw_m * 2)
        else:
            quant = faiss.IndexFlatIP(dim)
            self.index = faiss.IndexIVFFlat(quant, dim, ivf_nlist, faiss.METRIC_INNER_PRODUCT)
            self.index.nprobe = ivf_nprobe
        self.ids: list[str] = []
        self._pos: dict[str, int] = {}

    @classmethod
    def build(cls, ids, vectors: np.ndarray, exact_below: int = 50_000, kind: str = "hnsw",
              **params) -> ItemIndex:
        """Pick exact search for small catalogs and ``kind`` past ``exact_below`` items."""
        vectors = np.asarray(vectors)
        use = "flat" if len(vectors) < exact_below else kind
        if use == "ivf":
            params["ivf_nlist"] = int(min(params.get("ivf_nlist", 1024), max(1, len(vectors) // 39)))
        idx = cls(vectors.shape[1], use, **params)
        idx.add(ids, vectors)
        return idx

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, ids, vectors: np.ndarray) -> None:
        """Incremental add; ids must be new (re-adding an id is an error, not a silent duplicate)."""
        ids = [str(i) for i in ids]
        x = _as_unit(vectors, "vectors")
        if x.shape[1] != self.dim:
            raise ValueError(f"vectors have dim {x.shape[1]}, the index has dim {self.dim}")
        if len(ids) != len(x):
            raise ValueError(f"{len(ids)} ids for {len(x)} vectors")
        dup = [i for i in ids if i in self._pos]
        if dup or len(set(ids)) != len(ids):
            raise ValueError(f"duplicate ids, e.g. {(dup or ids)[:3]}")
        if self.kind == "ivf" and not self.index.is_trained:
            sample = x if len(x) <= 200_000 else x[np.random.default_rng(0).choice(len(x), 200_000, replace=False)]
            self.index.train(sample)
        self.index.add(x)
        for i in ids:
            self._pos[i] = len(self.ids)
            self.ids.append(i)

    def position(self, item_id: str) -> int:
        try:
            return self._pos[item_id]
        except KeyError:
            raise KeyError(f"unknown item {item_id!r}") from None

    def search(self, queries: np.ndarray, k: int = 10) -> SearchResult:
        q = _as_unit(queries, "queries")
        if q.shape[1] != self.dim:
            raise ValueError(f"queries have dim {q.shape[1]}, the index has dim {self.dim}")
        if k < 1:
            raise ValueError("k must be >= 1")
        scores, pos = self.index.search(q, k)
        if self.kind == "hnsw":
            scores = 1.0 - scores / 2.0  # squared L2 between unit vectors -> cosine
        idarr = np.asarray([*self.ids, ""], dtype=object)
        ids = idarr[np.where(pos < 0, len(self.ids), pos)]
        return SearchResult(ids.astype(str), np.where(pos < 0, -np.inf, scores), pos)

    def recall_at_k(self, queries: np.ndarray, k: int = 10, exact: ItemIndex | None = None) -> float:
        """Share of the exact top-k that this index returns (1.0 for a flat index)."""
        if exact is None:
            exact = ItemIndex(self.dim, "flat")
            exact.index.add(self.index.reconstruct_n(0, len(self)) if self.kind != "ivf"
                            else _ivf_vectors(self.index))
            exact.ids = self.ids
        got = self.search(queries, k).positions
        want = exact.search(queries, k).positions
        hits = sum(len(set(g[g >= 0]) & set(w[w >= 0])) for g, w in zip(got, want, strict=True))
        return hits / max(1, (want >= 0).sum())

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(path / "index.faiss"))
        pl.DataFrame({"item_id": self.ids}).write_parquet(path / "ids.parquet")
        (path / "index.json").write_text(json.dumps({"dim": self.dim, "kind": self.kind, **self.params,
                                                     "n": len(self), "saved": time.time()}))
        return path

    @classmethod
    def load(cls, path: str | Path) -> ItemIndex:
        path = Path(path)
        meta = json.loads((path / "index.json").read_text())
        obj = cls.__new__(cls)
        obj.dim, obj.kind = meta["dim"], meta["kind"]
        obj.params = {k: meta[k] for k in ("hnsw_m", "hnsw_ef_search", "ivf_nlist", "ivf_nprobe")}
        obj.index = faiss.read_index(str(path / "index.faiss"))
        if obj.kind == "hnsw":
            obj.index.hnsw.efSearch = obj.params["hnsw_ef_search"]
        elif obj.kind == "ivf":
            obj.index.nprobe = obj.params["ivf_nprobe"]
        obj.ids = pl.read_parquet(path / "ids.parquet")["item_id"].to_list()
        obj._pos = {k: i for i, k in enumerate(obj.ids)}
        if obj.index.ntotal != len(obj.ids):
            raise ValueError(f"{path}: index holds {obj.index.ntotal} vectors but {len(obj.ids)} ids")
        return obj


def _ivf_vectors(index) -> np.ndarray:
    """Vectors of an IVF-Flat index in insertion order (for an exact reference search)."""
    inv = index.invlists
    out = np.zeros((index.ntotal, index.d), np.float32)
    for lst in range(index.nlist):
        n = inv.list_size(lst)
        if not n:
            continue
        ids = faiss.rev_swig_ptr(inv.get_ids(lst), n).copy()
        codes = faiss.rev_swig_ptr(inv.get_codes(lst), n * index.d * 4).copy()
        out[ids] = codes.view(np.float32).reshape(n, index.d)
    return out

"""Identity-ranking metrics: Finer-Personalization Rank (seed paper 000) and NearID's Sample
Success Rate (seed paper 003), each a torchmetrics ``Metric`` with a functional twin.

Ties are always broken *against* the model (a negative scoring the same as a positive ranks
first), so a constant or collapsed encoder gets no credit from ties.
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics import Metric

from eval.metrics._inputs import unit_rows


def _codes(labels, vocab: dict) -> torch.Tensor:
    return torch.tensor([vocab.setdefault(str(v), len(vocab)) for v in labels], dtype=torch.long)


def _fpr_per_query(q: torch.Tensor, q_lab: torch.Tensor, g: torch.Tensor, g_lab: torch.Tensor,
                   chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per query: average precision, rank of the first correct gallery item (1-based; G + 1 when
    the identity is absent from the gallery) and the number of correct items."""
    aps, ranks, npos = [], [], []
    for lo in range(0, len(q), chunk):
        s = q[lo:lo + chunk] @ g.T                                   # (B, G)
        pos = q_lab[lo:lo + chunk, None] == g_lab[None, :]           # (B, G)
        # sort by score desc; among equal scores, negatives first (pessimistic ties)
        neg_first = torch.argsort(pos.float(), dim=-1, stable=True)   # negatives before positives
        s_sorted = torch.gather(s, 1, neg_first)
        order = torch.gather(neg_first, 1, torch.argsort(-s_sorted, dim=-1, stable=True))
        hits = torch.gather(pos, 1, order).float()                   # (B, G) in ranked order
        cum = hits.cumsum(-1)
        n = hits.sum(-1)
        prec = cum / torch.arange(1, hits.shape[1] + 1)
        aps.append(torch.where(n > 0, (prec * hits).sum(-1) / n.clamp_min(1), torch.zeros_like(n)))
        first = torch.where(n > 0, hits.argmax(-1) + 1, torch.full_like(n, hits.shape[1] + 1, dtype=torch.long))
        ranks.append(first.float())
        npos.append(n)
    return torch.cat(aps), torch.cat(ranks), torch.cat(npos)


def finer_personalization_rank(query: torch.Tensor, query_labels, gallery: torch.Tensor, gallery_labels
                               ) -> dict[str, float]:
    """Each generated image (``query``) retrieves from an identity-labelled gallery of real images
    (including near-identity distractors); returns ``map``, ``r@1``, ``r@5`` and ``mean_rank`` of
    the query's true identity. Embeddings are compared by cosine."""
    m = FinerPersonalizationRank(gallery, gallery_labels)
    m.update(query, query_labels)
    return {k: float(v) for k, v in m.compute().items()}


class FinerPersonalizationRank(Metric):
    """Gallery fixed at construction; ``update(query_embeddings, query_identity_labels)``."""

    higher_is_better = True
    is_differentiable = False
    full_state_update = False

    def __init__(self, gallery: torch.Tensor, gallery_labels, **kwargs):
        super().__init__(**kwargs)
        self.gallery = unit_rows(gallery, "gallery embeddings", ndim=2)
        if len(gallery_labels) != len(self.gallery):
            raise ValueError(f"{len(gallery_labels)} gallery labels for {len(self.gallery)} gallery embeddings")
        if len(self.gallery) == 0:
            raise ValueError("the gallery is empty")
        self._vocab: dict = {}
        self.gallery_codes = _codes(gallery_labels, self._vocab)
        self.add_state("ap", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("hit1", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("hit5", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("rank", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("n", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, query: torch.Tensor, query_labels) -> None:
        q = unit_rows(query, "query embeddings", ndim=2)
        if q.shape[1] != self.gallery.shape[1]:
            raise ValueError(f"query dim {q.shape[1]} != gallery dim {self.gallery.shape[1]}")
        if len(query_labels) != len(q):
            raise ValueError(f"{len(query_labels)} query labels for {len(q)} queries")
        ap, rank, _ = _fpr_per_query(q, _codes(query_labels, self._vocab), self.gallery, self.gallery_codes)
        self.ap += ap.sum()
        self.hit1 += (rank <= 1).float().sum()
        self.hit5 += (rank <= 5).float().sum()
        self.rank += rank.sum()
        self.n += len(q)

    def compute(self) -> dict[str, torch.Tensor]:
        n = self.n.clamp_min(1)
        return {"map": self.ap / n, "r@1": self.hit1 / n, "r@5": self.hit5 / n, "mean_rank": self.rank / n}


def sample_success_rate(anchor: torch.Tensor, positive: torch.Tensor, distractors: torch.Tensor,
                        margin: float = 0.0, distractor_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Share of anchors whose positive (same identity, another view) beats *every* near-identity
    distractor by more than ``margin`` in cosine similarity. ``distractors`` is (N, K, D)."""
    m = SampleSuccessRate(margin)
    m.update(anchor, positive, distractors, distractor_mask)
    return m.compute()


class SampleSuccessRate(Metric):
    higher_is_better = True
    is_differentiable = False
    full_state_update = False

    def __init__(self, margin: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.margin = margin
        self.add_state("success", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, anchor: torch.Tensor, positive: torch.Tensor, distractors: torch.Tensor,
               distractor_mask: torch.Tensor | None = None) -> None:
        a, p = unit_rows(anchor, "anchors", ndim=2), unit_rows(positive, "positives", ndim=2)
        d = torch.as_tensor(distractors, dtype=torch.float32)
        if d.ndim != 3 or d.shape[0] != len(a) or d.shape[2] != a.shape[1] or p.shape != a.shape:
            raise ValueError(f"expected anchors/positives (N, D) and distractors (N, K, D); got {tuple(a.shape)}, "
                             f"{tuple(p.shape)}, {tuple(d.shape)}")
        if not torch.isfinite(d).all():
            raise ValueError("distractors contain NaN or inf")
        d = torch.nn.functional.normalize(d, dim=-1)
        mask = torch.ones(d.shape[:2], dtype=torch.bool) if distractor_mask is None else distractor_mask.bool()
        s_pos = (a * p).sum(-1)
        s_neg = torch.einsum("nd,nkd->nk", a, d).masked_fill(~mask, -float("inf")).amax(-1)
        self.success += (s_pos - s_neg > self.margin).float().sum()
        self.total += len(a)

    def compute(self) -> torch.Tensor:
        return self.success / self.total.clamp_min(1)


class IdentityGallery:
    """Finer-Personalization Rank at scale: the gallery lives in a faiss index
    (:class:`recsys.index.ItemIndex`: exact below ``exact_below`` images, HNSW above) and each
    query reads only its top ``k``. Metrics are then the top-k versions: AP@k (positives found in
    the top k, normalised by ``min(#positives, k)``), R@1, R@5, and the rank of the first correct
    image capped at ``k + 1``. With ``k`` >= the gallery size and an exact index they equal
    :func:`finer_personalization_rank` up to tie order (faiss does not break ties pessimistically).
    """

    def __init__(self, embeddings, labels, categories=None, exact_below: int = 50_000, kind: str = "hnsw", **params):
        from recsys.index import ItemIndex

        emb = np.asarray(embeddings, dtype=np.float32)
        if len(labels) != len(emb):
            raise ValueError(f"{len(labels)} gallery labels for {len(emb)} gallery embeddings")
        if len(emb) == 0:
            raise ValueError("the gallery is empty")
        self.labels = np.asarray([str(v) for v in labels])
        self.categories = None if categories is None else np.asarray([str(c) for c in categories])
        self.index = ItemIndex.build(np.arange(len(emb)).astype(str), emb, exact_below=exact_below, kind=kind,
                                     **params)
        uniq, counts = np.unique(self.labels, return_counts=True)
        self._count = dict(zip(uniq.tolist(), counts.tolist(), strict=True))

    def __len__(self) -> int:
        return len(self.labels)

    def per_query(self, query, query_labels, k: int = 100) -> dict:
        k = min(k, len(self))
        res = self.index.search(np.asarray(query, dtype=np.float32), k)
        ql = np.asarray([str(v) for v in query_labels])
        if len(ql) != len(res.positions):
            raise ValueError(f"{len(ql)} query labels for {len(res.positions)} queries")
        hits = (self.labels[np.maximum(res.positions, 0)] == ql[:, None]) & (res.positions >= 0)
        npos = np.asarray([self._count.get(v, 0) for v in ql])
        prec = hits.cumsum(1) / np.arange(1, k + 1)
        ap = np.where(npos > 0, (prec * hits).sum(1) / np.maximum(np.minimum(npos, k), 1), 0.0)
        rank = np.where(hits.any(1), hits.argmax(1) + 1, k + 1)
        return {"ap": ap, "rank": rank, "found": hits.any(1), "k": k}

    def evaluate(self, query, query_labels, query_categories=None, k: int = 100) -> dict:
        """``map@k``, ``r@1``, ``r@5``, ``mean_rank@k`` overall and per query category."""
        pq = self.per_query(query, query_labels, k)
        kk = pq["k"]

        def summary(m) -> dict[str, float]:
            return {f"map@{kk}": float(pq["ap"][m].mean()), "r@1": float((pq["rank"][m] <= 1).mean()),
                    "r@5": float((pq["rank"][m] <= 5).mean()), f"mean_rank@{kk}": float(pq["rank"][m].mean()),
                    "queries": int(m.sum())}

        out = summary(np.ones(len(pq["ap"]), dtype=bool))
        if query_categories is not None:
            cats = np.asarray([str(c) for c in query_categories])
            out["per_category"] = {c: summary(cats == c) for c in sorted(set(cats.tolist()))}
        return out


def ssr_rows(head, tokens: list[torch.Tensor], levels: tuple[str, ...], triplets: dict[str, np.ndarray]) -> list[dict]:
    """Sample Success Rate of the backbone alone (pooled head features, pooled every level) and of
    NearID (backbone + ``head``) on ``triplets``, overall and per changed part."""
    from ragar.encoders.nearid import embed_tokens

    unit = torch.nn.functional.normalize
    spaces = {}
    if "head" in levels:
        spaces["backbone (pooled features)"] = tokens[levels.index("head")].float().mean(1)
    spaces["backbone (pooled, every level)"] = torch.cat([unit(x.float().mean(1), dim=-1) for x in tokens], 1)
    spaces["NearID (backbone + head)"] = embed_tokens(head, tokens)
    trip = triplets
    rows = []
    for name, emb in spaces.items():
        a, p, d = emb[trip["anchor"]], emb[trip["positive"]], emb[trip["distractor"]][:, None]
        row = {"encoder": name, "ssr": float(sample_success_rate(a, p, d))}
        for part in sorted(set(trip["part"].tolist())):
            m = torch.from_numpy(trip["part"] == part)
            row[f"ssr[{part}]"] = float(sample_success_rate(a[m], p[m], d[m]))
        rows.append(row)
    return rows
